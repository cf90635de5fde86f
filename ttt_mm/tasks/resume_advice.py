"""How a stopped training run goes on: the command that resumes it (with the overrides that trained
it, also where a checkpoint was given to a run configured otherwise), and, for a run stopped by an
error, what is known of a data loader worker that died (PyTorch names no file; the worker's reading
note does, and a decoder crash on that file puts it in the skip list, so that a resumed run passes
over it)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from ttt_mm.callbacks import last_checkpoint
from ttt_mm.data import reading_notes
from ttt_mm.data.decode.isolation import CRASH_SIGNALS, crash_reason
from ttt_mm.data.restarts import RAISED_IN_WORKER
from ttt_mm.data.skiplist import SkipList
from ttt_mm.tasks.command_lines import config_flags, shell_override
from ttt_mm.tasks.common import ConfigError, in_a_sweep
from ttt_mm.tasks.overrides import as_typed, override_key
from ttt_mm.tasks.run_folders import run_of_checkpoint, run_record
from ttt_mm.tasks.sweep_report import RUN_LENGTH, into_sweep_job

WORKER_DIED = "a data loader worker died"


def where_to_resume(cfg: DictConfig, exc: BaseException) -> str | None:
    """The line that ends a run stopped by an error: what is known of a data loader worker that died
    (PyTorch then raises from its queue, naming no file: `_dead_worker`), and the checkpoint to
    resume from."""
    folder = OmegaConf.select(cfg, "callbacks.last_checkpoint.dirpath")  # (none: no last.ckpt is written)
    last = Path(folder) / last_checkpoint.FILE_NAME if folder else None
    saved = last is not None and last.is_file()
    chain = [exc]  # (PyTorch's own error, with what it caught behind it)
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 10:
        chain.append(cause)
    died = any(
        isinstance(e, (ConnectionResetError, EOFError))
        or ("DataLoader worker" in str(e) and not RAISED_IN_WORKER.search(str(e)))
        for e in chain
    )
    if not (died or saved):
        return None
    line = "training stopped by the error above"
    if died:
        line += f" ({_dead_worker(cfg, ' '.join(map(str, chain)))})"
    return line + (f"; resume with {resume_this_run(last)}" if saved else "")


def trained_overrides(ckpt: str | os.PathLike) -> list[str] | None:
    """The command-line overrides of the run that saved ``ckpt``, where it still sits in that run's folder
    (`run_of_checkpoint`: its ``.hydra/overrides.yaml``); None where they cannot be read."""
    overrides = run_record(ckpt, "overrides.yaml")
    return as_typed(overrides) if isinstance(overrides, ListConfig) else None


def _trained_config_flags(ckpt: str | os.PathLike) -> list[str]:
    """`config_flags` of the run that saved ``ckpt``, from its ``.hydra/hydra.yaml`` (none where it cannot be read)."""
    record = run_record(ckpt, "hydra.yaml")
    return config_flags(record.hydra) if isinstance(record, DictConfig) and "hydra" in record else []


def checkpoint_does_not_fit(ckpt_path: str, why: str, test_only: bool) -> ConfigError:
    """The error for a checkpoint that this run's model cannot take (``why``), with the command that
    resumes it, or tests it alone (``test_only``), as it was trained (`with_its_overrides`)."""
    what = "be tested with this config" if test_only else "resume this run"
    advice = with_its_overrides(ckpt_path, this_runs_overrides(), test_only=test_only)
    return ConfigError(f"ckpt_path={ckpt_path} cannot {what} ({why}); {advice}")


def with_its_overrides(ckpt: str | os.PathLike, now: list[str] | None, test_only: bool) -> str:
    """What to do with a checkpoint that does not fit this run's model: resume it, or test it alone
    (``test_only``), with the overrides that trained it; as a command where they are known and differ
    from this run's (``now``; None: not known)."""
    how = "test it" if test_only else "resume"
    trained = trained_overrides(ckpt)
    if trained is None:
        return f"{how} with the overrides that trained it (its run directory's .hydra/overrides.yaml)"
    settings = _settings(trained)
    if now is not None and sorted(_model_and_data(settings)) == sorted(_model_and_data(_settings(now))):
        return "the overrides that trained it are this run's: it is damaged, or from another version of ttt-mm"
    # a resume may run longer than the run did (a new lr schedule): this run's length is kept, else the last
    # resume's (the run's own would be refused for a checkpoint saved past it)
    length = [] if test_only else [o for o in now or () if override_key(o) in RUN_LENGTH] or _resumed_length(ckpt)
    settings = (_model_and_data(settings) if length else settings) + length
    # whether a resume tests at its end: as this command asks, else as the run did
    tests = [o for o in now or () if override_key(o) == "test"] or [o for o in trained if override_key(o) == "test"]
    extra = ["train=false", "test=true"] if test_only else tests
    command = resume_command(ckpt, [*settings, *extra], sys.argv[0], flags=_trained_config_flags(ckpt))
    return f"{how} with the overrides that trained it: {command}"


def _resumed_length(ckpt: str | os.PathLike) -> list[str]:
    """How long the newest resume of the checkpoint's run that set it trained (`RUN_LENGTH` overrides of
    its ``.hydra/resumed-<stamp>`` record, `config_subdir_of`); none where no resume set it."""
    run = run_of_checkpoint(os.fspath(ckpt))
    for resumed in sorted(run.glob(".hydra/resumed-*"), reverse=True) if run is not None else ():
        overrides = run_record(ckpt, f"{resumed.name}/overrides.yaml")
        if isinstance(overrides, ListConfig) and (
            length := [o for o in as_typed(overrides) if override_key(o) in RUN_LENGTH]
        ):
            return length
    return []


def _model_and_data(overrides: list[str]) -> list[str]:
    """The overrides that set up a run's model and data (`_settings`), its length aside."""
    return [o for o in overrides if override_key(o) not in RUN_LENGTH]


def this_runs_overrides() -> list[str] | None:
    """This run's command-line overrides (None where it was not started by a Hydra command)."""
    return as_typed(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def _settings(overrides: list[str]) -> list[str]:
    """The overrides that set up a run's model and data: all but which checkpoint, and whether to train or test."""
    return [o for o in overrides if override_key(o) not in ("ckpt_path", "train", "test")]


def resume_this_run(last: str | os.PathLike | None, sweep_job: tuple[os.PathLike, str] | None = None) -> str:
    """The command that resumes this run from ``last`` (`resume_command`; None: that runs it again from
    its start); ``ckpt_path=<last>`` alone where the run was not started by a Hydra command. Outside a
    sweep, ``sweep_job`` (a sweep's folder and job: `sweep_job_of`) resumes it as that job."""
    if not HydraConfig.initialized():
        return f"ckpt_path={last}"
    hydra = HydraConfig.get()
    job = (hydra.sweep.dir, hydra.sweep.subdir) if in_a_sweep() else sweep_job
    return resume_command(last, as_typed(hydra.overrides.task), sys.argv[0], job, config_flags(hydra))


def rerun_this_job() -> str | None:
    """The command that runs this sweep's job again from its start, into its folder (None: not a sweep)."""
    return resume_this_run(None) if in_a_sweep() else None


def resume_command(
    last: str | os.PathLike | None,
    overrides: list[str],
    script: str,
    sweep_job: tuple[str, str] | None = None,
    flags: Sequence[str] = (),
) -> str:
    """``python train.py <the run's overrides> ckpt_path=<last>``, quoted for a shell: a run resumes only
    with the settings that trained it (``ckpt_path=`` alone failed on any run with overrides), and from
    its configs (``flags``: `config_flags`, such as the user's ``--config-dir``). A sweep's job
    (``sweep_job``: the sweep's folder and the job's) resumes as a sweep of one into its folder, so that
    its results join the sweep's ``results.csv`` from whichever folder it is run in. ``last`` None: the
    command that runs it again from its start."""
    kept = [o for o in overrides if override_key(o) != "ckpt_path"]
    path = Path(script)  # (the module run with -m is ttt_mm/tasks/train.py; a clone may sit in a folder named ttt_mm)
    module = path.parts[-3:] == ("ttt_mm", "tasks", "train.py")
    command = (
        f"python {shlex.quote(script)}" if path.name == "train.py" and not module else "python -m ttt_mm.tasks.train"
    )
    said = [*flags, *map(shlex.quote, kept)]
    if sweep_job is not None:
        command += " -m"
        said.append(into_sweep_job(*sweep_job))
    return " ".join([command, *said, *([shell_override("ckpt_path", str(last))] if last is not None else [])])


def _dead_worker(cfg: DictConfig, error: str) -> str:
    """What is known of a data loader worker that died, from PyTorch's ``error`` text: the file it was
    reading (`reading_notes`), which a decoder that crashed on it (`CRASH_SIGNALS`) puts in the skip
    list, so that a resumed run passes over it instead of crashing on it again; else what likely
    killed it."""
    how = _SIGNALS.get(m[1].strip()) if (m := re.search(r"killed by signal: ([^.]+)", error)) else None
    pids = re.search(r"\(pid(?:\(s\))? ([\d, ]+)\)", error)
    workers = [int(p) for p in pids[1].split(",")] if pids else [None]  # (None: the one note left, if any)
    name = next((n for w in workers if (n := reading_notes.left_by(w))), None)
    path = OmegaConf.select(cfg, "data.skip_list")
    memory = "killed for memory? fewer data.num_workers or shorter windows use less"
    for_memory = how in (None, "SIGKILL")  # (what the kernel's out-of-memory killer sends)
    if name is None:
        return f"{WORKER_DIED}: {memory if for_memory else how}"
    if how in CRASH_SIGNALS and path:
        SkipList(path).add(name, crash_reason(how))
        return (
            f"{WORKER_DIED} reading {name}, decoder crashed: {how}: listed in {path}, so a resumed run passes over it"
        )
    listing = (
        f"; if a resumed run dies on it again, list it in {path} (a line: the path, a tab, a reason)" if path else ""
    )
    killed = f"{how or 'how is not known'}: {memory if for_memory else 'not a crash'}"
    return f"{WORKER_DIED} reading {name} ({killed}){listing}"


_SIGNALS = {signal.strsignal(s): s.name for s in signal.Signals if signal.strsignal(s)}
"""Signal names by the description PyTorch reports a dead worker with ("Segmentation fault": SIGSEGV)."""
