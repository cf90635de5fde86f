"""What every entry point shares: the config folder and its resolvers (registered on import, so
anything that composes ``conf/`` imports this module first), and the config error and how a command
ends on one (`config_errors_end_the_command`), naming the key to fix."""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from difflib import get_close_matches
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError, MissingMandatoryValue

from ttt_mm.data.index import IndexCacheError, IndexInterrupted
from ttt_mm.messages import root_cause
from ttt_mm.tasks.job_logs import to_log_file
from ttt_mm.tasks.run_folders import config_subdir_of, forget_refused_run, run_dir_of

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


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
    err = root_cause(err)
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


def interpolation_message(err: InterpolationKeyError, settings: dict | None) -> str:
    """``${data.clip_len}`` read where no such key is (a config file's or an override's), on one line:
    the key whose value reads it, and the key of that name's node it most likely meant."""
    named = m[1] if (m := re.search(r"Interpolation key '([^']*)'", str(err))) else None
    key = getattr(err, "full_key", None) or (named and next(_keys_reading(settings, named), None))
    where = f"{key}: " if key else ""
    if named is None:
        return f"{where}an interpolation names no key of this command's config ({str(err).strip()})"
    parent, _, name = named.rpartition(".")
    node = settings
    for part in parent.split(".") if parent else ():
        node = node.get(part) if isinstance(node, dict) else None
    setting = key.rpartition(".")[2] if key and key.rpartition(".")[0] == parent else None  # (not itself)
    close = get_close_matches(name, [str(k) for k in node if k != setting], n=1) if isinstance(node, dict) else []
    hint = f"; did you mean ${{{parent + '.' if parent else ''}{close[0]}}}?" if close else ""
    return (
        f"{where}${{{named}}} names no key of this command's config (an interpolation reads another key's value){hint}"
    )


def _keys_reading(settings, named: str, prefix: str = "") -> Iterator[str]:
    """The keys of ``settings`` (plain, unresolved) whose value interpolates ``${named}``."""
    if isinstance(settings, dict):
        for k, v in settings.items():
            yield from _keys_reading(v, named, f"{prefix}{k}.")
    elif isinstance(settings, list):
        for i, v in enumerate(settings):
            yield from _keys_reading(v, named, f"{prefix}{i}.")
    elif isinstance(settings, str) and "${" + named + "}" in settings:
        yield prefix.rstrip(".")


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


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that says what it left behind: ``Interrupted("nothing was written")`` ends a command
    with ``interrupted: nothing was written`` (`config_errors_end_the_command`); ``before_it_began``:
    while it listed its data, so that its run folder holds nothing of it."""

    def __init__(self, message: str, before_it_began: bool = False) -> None:
        super().__init__(message)
        self.before_it_began = before_it_began


class SweepJobError(CompactHydraException):
    """A config mistake in one job of a Hydra sweep (``-m``): the job fails, the sweep goes on, and
    its end names the job and this message (`ttt_mm.tasks.sweep_report`; exit status 1)."""


def in_a_sweep() -> bool:
    """Whether this is one job of a Hydra sweep (``-m``): its jobs run one after another in this process."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


CONFIG_ERRORS = (ConfigError, IndexCacheError, InstantiationException, MissingMandatoryValue, InterpolationKeyError)
"""What a mistake in the settings raises: it ends a command with one line (`config_errors_end_the_command`)."""


@contextmanager
def config_errors_end_the_command(interrupted: str | None = None, cfg: DictConfig | None = None) -> Iterator[None]:
    """A config mistake ends a command with one ``error:`` line and exit status 2, and Ctrl-C with one
    line and status 130, not a traceback (a run folder left holding only Hydra's record and the log goes,
    `forget_refused_run`: after a mistake, or a Ctrl-C while the data was indexed, ``before_it_began``).
    In a sweep the mistake ends only its job. Anything else goes on up as it is, its traceback also
    written to the job's log file (Hydra prints it only).
    ``cfg``: the command's config, so that a constructor's error names the key that it refused."""
    settings = None if cfg is None else OmegaConf.to_container(cfg, resolve=False)  # (as given: the run resolves it)
    try:
        yield
    except KeyboardInterrupt as err:  # ``interrupted``: what a command stopped anywhere else left behind
        left = str(err) if isinstance(err, Interrupted) else interrupted
        line = f"interrupted: {left}" if left else "interrupted"
        print(line, file=sys.stderr)
        to_log_file(line, logging.WARNING)
        began = not isinstance(err, IndexInterrupted) and not getattr(err, "before_it_began", False)
        # stopped while listing its data: no empty run folder
        if not began and process_rank() == 0 and not in_a_sweep():
            forget_refused_run()
        sys.exit(130)
    except CONFIG_ERRORS as err:
        if isinstance(err, MissingMandatoryValue):
            key = getattr(err, "full_key", None) or str(err)
            message = f"{key} must be set, e.g. {key}=/path/to/your/data"
        elif isinstance(err, InterpolationKeyError):
            message = interpolation_message(err, settings)
        else:  # (the index cache is a setting)
            message = config_error_message(err, settings)
        rank = process_rank()  # the processes of a data-parallel run: the first says it plainly, the
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


def process_rank() -> int:
    """This process's rank in a data-parallel run, as Lightning set it; 0 where Lightning is not loaded
    (embed and the probe run in one process and do not import it: it took 2-3 s of their start)."""
    module = sys.modules.get("lightning.fabric.utilities.rank_zero")
    return getattr(module.rank_zero_only, "rank", 0) if module is not None else 0


def _or_default(value, default):
    """``${or_default:${output},<folder>}``: a key's value, or ``default`` where it is null."""
    return default if value is None else value


def _eq(a, b) -> bool:
    """``${eq:${model.backbone.variant},mamba}``: one config value switching another on."""
    return a == b


OmegaConf.register_new_resolver("run_dir", run_dir_of, replace=True)
OmegaConf.register_new_resolver("config_subdir", config_subdir_of, replace=True)
OmegaConf.register_new_resolver("eq", _eq, replace=True)
OmegaConf.register_new_resolver("or_default", _or_default, replace=True)
OmegaConf.register_new_resolver("conf_dir", lambda: CONF_DIR, replace=True)  # (--help names it whole: run anywhere)
