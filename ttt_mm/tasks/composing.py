"""`hydra_command`: a command's ``hydra.main``, where the mistakes Hydra meets while composing its
config (a misspelled key, a missing option, an override it cannot parse) end in one line that names
the fix, and a crash's traceback leaves out Hydra's frames."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable
from difflib import get_close_matches
from pathlib import Path

import hydra
from hydra.errors import CompactHydraException, MissingConfigException, OverrideParseException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationKeyError,
    InterpolationResolutionError,
    InterpolationToMissingValueError,
    MissingMandatoryValue,
)

from ttt_mm.messages import once
from ttt_mm.processes.environment import environment
from ttt_mm.tasks.command_lines import quoted_override
from ttt_mm.tasks.common import CONF_DIR
from ttt_mm.tasks.config_errors import interpolation_message
from ttt_mm.tasks.overrides import sweep_flag_first, sweep_on_command_line
from ttt_mm.tasks.run_folders import FolderRefused
from ttt_mm.tasks.starting import started

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
            started()  # (the command's work begins: `ttt_mm.tasks.starting`)
            once.new_run()  # (a sweep's job: what the jobs before it said is said again in its log)
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
            sys.argv[:] = sweep_flag_first(sys.argv)
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
                if isinstance(err, InterpolationResolutionError) and (refused := _refused_folder(err)):
                    print(f"error: {refused}", file=sys.stderr)  # (before Hydra wrote there)
                    sys.exit(2)
                if isinstance(err, OSError) and err.filename and not getattr(err, "raised_by_the_command", False):
                    print(f"error: {run_folder_message(err, config_name)}", file=sys.stderr)  # (Hydra's mkdir)
                    sys.exit(2)
                if isinstance(err, InterpolationKeyError) and not getattr(err, "raised_by_the_command", False):
                    # (Hydra's own settings read a key that is not there: hydra.run.dir, or output, which sets it)
                    resolving = _printing_hydra_resolved()
                    message = hydra_resolved_message(err) if resolving else interpolation_message(err, _read_in(err))
                    print(f"error: {message}", file=sys.stderr)
                    sys.exit(2)
                if isinstance(err, (MissingMandatoryValue, InterpolationToMissingValueError)) and not getattr(
                    err, "raised_by_the_command", False
                ):
                    print(f"error: {missing_value_message(err)}", file=sys.stderr)  # (Hydra's own keys read it)
                    sys.exit(2)
                print_without_hydra_frames(err)
                sys.exit(1)

        return command

    return decorate


def _refused_folder(err: InterpolationResolutionError) -> str | None:
    """Why `results_dir` refused the folder that Hydra's run folder resolves to (None: another error)."""
    said = str(err).splitlines()[0].partition(f"{FolderRefused.__name__} raised while resolving interpolation: ")
    return said[2] or None


def run_folder_message(err: OSError, config_name: str) -> str:
    """Hydra could not make the run (or sweep) folder, or write its record in it, before the command began."""
    what = "sweep" if sweep_on_command_line() else "run"
    if "output" in OmegaConf.load(Path(CONF_DIR) / f"{config_name}.yaml"):
        keys = "output=<folder>"
    else:
        keys = f"hydra.{what}.dir=<folder> (this {what}'s)"
    return (
        f"{err.filename}: {err.strerror or err}: the {what} folder cannot be made or written there; "
        f"choose another with {keys} or paths.log_dir=<folder> (where runs go)"
    )


def composing_error_message(err: Exception) -> str:
    """A mistake Hydra met while composing a config, on one line: a key the config lacks, with the one
    of its neighbours it most likely meant, or a config option that does not exist, with the options."""
    cause = err.__cause__
    key, parent = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, OverrideParseException) and (whole := _split_at_spaces(err.override)):
        what = "not an override Hydra can read" if "=" in err.override else "not an override (it has no =)"
        return f"{err.override}: {what}: the shell split an argument at its spaces; quote it whole: {whole}"
    if isinstance(err, OverrideParseException) and "=" not in err.override and not err.override.startswith("~"):
        return f"{err.override}: not an override (it has no =): an override is key=value, e.g. data.root=/my/media"
    if isinstance(err, OverrideParseException) and lines:  # (its grammar's words, and a link)
        why = f" ({lines[0]})" if err.override not in lines[0] else ""  # (a lexer's error only repeats it)
        quoted = quoted_override(err.override)
        example = f": {quoted}" if quoted else f", e.g. \"{err.override.split('=', 1)[0]}='/my media [2024]'\""
        return (
            f"{err.override}: not an override Hydra can read{why}; a value with spaces, brackets, commas, quotes, = "
            f"or a sign such as ~ # & ; ! in it is quoted inside the argument{example}"
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
        if builder := _builder_taking(parent, name):
            return (
                f"{key} is an argument of {builder} that this config does not list (it takes its default): "
                f"add it with +{key}=..."
            )
        # a key of a node inside: max_steps, trainer's; tokenizer.target_pool of tokenizer=av, tokenizer.video's
        nested = [f"{prefix}{k}.{name}" for k in parent if _holds(parent, k, name)]
        if not nested and (elsewhere := _of_other_options(key)):
            return f"{key} is not a key of this command's config: {elsewhere}"
        close = nested or [prefix + c for c in [closest_key(name, parent)] if c]
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


def missing_value_message(err: MissingMandatoryValue | InterpolationToMissingValueError) -> str:
    """A key left ``???`` that one of Hydra's own reads before the command starts (``hydra.sweep.dir:
    ${output}``: a sweep's jobs write to ``output/<n>``), on one line."""
    missing = m[1] if (m := re.search(r"Missing mandatory value: ([\w.]+)", str(err))) else None
    where = getattr(err, "full_key", None)
    reads = f" ({where} reads it)" if where and where != missing else ""
    return f"{missing or where} must be set{reads}, e.g. {missing or where}=/path/to/folder"


def closest_key(name: str, keys) -> str | None:
    """The key a mistyped ``name`` most likely meant: the first that ``name`` begins (``hop`` for
    ``hop_seconds``: too short for a close spelling), else the closest spelling; None when none is close."""
    keys = sorted(str(k) for k in keys)
    begun = [k for k in keys if k.startswith(name) and k != name] if name else []
    return begun[0] if begun else next(iter(get_close_matches(name, keys, n=1)), None)


def _builder_taking(node: DictConfig, name: str) -> str | None:
    """The class or function that config ``node`` builds (its ``_target_``) where it takes an optional
    argument ``name`` the config does not list (``tokenizer.hop_length``: Hydra's words, "add it with +", read
    as if the key were the user's own)."""
    if "_target_" not in node:
        return None
    try:
        built = get_object(str(node._get_node("_target_")._value()))
        parameters = inspect.signature(built).parameters
    except (ImportError, AttributeError, TypeError, ValueError):  # (a target that cannot be read here)
        return None
    # (an optional one only: a required one the config lacks is its caller's to give, as a mixer's dim=)
    optional = name in parameters and parameters[name].default is not inspect.Parameter.empty
    return getattr(built, "__name__", None) if optional and not name.startswith("_") else None


def _group_options(key: str) -> list[tuple[str, DictConfig]]:
    """Each option of ``key``'s config group (``conf/model/*.yaml`` for ``model.*``), by name, with its
    file's config as written; none where ``key`` names no group."""
    group, _, rest = key.partition(".")
    folder = Path(CONF_DIR, group)
    if not rest or not folder.is_dir():
        return []
    options = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            options.append((path.stem, OmegaConf.load(path)))
        except (OSError, ValueError):
            continue
    return options


def _of_other_options(key: str) -> str | None:
    """Which other options of ``key``'s config group than the one chosen have it, in their file or as an
    argument of the class they build (with how to choose one), or None."""
    group = key.split(".", 1)[0]
    if options := _options_holding(key):
        return f"it is a key of {' or '.join(f'{group}={option}' for option in options)}, not of the {group} chosen"
    if takers := _options_taking(key):
        chosen = " or ".join(f"{group}={option}'s {builder}" for option, builder in takers)
        return (
            f"it is an argument of {chosen}, not of the {group} chosen (choose it and add the key, e.g. "
            f"{group}={takers[0][0]} +{key}=...)"
        )
    return None


def _options_holding(key: str) -> list[str]:
    """The options of ``key``'s config group whose file sets it: ``lact`` for
    ``model.backbone.mixer.chunk_size``, where another option was chosen."""
    rest = key.partition(".")[2]
    return [
        name for name, config in _group_options(key) if OmegaConf.select(config, rest, default=_ABSENT) is not _ABSENT
    ]


def _options_taking(key: str) -> list[tuple[str, str]]:
    """The options of ``key``'s config group, with the class each builds, whose class takes ``key``'s last
    name as an optional argument that the option's file leaves at its default: ``tokenizer=audio``'s
    ``AudioTokenizer`` for ``tokenizer.hop_length``, where another tokenizer was chosen."""
    within, _, name = key.partition(".")[2].rpartition(".")
    found = []
    for option, config in _group_options(key):
        node = OmegaConf.select(config, within, default=None) if within else config
        if isinstance(node, DictConfig) and (builder := _builder_taking(node, name)):
            found.append((option, builder))
    return found


_ABSENT = object()


def _swept_group_of(key: str) -> str | None:
    """The override of this sweep's command line (``-m``) that sweeps the config group ``key`` lies in,
    where the config of one of its options has the key and another's lacks it (``model=ttt_linear,lact``
    for ``model.backbone.mixer.chunk_size``); None where there is none (a typo, say)."""
    if not sweep_on_command_line():
        return None
    for argument in sys.argv[1:]:
        group, _, swept = argument.partition("=")
        if not (group.isidentifier() and key.startswith(f"{group}.") and "," in swept):
            continue
        configs, rest = dict(_group_options(key)), key[len(group) + 1 :]
        if not set(options := swept.split(",")) <= set(configs):  # (not options: values the config knows otherwise)
            return None
        has = {OmegaConf.select(configs[option], rest) is not None for option in options}
        return argument if has == {True, False} else None
    return None


_HYDRA_FLAGS_WITH_VALUES = frozenset(
    ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--cfg", "-c", "--package", "-p")
    + ("--info", "-i", "--experimental-rerun")
)
"""Hydra's flags whose next argument is their value, not an override: ``--config-name media``."""


def _split_at_spaces(word: str) -> str | None:
    """Where the shell split an override at its spaces (``data.root=/my set``, unquoted: ``word`` is
    ``set``, or ``data.root=~/my``, which Hydra refuses itself), that override and the words after it
    that are no overrides either, quoted as one argument (`quoted_override`); None where it did not."""
    args = sys.argv[1:]
    flag_values = {i + 1 for i, arg in enumerate(args) if arg in _HYDRA_FLAGS_WITH_VALUES}  # (--config-name NAME)
    found = [i for i, arg in enumerate(args) if arg == word and i not in flag_values]
    if not found:
        return None
    first = end = found[0]
    words = [i for i, arg in enumerate(args) if "=" not in arg and not arg.startswith("-") and i not in flag_values]
    if "=" not in word:
        while first - 1 in words:
            first -= 1
        if first == 0 or args[first - 1].startswith("-"):
            return None
        first -= 1
    while end + 1 in words:
        end += 1
    if end == first:  # (an override alone: nothing was split off it)
        return None
    return quoted_override(" ".join(args[first : end + 1]))


_HYDRA_DIR = str(Path(hydra.__file__).parent)
"""Where Hydra's own code lies: the frames it raises from, and those left out of a crash's traceback."""


def _printing_hydra_resolved() -> bool:
    """Whether this command line asks Hydra to print its own settings resolved (``--cfg hydra --resolve``)."""
    arguments = sys.argv[1:]
    shown = [arguments[i + 1] for i, a in enumerate(arguments[:-1]) if a in ("--cfg", "-c")]
    return "hydra" in shown and "--resolve" in arguments


def hydra_resolved_message(err: InterpolationKeyError) -> str:
    """``--cfg hydra --resolve``: Hydra resolves its settings (``hydra.run.dir``) without the command's
    config they read (``paths.log_dir``), which fails for every command; ``--cfg all`` keeps both."""
    read = re.search(r"Interpolation key '([^']*)'", str(err))
    keys = f" ({read[1]}, say)" if read else ""
    return (
        f"--cfg hydra --resolve cannot resolve Hydra's settings: they read keys of this command's config{keys}, "
        "which --cfg hydra leaves out; print both resolved with --cfg all --resolve"
    )


def _read_in(err: InterpolationKeyError) -> dict | None:
    """The whole config (Hydra's settings and the command's, unresolved) the failed interpolation was
    read in, for `interpolation_message` to name the key it meant."""
    node = getattr(err, "parent_node", None)
    root = node._get_root() if node is not None else None
    return OmegaConf.to_container(root, resolve=False) if isinstance(root, DictConfig) else None


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
