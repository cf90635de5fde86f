"""What every entry point shares: the config folder, the config error and how a command ends on one,
the readers of common command keys (``extensions``, counts such as ``max_files``, an ``output``
folder), and the config's resolvers (registered on import, so anything that composes ``conf/``
imports this module first)."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import shlex
import shutil
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from difflib import get_close_matches
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from ttt_mm.data.index import IndexCacheError
from ttt_mm.data.sources import MEDIA_EXTENSIONS, SyntheticSource
from ttt_mm.processes.environment import environment

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def module_logger(name: str, spec) -> logging.Logger:
    """A module's logger under its import name (``ttt_mm.tasks.embed``), also when it runs as
    ``python -m``, where ``__name__`` is ``__main__``: call with ``__name__, __spec__``."""
    return logging.getLogger(spec.name if spec is not None else name)


class ConfigError(ValueError):
    """A config value that cannot work; the message says which key and why."""


def config_error_message(err: BaseException, settings: dict | None = None) -> str:
    """The root cause of a (nested) instantiation error and the config key it came from, on one line:
    the node of ``settings`` (the command's config as given: plain containers, interpolations
    unresolved) whose constructor raised it where one can tell (``tokenizer``,
    ``model.backbone.mixer``), else the top-level node Hydra was building (``model``). A check that
    names one argument of that node (``n_mels must be positive``) names its key instead
    (``tokenizer.audio.n_mels must ...``), or the key it is taken from (``${model.backbone.dim}``)."""
    key = next((line.split(":", 1)[1].strip() for line in str(err).splitlines() if line.startswith("full_key:")), None)
    while err.__cause__ is not None:
        err = err.__cause__
    text = " | ".join(line for line in str(err).strip().splitlines() if line)
    raised_in = _raising_node(err, settings)
    if raised_in is not None:
        key, node = raised_in
        name, _, rest = text.partition(" ")
        if name in node and rest.startswith("must "):
            source = re.fullmatch(r"\$\{([\w.]+)\}", str(node[name]))
            return f"{source.group(1) if source else f'{key}.{name}'} {rest}"
    where = f" (config key '{key}')" if key else ""
    if key == "trainer" and "No supported gpu backend" in text:  # Lightning's words for a machine without one
        text += (
            " No GPU that torch can use here: run on the CPU (trainer=cpu, the default; trainer=ddp takes"
            " trainer.accelerator=cpu trainer.precision=32-true: its bf16 autocast is for GPUs)"
        )
    if key and text.startswith(key + "."):  # a check that names its own key (data.fps must be ...)
        return text
    return (
        f"{text}{where}"
        if isinstance(err, (ConfigError, IndexCacheError, InstantiationException))
        else f"{type(err).__name__}: {text}{where}"
    )


def _raising_node(err: BaseException, settings: dict | None) -> tuple[str, dict] | None:
    """The key and (unresolved) settings of the config node whose class's constructor raised ``err``:
    the innermost constructor on its traceback whose class one node's ``_target_`` names. Nodes built
    by another one (the model builds the tokenizer and the backbone, the backbone each block's mixer)
    are found too."""
    if settings is None:
        return None
    nodes: dict[type, list[tuple[str, dict]]] = {}
    for key, node in _targets(settings):
        module, _, name = node["_target_"].rpartition(".")
        owner = getattr(sys.modules.get(module), name, None)  # (a module not imported built nothing)
        if isinstance(owner, type):
            nodes.setdefault(owner, []).append((key, node))
    for frame, _ in reversed(list(traceback.walk_tb(err.__traceback__))):
        found = nodes.get(type(frame.f_locals.get("self"))) if frame.f_code.co_name == "__init__" else None
        if found:
            return found[0] if len(found) == 1 else None  # (two nodes of one class: cannot tell which)
    return None


def _targets(node, key: str = "") -> Iterator[tuple[str, dict]]:
    """(key, node) of every node that names a ``_target_``, in a config as plain containers."""
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield key, node
        for name, child in node.items():
            yield from _targets(child, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _targets(child, f"{key}.{i}")


def _log_files() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def lightning_logs_to_file() -> None:
    """Lightning's loggers print to the console on their own (they do not propagate to the root
    logger, whose handlers Hydra sets up per job): give them this job's log file too."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(handler)  # an earlier sweep job's file
        if not logger.propagate:  # (a propagating one reaches the file through the root already)
            for handler in _log_files():
                logger.addHandler(handler)


LIGHTNING_NOTICES = (
    # what a Lightning release prints with PyTorch's newer pytree API: about Lightning's own code
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # by design: the module attaches each batch's place in the stream before it is moved to the device
    r"You have overridden `on_before_batch_transfer` in `LightningModule` but have passed in a `LightningDataModule`",
)
RESUMED_NOTICE = r"Checkpoint directory .* exists and is not empty"
"""What every resumed run would print: it goes on in its own run folder, whose checkpoints are its own."""


class _DropsTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")  # (Lightning's advertisement for its cloud logger)


def quiet_lightning(resuming: bool) -> None:
    """Leaves out Lightning's notices that say nothing about this run (each run printed them all)."""
    for message in LIGHTNING_NOTICES + ((RESUMED_NOTICE,) if resuming else ()):
        warnings.filterwarnings("ignore", message=message)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropsTips) for f in logger.filters):
        logger.addFilter(_DropsTips())


def to_log_file(text: str, level: int = logging.INFO) -> None:
    """Write ``text`` to the job's log file only (what the command also prints, such as its summary)."""
    record = logging.LogRecord("ttt_mm", level, __file__, 0, text, None, None)
    for handler in _log_files():
        handler.handle(record)


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that says what it left behind: ``Interrupted("nothing was written")`` ends a command
    with ``interrupted: nothing was written`` (`config_errors_end_the_command`)."""


class SweepJobError(CompactHydraException):
    """A config mistake in one job of a Hydra sweep (``-m``): the job fails, the sweep goes on, and
    its end names the job and this message (`ttt_mm.tasks.sweep_report`; exit status 1)."""


def in_a_sweep() -> bool:
    """Whether this is one job of a Hydra sweep (``-m``): its jobs run one after another in this process."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def config_errors_end_the_command(interrupted: str | None = None, cfg: DictConfig | None = None) -> Iterator[None]:
    """A config mistake ends a command with one ``error:`` line and exit status 2, and Ctrl-C with one
    line and status 130, not a traceback. In a sweep the mistake ends only its job. Anything else
    goes on up as it is, its traceback also written to the job's log file (Hydra prints it only).
    ``cfg``: the command's config, so that a constructor's error names the key that it refused."""
    settings = None if cfg is None else OmegaConf.to_container(cfg, resolve=False)  # (as given: the run resolves it)
    try:
        yield
    except KeyboardInterrupt as err:  # ``interrupted``: what a command stopped anywhere else left behind
        left = str(err) if isinstance(err, Interrupted) else interrupted
        line = f"interrupted: {left}" if left else "interrupted"
        print(line, file=sys.stderr)
        to_log_file(line, logging.WARNING)
        sys.exit(130)
    except (ConfigError, IndexCacheError, InstantiationException, MissingMandatoryValue) as err:
        if isinstance(err, MissingMandatoryValue):
            key = getattr(err, "full_key", None) or str(err)
            message = f"{key} must be set, e.g. {key}=/path/to/your/data"
        else:  # (the index cache is a setting)
            message = config_error_message(err, settings)
        rank = _rank()  # the processes of a data-parallel run: the first says it plainly, the
        if rank == 0:  # others with their rank (a mistake only one meets, its data mount say, is not lost)
            print("error: " + message, file=sys.stderr)
            to_log_file("error: " + message, logging.ERROR)
        else:
            print(f"[rank {rank}] error: {message}", file=sys.stderr)
        if in_a_sweep():  # (its job folders stay: the sweep's report lists each job's error)
            raise SweepJobError(message) from None
        if rank == 0:
            forget_refused_run()
        sys.exit(2)
    except Exception:
        to_log_file("the command failed:\n" + traceback.format_exc().rstrip(), logging.ERROR)
        raise


def _rank() -> int:
    """This process's rank in a data-parallel run, as Lightning set it; 0 where Lightning is not loaded
    (embed and the probe run in one process and do not import it: it took 2-3 s of their start)."""
    module = sys.modules.get("lightning.fabric.utilities.rank_zero")
    return getattr(module.rank_zero_only, "rank", 0) if module is not None else 0


FULL_ERROR = "HYDRA_FULL_ERROR"
"""Hydra raises, rather than prints, what goes wrong where this is "1"."""
_FULL_ERROR_OURS = "TTT_MM_HYDRA_FULL_ERROR_OURS"
"""Marks `FULL_ERROR` as set by `hydra_command`, for the processes a run starts (DDP's): not the user's."""


def hydra_command(config_name: str) -> Callable[[Callable], Callable]:
    """``hydra.main`` for the command whose config is ``conf/<config_name>.yaml``, where the mistakes
    Hydra finds while composing the config end as the command's own do: one ``error:`` line, exit 2.
    Hydra printed them over several lines, exit 1, and for a misspelled key suggested adding it
    (``+trainer.max_step=3``) rather than naming the key that was meant. A crash prints its traceback
    without Hydra's frames, as Hydra does; ``HYDRA_FULL_ERROR=1`` raises everything as it is."""

    def decorate(task: Callable) -> Callable:
        @functools.wraps(task)
        def job(cfg: DictConfig):
            try:
                return task(cfg)
            except BaseException as err:
                with contextlib.suppress(AttributeError):  # (not one of composing, whatever its type)
                    err.raised_by_the_command = True
                raise

        composed = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(job)

        @functools.wraps(task)
        def command(cfg: DictConfig | None = None):
            if cfg is not None:  # (called with a config: no composing)
                return composed(cfg)
            users = os.environ.get(FULL_ERROR) == "1" and os.environ.get(_FULL_ERROR_OURS) != "1"
            try:
                with environment({FULL_ERROR: "1"} if users else {FULL_ERROR: "1", _FULL_ERROR_OURS: "1"}):
                    return composed()
            except Exception as err:
                if users:
                    raise
                if not getattr(err, "raised_by_the_command", False) and (
                    isinstance(err, CompactHydraException) or _raised_in_hydra(err)  # (`=3`: its parser's ValueError)
                ):
                    print(f"error: {composing_error_message(err)}", file=sys.stderr)
                    sys.exit(2)
                print_without_hydra_frames(err)
                sys.exit(1)

        return command

    return decorate


def composing_error_message(err: Exception) -> str:
    """A mistake Hydra met while composing a config, on one line: a key the config lacks, with the one
    of its neighbours it most likely meant, or a config option that does not exist, with the options."""
    cause = err.__cause__
    key, parent = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, OverrideParseException) and lines:  # (its grammar's words, and a link)
        why = f" ({lines[0]})" if err.override not in lines[0] else ""  # (a lexer's error only repeats it)
        quoted = quoted_override(err.override)
        example = f": {quoted}" if quoted else f", e.g. \"{err.override.split('=', 1)[0]}='/my media [2024]'\""
        return (
            f"{err.override}: not an override Hydra can read{why}; a value with spaces, brackets, commas, quotes "
            f"or = in it is quoted inside the argument{example}"
        )
    overridden = re.match(r"Could not override '([^']*)'", lines[0]) if lines else None
    group = overridden.group(1).split(".", 1)[0].split("/", 1)[0] if overridden else None
    if group in TRAINING_GROUPS and (key == group or "No match in the defaults list" in lines[0]):
        return f"{overridden.group(1)}: {no_training_settings(group)}"
    appended = re.search(r"An item is already at '([^']*)'", lines[0]) if lines else None  # (+key where it is)
    lacking = key if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) else appended and appended[1]
    if lacking and (swept := _swept_group_of(lacking)):
        return (
            f"{lacking} is not a key of every config this sweep composes ({swept}): each job takes every override, "
            "so a key of one option's config fails the others' (with or without +); sweep each option with its own keys"
        )
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key and isinstance(parent, DictConfig):
        name = key.rsplit(".", 1)[-1]
        prefix = key[: -len(name)]
        nested = [f"{k}.{name}" for k in parent if not prefix and _holds(parent, k, name)]  # (max_steps: trainer's)
        close = nested or [prefix + c for c in get_close_matches(name, [str(k) for k in parent], n=1)]
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"{key} is not a key of this command's config{hint} (a key of your own is added with +{key}=...)"
    if isinstance(err, MissingConfigException) and any(line.startswith("Available options") for line in lines):
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options"))
        options = [line for line in lines[start + 1 :] if not line.startswith(("Config search path", "provider="))]
        wanted = re.search(r"Could not find '([^']*)'", lines[0])
        close = get_close_matches(wanted.group(1).rsplit("/", 1)[-1], options, n=1) if wanted else []
        hint = f"; did you mean {close[0]}?" if close else ""
        group = lines[start].removeprefix("Available options in ").rstrip(":")
        found = lines[0].split(": ", 1)[-1]
        return f"{found[:1].lower()}{found[1:]}{hint} (the options of {group}: {', '.join(options)})"
    return " | ".join(line for line in lines if not line.startswith(("Config search path", "provider=")))


def _swept_group_of(key: str) -> str | None:
    """The override of this sweep's command line (``-m``) that sweeps the config group ``key`` lies in,
    where the config of one of its options has the key and another's lacks it (``model=ttt_linear,lact``
    for ``model.backbone.mixer.chunk_size``); None where there is none (a typo, say)."""
    if not _sweep_on_command_line():
        return None
    for argument in sys.argv[1:]:
        group, _, swept = argument.partition("=")
        if not (group.isidentifier() and key.startswith(f"{group}.") and "," in swept):
            continue
        rest, has = key[len(group) + 1 :], set()
        for option in swept.split(","):
            try:
                has.add(OmegaConf.select(OmegaConf.load(Path(CONF_DIR, group, f"{option}.yaml")), rest) is not None)
            except (OSError, ValueError):  # (not an option's file: a value the config knows otherwise)
                return None
        return argument if has == {True, False} else None
    return None


def shell_override(key: str, value: str, quoted: bool = False) -> str:
    """``key=value`` as one shell argument whose value Hydra reads back whole: quoted for Hydra where
    its grammar would split or parse it (a comma makes a sweep, brackets a list), or always (``quoted``),
    then for the shell."""
    if quoted or not re.fullmatch(r"[\w/.@:+~-]+", value):
        quote = "'" if "'" not in value else '"' if '"' not in value else None
        value = f"{quote}{value}{quote}" if quote else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    argument = f"{key}={value}"
    if set(argument) & set("$`\\!"):  # (what a shell's double quotes would expand)
        return shlex.quote(argument)
    return '"' + argument.replace('"', '\\"') + '"' if value[0] in "'\"" else argument


def quoted_override(override: str) -> str | None:
    """``override`` as a shell argument whose value Hydra reads as one quoted string (in single quotes,
    or double where the value holds a single one); None where the value starts with a quote (one left
    open, most likely) or a bracket (a list or dict), holds a double quote or what a shell's double
    quotes expand, or, in a sweep, a comma (values to sweep): quoted, it would mean another thing."""
    key, _, value = override.partition("=")
    if not value or value[0] in "'\"[{" or set(value) & set('$`\\!"') or (_sweep_on_command_line() and "," in value):
        return None
    return shell_override(key, value, quoted=True)


def _sweep_on_command_line() -> bool:
    """Whether this command was started as a sweep (``-m``): what composing its configs cannot ask Hydra."""
    return bool({"-m", "--multirun"} & set(sys.argv[1:]))


_HYDRA_DIR = str(Path(hydra.__file__).parent)
"""Where Hydra's own code lies: the frames it raises from, and those left out of a crash's traceback."""


def _raised_in_hydra(err: BaseException) -> bool:
    """Whether Hydra's own code raised ``err`` (its innermost frame is Hydra's)."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(_HYDRA_DIR)


def _holds(node: DictConfig, key, name: str) -> bool:
    child = node._get_node(key)
    return isinstance(child, DictConfig) and name in child


TRAINING_GROUPS = ("data", "model", "tokenizer", "trainer", "callbacks", "logger")
"""Config groups of training that a command reading a checkpoint may lack (embed, linear_probe)."""


def no_training_settings(group: str) -> str:
    return f"this command has no {group} settings: it uses those of the model's checkpoint, as trained"


_WRAPPERS = {(__file__, "command"), (__file__, "job")}


def print_without_hydra_frames(err: BaseException) -> None:
    """A traceback as Hydra prints one: without its frames (and `hydra_command`'s) above the command's."""
    shown = traceback.TracebackException.from_exception(err)
    ours = [f for f in shown.stack if not f.filename.startswith(_HYDRA_DIR) and (f.filename, f.name) not in _WRAPPERS]
    shown.stack = traceback.StackSummary.from_list(ours)
    print("".join(shown.format()), file=sys.stderr, end="")


def names_of(value) -> list[str] | None:
    """A key that lists names (``names``, ``classes``, ``extensions``): a list, or one name given as a
    plain string (``names=mine``), which would otherwise be read one character at a time; None if unset."""
    if value is None:
        return None
    return [str(value)] if isinstance(value, (str, int, float)) else [str(v) for v in value]


def extensions_of(value) -> tuple[str, ...]:
    """A command's ``extensions`` key as a tuple (see `names_of`); none means every audio and video extension."""
    return tuple(e for e in names_of(value) or () if e) or MEDIA_EXTENSIONS


def positive_count(value, key: str, null: str = "all") -> int | None:
    """A count key (``max_files``): None, or a whole number >= 1; anything else is a config error.
    ``null`` says what None means, for the message."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a whole number >= 1 (or null for {null}); got {value!r}")
    return value


def positive_seconds(value, key: str, null: str) -> float | None:
    """A duration key shipped as null (``window_seconds``): None, or a finite number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{key} must be a number of seconds > 0 (or null for {null}); got {value!r}")
    return float(value)


def output_folder(path: str | Path, key: str = "output") -> Path:
    """``path`` as a folder that exists, made if needed; a path that cannot be one is a config error."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{key}={folder} cannot be made a folder: {err.strerror or err}") from None
    return folder


def sweep_job_folder(output: str | Path) -> Path:
    """``output``, or in a sweep (``-m``) ``output/<job number>`` (numbered as Hydra's sweep folders
    are): a sweep's jobs run one after another in one process and would otherwise each overwrite
    the results of the one before."""
    return Path(output) / str(HydraConfig.get().job.num) if in_a_sweep() else Path(output)


def results_folder(output: str | None) -> Path:
    """The folder a task writes its results to, made: ``output`` (`sweep_job_folder`), or where it is
    unset the run's own folder (Hydra's run directory, or a sweep job's)."""
    if output is not None:
        return output_folder(sweep_job_folder(output))
    if not HydraConfig.initialized():
        raise ConfigError("output must be set: output=/path/to/results")
    return output_folder(HydraConfig.get().runtime.output_dir)


def _or_default(value, default):
    """``${or_default:${output},<folder>}``: a key's value, or ``default`` where it is null."""
    return default if value is None else value


def _resumed_run(ckpt_path: str | None) -> Path | None:
    """The run a checkpoint belongs to: ``<run>`` for ``<run>/checkpoints/<name>.ckpt`` of a run
    directory (one with ``.hydra/config.yaml``); None for no checkpoint or one kept anywhere else (a
    resume from it starts a run directory of its own)."""
    if not ckpt_path:
        return None
    folder = Path(ckpt_path).resolve().parent
    run = folder.parent
    return run if folder.name == "checkpoints" and (run / ".hydra" / "config.yaml").is_file() else None


SYNTHETIC_SOURCE = f"{SyntheticSource.__module__}.{SyntheticSource.__qualname__}"
"""The data source of ``data=synthetic``, the embedded default: clips generated on the fly."""


def trained_on_files(ckpt_path: str) -> list[str] | None:
    """How the run that saved a checkpoint chose its data, if that was files rather than synthetic clips:
    ``["data=<its data group>", "data.root=<its root>"]`` from its ``.hydra`` record, which evaluate
    takes as they are. None for synthetic clips, a checkpoint kept outside its run folder, or a record
    that cannot be read."""
    run = _resumed_run(ckpt_path)
    if run is None:
        return None
    try:
        data = OmegaConf.load(run / ".hydra" / "config.yaml").get("data")
        choices = OmegaConf.select(OmegaConf.load(run / ".hydra" / "hydra.yaml"), "hydra.runtime.choices")
        source, root = OmegaConf.select(data, "source._target_"), OmegaConf.select(data, "root")
    except (OSError, ValueError, TypeError):  # (a hand-edited or damaged record: nothing to say)
        return None
    if source in (None, SYNTHETIC_SOURCE):
        return None
    group = choices.get("data") if choices is not None else None
    return [f"data={group}"] * (group is not None) + [f"data.root={root}"] * (root is not None)


def _run_dir(ckpt_path: str | None, default: str) -> str:
    """Resuming from ``<run>/checkpoints/<name>.ckpt`` continues in ``<run>``; otherwise ``default``."""
    run = _resumed_run(ckpt_path)
    return default if run is None else str(run)


def _config_subdir(ckpt_path: str | None, stamp: str, output_dir: str, train: bool = True) -> str:
    """Where Hydra records a run's config in its directory ``output_dir``: ``.hydra`` for a new run, and
    ``.hydra/resumed-<stamp>`` for a resume in the checkpoint's run (``tested-<stamp>`` for a test-only
    run of its checkpoint; a sweep's job resumed into its folder too), so that neither a resume nor a
    failed attempt overwrites the record of how the run was trained."""
    run = _resumed_run(ckpt_path)
    in_place = run is not None and os.path.realpath(output_dir) == os.path.realpath(run)
    return f".hydra/{'resumed' if train else 'tested'}-{stamp}" if in_place else ".hydra"


_HYDRA_RECORD = {"config.yaml", "hydra.yaml", "overrides.yaml"}
"""What Hydra writes to a run's ``.hydra`` before the command starts."""
_STAMPED = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}")
"""A run directory's name as ``conf/hydra/default.yaml`` stamps it (``${now:%Y-%m-%d_%H-%M-%S-%f}``)."""


def stamped_by_hydra(folder: Path, kind: str) -> bool:
    """Whether ``folder`` is one Hydra made for a run (``kind="runs"``) or a sweep (``"multiruns"``) under
    the default names of ``conf/hydra/default.yaml``: what a refused command may remove, never a folder
    the user named."""
    return folder.parent.name == kind and _STAMPED.fullmatch(folder.name) is not None


def given_keys() -> set[str]:
    """The config keys this command's overrides set (none where Hydra did not start it)."""
    if not HydraConfig.initialized():
        return set()
    return {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}


def forget_refused_run() -> None:
    """Removes the run directory of a command refused before it began, where Hydra stamped it
    (``<log_dir>/<task>/runs/<date>``, the default: no ``hydra.run.dir`` or ``output`` given) and it
    holds only Hydra's config record and the log: the error was printed, and an empty folder among the
    runs would pass for a run. Any other folder (the working directory embed runs in, a resume in
    place, one the user named) is left as it is."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    given = given_keys() | {o.split("=", 1)[0].lstrip("+~") for o in hydra.overrides.hydra}
    folder = Path(hydra.runtime.output_dir)
    record = folder / ".hydra"
    if (
        given & {"hydra.run.dir", "output"}
        or not stamped_by_hydra(folder, "runs")
        or not (record / "config.yaml").is_file()
    ):
        return
    logs = {Path(h.baseFilename).resolve() for h in _log_files()}
    if all(p == record or p.resolve() in logs for p in folder.iterdir()) and all(
        p.name in _HYDRA_RECORD for p in record.iterdir()
    ):
        shutil.rmtree(folder, ignore_errors=True)


def forget_refused_resume() -> None:
    """Removes the config record (`_config_subdir`) of a resume in place that a config check refused
    before it trained: the run folder would list a resume that never ran (its log keeps the error)."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    subdir = hydra.output_subdir
    if subdir and Path(subdir).name.startswith(("resumed-", "tested-")):
        shutil.rmtree(Path(hydra.runtime.output_dir) / subdir, ignore_errors=True)


def _eq(a, b) -> bool:
    """``${eq:${model.backbone.variant},mamba}``: one config value switching another on."""
    return a == b


OmegaConf.register_new_resolver("run_dir", _run_dir, replace=True)
OmegaConf.register_new_resolver("config_subdir", _config_subdir, replace=True)
OmegaConf.register_new_resolver("eq", _eq, replace=True)
OmegaConf.register_new_resolver("or_default", _or_default, replace=True)
OmegaConf.register_new_resolver("conf_dir", lambda: CONF_DIR, replace=True)  # (--help names it whole: run anywhere)
