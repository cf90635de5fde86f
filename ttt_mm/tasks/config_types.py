"""Config values checked against the annotations of the constructors they are passed to, before
anything is built: ``model.lr=abc`` ends in one line naming the key and what it takes, rather than a
traceback from inside the optimizer once data and model are built. The signatures are the schema,
so there is nothing to keep in step with them; an annotation this cannot read (a class, a callable)
is left to the constructor."""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, Union

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ttt_mm.tasks.common import CONF_DIR, ConfigError

HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
_UNKNOWN = None  # what `_fits` says of an annotation it cannot check


def check_config(cfg: DictConfig, command: str) -> None:
    """Both checks below, for the command whose config is ``conf/<command>.yaml``."""
    check_command_keys(cfg, command)
    check_types(cfg)


def check_types(cfg: DictConfig, prefix: str = "") -> None:
    """Raise a ConfigError for the first value, at any depth of ``cfg``, that the annotation of its
    ``_target_`` rules out. Keys whose values cannot be resolved yet are left to instantiation."""
    for path, node in _built_nodes(cfg, prefix):
        try:
            target = get_object(node._target_)
        except Exception:  # (instantiation will say what is wrong with the target)
            continue
        values = {k: node[k] for k in node if k not in HYDRA_KEYS and not _unresolved(node, k)}
        raw = OmegaConf.to_container(node, resolve=False)
        sources = {k: raw[k] for k in values if OmegaConf.is_interpolation(node, k)}
        check_arguments(target, {k: v for k, v in values.items() if not isinstance(v, DictConfig)}, path, sources)


def check_arguments(
    target, values: Mapping[str, Any], prefix: str = "", sources: Mapping[str, str] | None = None
) -> None:
    """Raise a ConfigError for the first of ``values`` (config values by argument name) that the
    annotation of that argument of ``target`` (a function, or a class's ``__init__``) rules out;
    ``sources``: the interpolations some values came from, named in the message (the key to fix)."""
    hints, params = _signature(target)
    for key, value in values.items():
        if key not in hints:
            continue
        if isinstance(value, ListConfig):
            try:
                value = OmegaConf.to_container(value, resolve=True)
            except OmegaConfBaseException:
                continue  # (an item that does not resolve here: left to instantiation)
        if value is None and params[key].default is None:
            continue  # `x: int = None`: the default says what the annotation leaves out
        if _fits(value, hints[key]) is False:
            name = f"{prefix}.{key}" if prefix else str(key)
            if sources and key in sources:
                name += f" (= {sources[key]})"
            raise ConfigError(f"{name} must be {_described(hints[key])}; got {_shown(value)}")


def check_command_keys(cfg: DictConfig, command: str) -> None:
    """Raise a ConfigError where one of a command's own keys (``conf/<command>.yaml``), shipped as a
    number or true/false, is given something else: ``plots=no`` would otherwise read as true."""
    shipped = OmegaConf.load(Path(CONF_DIR) / f"{command}.yaml")
    for key in shipped:
        if key in ("defaults", "hydra") or key not in cfg or _unresolved(shipped, key) or _unresolved(cfg, key):
            continue
        default, value = shipped[key], cfg[key]
        kind = bool if isinstance(default, bool) else int if isinstance(default, int) else float
        if isinstance(default, (bool, int, float)) and _fits(value, kind) is False:
            raise ConfigError(f"{key} must be {_described(kind)}; got {_shown(value)}")


def _built_nodes(node, path: str) -> Iterator[tuple[str, DictConfig]]:
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node and isinstance(node._target_, str):
        yield path, node
    for key in node:
        if not _unresolved(node, key):
            yield from _built_nodes(node[key], f"{path}.{key}" if path else str(key))


def _unresolved(node: DictConfig, key) -> bool:
    """Whether ``node[key]`` is missing (``???``) or an interpolation that does not resolve here."""
    if OmegaConf.is_missing(node, key):
        return True
    try:
        node[key]
    except OmegaConfBaseException:
        return True
    return False


def _signature(target) -> tuple[dict[str, Any], dict[str, inspect.Parameter]]:
    """The resolved annotations and the parameters of ``target`` (a class's ``__init__``); none where
    its annotations cannot be resolved (the call will say what is wrong)."""
    try:
        params = dict(inspect.signature(target).parameters)
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    except Exception:  # (a name only imported for type checkers, a builtin without a signature)
        return {}, {}
    return {k: v for k, v in hints.items() if k in params}, params


def _fits(value, hint) -> bool | None:
    """Whether ``value`` (plain, from a config) matches ``hint``; None where the hint is not one of the
    plain types a config can hold."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        answers = [_fits(value, arm) for arm in args]
        return True if True in answers else (_UNKNOWN if _UNKNOWN in answers else False)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (Path, PurePath, os.PathLike):
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if isinstance(value, str) and origin is Sequence:
            return _UNKNOWN  # (a str is a sequence: some readers take one item as a plain string)
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return False
            return _all(_fits(v, a) for v, a in zip(value, args, strict=True))
        return _all(_fits(v, args[0]) for v in value) if args else True
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping) or _UNKNOWN
    return _UNKNOWN


def _all(answers) -> bool | None:
    answers = list(answers)
    return False if False in answers else (_UNKNOWN if _UNKNOWN in answers else True)


def _described(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):  # Literal arms read as one list of choices
        choices = [c for a in args if typing.get_origin(a) is Literal for c in typing.get_args(a)]
        others = [_described(a) for a in args if typing.get_origin(a) is not Literal]
        return " or ".join(dict.fromkeys(([_described(Literal[tuple(choices)])] if choices else []) + others))
    if origin is Literal:
        return "one of " + ", ".join(_shown(a) for a in args)
    if origin in (list, tuple, Sequence) and args:
        if origin is tuple and args[-1] is not Ellipsis:
            if len(set(args)) == 1:
                return f"a list of {len(args)} ({_described(args[0])} each)"
            return f"a list of {len(args)}: " + ", ".join(_described(a) for a in args)
        return f"a list (of {_described(args[0])} each)"
    plain = {
        type(None): "null",
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a string",
        Path: "a path",
    }
    return plain.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value) -> str:
    """A value as it would be written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)
