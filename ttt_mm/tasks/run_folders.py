"""A run's folder: where a resume continues (the checkpoint's run) and where its config record goes
(`run_dir_of`, `config_subdir_of`: config resolvers), what the run trained on, and removing what a
refused command left behind (a stamped folder holding only Hydra's record, a resume's record)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from ttt_mm.data.sources import SyntheticSource
from ttt_mm.tasks.config_errors import ConfigError, quote_it
from ttt_mm.tasks.job_logs import log_files
from ttt_mm.tasks.overrides import as_typed, given_keys, override_key


def run_of_checkpoint(ckpt_path: str | None) -> Path | None:
    """The run a checkpoint belongs to: ``<run>`` for ``<run>/checkpoints/<name>.ckpt`` of a run
    directory (one with ``.hydra/config.yaml``); None for no checkpoint or one kept anywhere else (a
    resume from it starts a run directory of its own)."""
    if not ckpt_path:
        return None
    folder = Path(ckpt_path).resolve().parent
    run = folder.parent
    return run if folder.name == "checkpoints" and (run / ".hydra" / "config.yaml").is_file() else None


def later_last_checkpoint(ckpt_path: str, step: int, saves_to: str | None) -> tuple[Path, int] | None:
    """The ``last.ckpt`` that a resume from a checkpoint of an earlier ``step`` of its run (a ``step<n>.ckpt``
    beside it) replaces with its saves (into ``saves_to``: the run's last checkpoint's folder, None where
    it saves none), with its step. None where there is none, it is the checkpoint resumed, the resume
    saves elsewhere, or its step cannot be read or is not later."""
    run = run_of_checkpoint(ckpt_path)
    last = None if run is None else run / "checkpoints" / "last.ckpt"
    if last is None or not last.is_file() or last.resolve() == Path(ckpt_path).resolve():
        return None
    if saves_to is None or Path(saves_to).resolve() != last.parent.resolve():
        return None
    try:  # (its step alone, memory-mapped: `read_checkpoint` would read every byte for its checksums)
        saved = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    except Exception:  # (damaged, or another file: nothing said of it here)
        return None
    return (last, saved) if isinstance(saved, int) and saved > step else None


def earlier_checkpoints(folder: str | None) -> list[Path]:
    """The checkpoints (``*.ckpt``) already in a new run's checkpoint folder: a run (a sweep's job run
    again under its number, a ``hydra.run.dir`` used twice) writes over them with its own."""
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(p for p in Path(folder).iterdir() if p.suffix == ".ckpt" and p.is_file())


def later_step_checkpoints(ckpt_path: str, step: int) -> list[Path]:
    """The ``step<n>.ckpt`` files (the best checkpoints' names, ``callbacks.model_checkpoint.filename``)
    of a checkpoint's run saved after ``step``: a resume from an earlier one goes another way, and its
    ranking of the best knows nothing of them, so they stay on disk, never replaced nor named."""
    run = run_of_checkpoint(ckpt_path)
    folder = None if run is None else run / "checkpoints"
    if folder is None or not folder.is_dir():
        return []
    later = [(int(m[1]), p) for p in folder.iterdir() if (m := re.fullmatch(r"step(\d+)(?:-v\d+)?\.ckpt", p.name))]
    return [p for n, p in sorted(later) if n > step and p.resolve() != Path(ckpt_path).resolve()]


SYNTHETIC_SOURCE = f"{SyntheticSource.__module__}.{SyntheticSource.__qualname__}"
"""The data source of ``data=synthetic``, the embedded default: clips generated on the fly."""


def training_run_folder(folder: Path) -> bool:
    """Whether ``folder`` is a training run's: its ``.hydra`` record has a trainer."""
    try:
        record = OmegaConf.load(folder / ".hydra" / "config.yaml")
    except Exception:  # (none, or a damaged one: not a run's record to go by)
        return False
    return _recorded(record, "trainer") is not None


class FolderRefused(ConfigError):
    """A folder a command must not write to (`results_dir`), or a path key given no path
    (`path_given`), said as the command's error (before Hydra makes a folder from it)."""


def path_given(value, key: str) -> str | None:
    """A path key's value (``output``, ``ckpt_path``): None, or a path. A number or a list is refused:
    Hydra reads ``output=2024`` as a number, which the path code failed on with a traceback."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return None if value is None else os.fspath(value)
    shown = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    hint = quote_it(key, "path") if number else ""
    raise FolderRefused(f"{key} must be a path; got {shown!r}{hint}")


def results_dir(output: str | None, default: str) -> str:
    """``${results_dir:${output},<folder>}``, the run folder of a command that writes its results to
    ``output`` (evaluate, linear_probe): ``output``, or ``default`` where it is null. A training run's
    folder is refused before Hydra writes there: its record of the command would replace the run's, which
    a resume and evaluate read (and evaluate's skip list the run's)."""
    if path_given(output, "output") is None:
        return default
    if training_run_folder(Path(output)):
        raise FolderRefused(
            f"output={output} is a training run's folder: this command's record (.hydra) and files would "
            f"replace the run's own, which a resume reads; give another folder (e.g. output={Path(output) / 'eval'})"
        )
    return output


def run_record(ckpt_path: str | os.PathLike, name: str) -> DictConfig | ListConfig | None:
    """The file ``name`` (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``) of the ``.hydra`` record of
    the run that saved a checkpoint; None for a checkpoint kept outside its run folder, or a file that is
    missing or not one Hydra wrote (a hand-edited or damaged record: nothing to say from it)."""
    run = run_of_checkpoint(os.fspath(ckpt_path))
    if run is None:
        return None
    try:
        return OmegaConf.load(run / ".hydra" / name)
    except Exception:  # (OSError, or whatever a YAML parser raises on a damaged file)
        return None


def trained_on_files(ckpt_path: str) -> dict[str, str] | None:
    """How the run that saved a checkpoint chose its data, if that was files rather than synthetic clips:
    ``{"data": <its data group>, "data.root": <its root>}`` from its ``.hydra`` record, the overrides
    that give evaluate the same (a relative root made absolute from the folder the run started in). None
    for synthetic clips, a checkpoint kept outside its run folder, or a record that cannot be read."""
    data = _recorded(run_record(ckpt_path, "config.yaml"), "data")
    source = _recorded(data, "source._target_")
    if source in (None, SYNTHETIC_SOURCE):
        return None
    hydra = run_record(ckpt_path, "hydra.yaml")
    group, started_in = _recorded(hydra, "hydra.runtime.choices.data"), _cwd(hydra)
    root = _recorded(data, "root")
    if isinstance(root, str) and started_in is not None:
        root = os.path.join(started_in, root)  # (as it is where it is absolute)
    found = (("data", group), ("data.root", root))
    return {key: value for key, value in found if isinstance(value, str)}


def run_started_in(ckpt_path: str | os.PathLike) -> str | None:
    """The folder the run that saved a checkpoint was started in (its ``.hydra`` record's ``cwd``): what
    the relative paths it read and recorded are relative to. None for a checkpoint kept outside its run
    folder, or a record that cannot be read."""
    return _cwd(run_record(ckpt_path, "hydra.yaml"))


def _cwd(hydra_record) -> str | None:
    """The folder a run was started in, from its ``hydra.yaml`` record (None: not recorded, or unreadable)."""
    cwd = _recorded(hydra_record, "hydra.runtime.cwd")
    return cwd if isinstance(cwd, str) else None


def _recorded(record, key: str):
    """``key`` of a run's record as it reads; None where the record is none, or the value is missing or
    cannot be resolved here (``${oc.env:DATA}`` of a variable not set now, a key of another config)."""
    if not isinstance(record, DictConfig):
        return None
    return OmegaConf.select(record, key, default=None, throw_on_resolution_failure=False)


def run_dir_of(ckpt_path: str | None, default: str) -> str:
    """Resuming from ``<run>/checkpoints/<name>.ckpt`` continues in ``<run>``; otherwise ``default``."""
    run = run_of_checkpoint(path_given(ckpt_path, "ckpt_path"))
    return default if run is None else str(run)


def config_subdir_of(ckpt_path: str | None, stamp: str, output_dir: str, train: bool = True) -> str:
    """Where Hydra records a run's config in its directory ``output_dir``: ``.hydra`` for a new run, and
    ``.hydra/resumed-<stamp>`` for a resume in the checkpoint's run (``tested-<stamp>`` for a test-only
    run of its checkpoint; a sweep's job resumed into its folder too), so that neither a resume nor a
    failed attempt overwrites the record of how the run was trained."""
    run = run_of_checkpoint(path_given(ckpt_path, "ckpt_path"))
    in_place = run is not None and os.path.realpath(output_dir) == os.path.realpath(run)
    return f".hydra/{'resumed' if train else 'tested'}-{stamp}" if in_place else ".hydra"


_HYDRA_RECORD = {"config.yaml", "hydra.yaml", "overrides.yaml"}
"""What Hydra writes to a run's ``.hydra`` before the command starts."""


RUN_STAMP = "%Y-%m-%d_%H-%M-%S-%f"
"""How a run directory's name is stamped: every ``${now:...}`` in ``conf`` writes this (a test holds them to it)."""
_STAMPED = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}")
"""A name `RUN_STAMP` writes: what a refused run may delete as its own folder (`stamped_by_hydra`)."""


def stamped_by_hydra(folder: Path) -> bool:
    """Whether ``folder`` is one Hydra made for a run under the default names of
    ``conf/hydra/default.yaml``: what a refused command may remove, never a folder the user named."""
    return folder.parent.name == "runs" and _STAMPED.fullmatch(folder.name) is not None


def stamped_run_folder() -> Path | None:
    """This command's run folder where Hydra named it by the process's start time (`stamped_by_hydra`:
    no ``hydra.run.dir`` or ``output`` given), else None."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    given = given_keys() | {override_key(o) for o in as_typed(hydra.overrides.hydra)}
    folder = Path(hydra.runtime.output_dir)
    return None if given & {"hydra.run.dir", "output"} or not stamped_by_hydra(folder) else folder


def forget_refused_run() -> None:
    """Removes the run directory of a command refused before it began, where Hydra stamped it
    (``<log_dir>/<task>/runs/<date>``, the default: no ``hydra.run.dir`` or ``output`` given) and it
    holds only Hydra's config record and the log: the error was printed, and an empty folder among the
    runs would pass for a run. Any other folder (the working directory embed runs in, a resume in
    place, one the user named) is left as it is."""
    folder = stamped_run_folder()
    record = None if folder is None else folder / ".hydra"
    if record is None or not (record / "config.yaml").is_file():
        return
    logs = {Path(h.baseFilename).resolve() for h in log_files()}
    if all(p == record or p.resolve() in logs for p in folder.iterdir()) and all(
        p.name in _HYDRA_RECORD for p in record.iterdir()
    ):
        shutil.rmtree(folder, ignore_errors=True)


def forget_refused_resume() -> None:
    """Removes the config record (`config_subdir_of`) of a resume in place that a config check refused
    before it trained: the run folder would list a resume that never ran (its log keeps the error)."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    subdir = hydra.output_subdir
    if subdir and Path(subdir).name.startswith(("resumed-", "tested-")):
        shutil.rmtree(Path(hydra.runtime.output_dir) / subdir, ignore_errors=True)
