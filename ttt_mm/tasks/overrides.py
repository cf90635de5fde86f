"""Hydra's overrides as typed: its records of them read back unresolved, and the key each one sets."""

from __future__ import annotations

import re
import sys

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


def as_typed(overrides) -> list[str]:
    """Hydra's record of overrides (``hydra.overrides.task``, ``.hydra``) as they were typed. Read item by
    item, an override whose value is an interpolation (``a=${b}``) is resolved, against Hydra's own
    config where ``b`` is not: every command with one failed, or printed its value for it."""
    return [str(o) for o in OmegaConf.to_container(overrides, resolve=False)] if overrides is not None else []


def given_keys() -> set[str]:
    """The config keys this command's overrides set (none where Hydra did not start it)."""
    if not HydraConfig.initialized():
        return set()
    return {override_key(o) for o in as_typed(HydraConfig.get().overrides.task)}


def override_key(override: str) -> str:
    """The key an override sets (``+a.b=1``, ``~a.b``: ``a.b``)."""
    return override.lstrip("+~").partition("=")[0]


def top_key(override: str) -> str:
    """The top-level key or group an override sets (``+a.b=1``, ``a/b@c=d``: ``a``)."""
    return re.split(r"[./@]", override_key(override), maxsplit=1)[0]


SWEEP_FLAGS = ("-m", "--multirun")


def sweep_on_command_line() -> bool:
    """Whether this command was started as a sweep (``-m``, or the mode set as an override): what
    composing its configs cannot ask Hydra."""
    return bool({*SWEEP_FLAGS, "hydra.mode=MULTIRUN"} & set(sys.argv[1:]))


def sweep_flag_first(argv: list[str]) -> list[str]:
    """``argv`` with ``-m`` moved before the overrides, where Hydra's parser takes its flags: added at the
    end of a command line, it ended the command with argparse's "unrecognized arguments" for the
    overrides after it (``-m`` takes no value, so where it stands changes nothing else)."""
    flags = [a for a in argv[1:] if a in SWEEP_FLAGS]
    return [argv[0], *flags, *(a for a in argv[1:] if a not in SWEEP_FLAGS)] if flags else argv


def reads(text: str, key: str) -> bool:
    """Whether config ``text``, as written, reads ``key``: ``${key}``, ``${key.a}``, relative
    (``${..key}``) or through ``oc.select`` (not a resolver of that name, ``${key:...}``, nor an
    environment variable, ``${oc.env:key}``, nor an escaped ``\\${key}``)."""
    return re.search(r"(?<!\\)\$\{(?:oc\.select:\s*)?\.*" + re.escape(key) + r"(?![\w:-])", text) is not None
