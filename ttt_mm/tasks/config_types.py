"""Config values checked against the annotations of the constructors they are passed to, before
anything is built: ``model.lr=abc`` ends in one line naming the key and what it takes, rather than a
traceback from inside the optimizer once data and model are built. The signatures are the schema,
so there is nothing to keep in step with them; an annotation this cannot read (a class, a callable)
is left to the constructor."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from difflib import get_close_matches
from pathlib import Path, PurePath
from typing import Any, Literal, Union

from hydra._internal.utils import _locate
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ttt_mm.tasks.common import CONF_DIR, ConfigError, process_rank
from ttt_mm.tasks.composing import TRAINING_GROUPS, closest_key, no_training_settings
from ttt_mm.tasks.config_errors import quote_it
from ttt_mm.tasks.overrides import as_typed, override_key, reads, top_key

log = logging.getLogger(__name__)

HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
UNKNOWN = None
"""What `_fits` answers for an annotation it cannot check (a class, a callable): neither True nor False."""


def check_config(cfg: DictConfig, command: str, kinds: dict[str, Any] | None = None) -> None:
    """Both checks below, for the command whose config is ``conf/<command>.yaml``."""
    check_command_keys(cfg, command, kinds)
    check_types(cfg)


def check_types(cfg: DictConfig, prefix: str = "") -> None:
    """Raise a ConfigError for the first value, at any depth of ``cfg``, that the annotation of its
    ``_target_`` rules out. Keys whose values cannot be resolved yet are left to instantiation."""
    for path, node in _built_nodes(cfg, prefix):
        target = located(node._target_, f"{path}._target_" if path else "_target_")
        check_names(target, [k for k in node if k not in HYDRA_KEYS], path)
        values = {k: node[k] for k in node if k not in HYDRA_KEYS and not _unresolved(node, k)}
        raw = OmegaConf.to_container(node, resolve=False)
        sources = {k: raw[k] for k in values if OmegaConf.is_interpolation(node, k)}
        check_arguments(target, {k: v for k, v in values.items() if not isinstance(v, DictConfig)}, path, sources)


def located(target: str, key: str) -> Any:
    """The class or function that ``target`` (a ``_target_``'s dotted path) names, found as Hydra's
    instantiate finds it; a ConfigError naming ``key`` where it names none: the closest name where a
    module or class lacks it (``ttt_mm.layers.TTTLayr`` was "No module named 'ttt_mm.layers.TTTLayr'
    (config key 'model')", after a logged error of Hydra's of four lines), else why it cannot be imported."""
    try:
        return _locate(target)
    except Exception as exc:
        failed = exc
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):  # the longest part that resolves, and whether it lacks the next name
        try:
            owner = _locate(".".join(parts[:i]))
        except Exception:
            continue
        name, where = parts[i], ".".join(parts[:i])
        if name and not hasattr(owner, name) and not _has_submodule(owner, name):
            close = get_close_matches(name, [n for n in dir(owner) if not n.startswith("__")], n=1)
            hint = f"; did you mean {where}.{close[0]}?" if close else ""
            raise ConfigError(f"{key}: {where} has no {name}{hint}") from None
        break
    cause = failed.__cause__ or failed  # (Hydra's words wrap the import's own error)
    reason = f"{type(cause).__name__}: {cause}" if cause is not failed else str(failed).splitlines()[-1]
    raise ConfigError(f"{key}: {target} cannot be imported: {reason}") from None


def _has_submodule(owner: Any, name: str) -> bool:
    """Whether module ``owner`` has a submodule ``name`` (one that failed to import, say)."""
    if not hasattr(owner, "__path__"):
        return False
    try:
        return importlib.util.find_spec(f"{owner.__name__}.{name}") is not None
    except (ImportError, ValueError):
        return False


def check_names(target, keys: Sequence[str], prefix: str) -> None:
    """Raise a ConfigError for the first of ``keys`` that is no parameter of ``target`` (one without
    ``**kwargs``), naming the closest parameter: ``+data.clip_second=4`` (Hydra suggests the ``+`` for
    a key it does not know) ended in the constructor's TypeError, with nothing to say what was meant."""
    _, params = _annotations(target)
    if not params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in keys:
        if key not in params:
            where = f"{prefix}.{key}" if prefix else str(key)
            close = closest_key(str(key), params)
            hint = f"; did you mean {prefix + '.' if prefix else ''}{close}?" if close else ""
            raise ConfigError(f"{where} is not a setting of {getattr(target, '__name__', target)}{hint}")


def check_arguments(
    target, values: Mapping[str, Any], prefix: str = "", sources: Mapping[str, str] | None = None
) -> None:
    """Raise a ConfigError for the first of ``values`` (config values by argument name) that the
    annotation of that argument of ``target`` (a function, or a class's ``__init__``) rules out;
    ``sources``: the interpolations some values came from, named in the message (the key to fix)."""
    hints, params = _annotations(target)
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
            raise ConfigError(_message(name, hints[key], value))


def check_command_keys(cfg: DictConfig, command: str, kinds: dict[str, Any] | None = None) -> None:
    """Raise a ConfigError where one of a command's own keys (``conf/<command>.yaml``) shipped as a
    number, true/false or a list is given another kind of value: ``plots=no`` would otherwise read
    as true, and ``baselines=logmel`` as the baselines l, o, g, ... A key shipped as null (or as an
    interpolation) can take anything here. ``kinds``: the annotations of keys whose shipped value says
    less than they take (linear_probe's ``l2``, a list, takes one number too)."""
    shipped = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / f"{command}.yaml"), resolve=False)
    groups = {next(iter(d)).split("/")[0] for d in shipped.get("defaults", []) if isinstance(d, dict)}
    own = set(shipped) | {g for g in groups if not g.startswith("override ")}
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        overrides = as_typed(hydra.overrides.task)
        known = own | {group.split("/")[0] for group in hydra.runtime.choices}  # (a user's own groups too)
        check_keys_of_config_files(cfg, known, overrides)  # (evaluate's placeholder tokenizer: its file sets it)
        if command != "train":  # (evaluate's tokenizer group is a placeholder: each checkpoint's own is used)
            own.discard("tokenizer")
        check_added_keys(cfg, own, known, overrides)
        for key in (override_key(o) for o in overrides if o.startswith("~")):
            if key in shipped and key not in ("defaults", "hydra") and key not in cfg:
                raise ConfigError(f"~{key}: {key} is one of this command's own keys, which it reads: set it instead")
    for key, default in shipped.items():
        if key in ("defaults", "hydra") or key not in cfg or _unresolved(cfg, key):
            continue
        kind = (kinds or {}).get(key, _kind(default))
        value = cfg[key]
        value = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
        if kind is not None and _fits(value, kind) is False:
            raise ConfigError(_message(key, kind, value))


def check_added_keys(cfg: DictConfig, own: set[str], known: set[str], overrides: list[str]) -> None:
    """Raise a ConfigError for a key added on the command line (``+key=value``, which Hydra suggests
    for a key it does not know) that is none of the ``known`` keys and groups but close to one: the
    command would read past it, and ``+hop=0.5`` (for ``hop_seconds``) ran as if it had not been given.
    A key that a value reads (``+exp=x`` for ``hydra.run.dir=runs/${exp}``) is the user's own, however
    like one of them; one like none of them that nothing reads gets a warning. The same holds in a node
    of plain settings (``+paths.log_dirr``). ``own``: the command's keys and groups, which a training
    group added must be one of."""
    for override in overrides:
        if not override.startswith("+"):
            continue
        key, typed = top_key(override), override.split("=", 1)[0]
        if key in TRAINING_GROUPS and key not in own:  # (+model=attention adds a group: not the user's own)
            raise ConfigError(f"{typed}: {no_training_settings(key)}")
        if key in known:
            _check_added_setting(cfg, override_key(override), typed)
            continue
        if _interpolated(key, cfg, HydraConfig.get()):  # (read as ${key}: the user's own)
            continue
        nested = [f"{k}.{key}" for k in cfg if isinstance(cfg.get(k), DictConfig) and key in cfg[k]]
        close = nested or [c for c in [_closest(key, known)] if c]
        if close:
            raise ConfigError(f"{typed}: {key} is not a key of this command; did you mean {close[0]}?")
        if process_rank() == 0:  # (once, not by every DDP process)
            log.warning(
                "%s: %s is no key of this command, and nothing in its config reads it (as ${%s}): it changes nothing",
                typed,
                key,
                key,
            )


def _check_added_setting(cfg: DictConfig, key: str, typed: str) -> None:
    """Raise a ConfigError for ``key`` added to a node of plain settings (no ``_target_``, values only:
    ``paths``) where it is close to one of that node's keys and nothing reads it (`check_added_keys`).
    A node that builds an object has its keys checked against what it builds; one of nodes (``callbacks``)
    takes new ones."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else None
    if not isinstance(node, DictConfig) or "_target_" in node:
        return
    siblings = [str(k) for k in node if k != name]
    if any(isinstance(node._get_node(k), DictConfig) for k in siblings):
        return
    close = closest_key(name, siblings)
    if close and not _interpolated(key, cfg, HydraConfig.get()):
        raise ConfigError(f"{typed}: {parent} has no key {name}; did you mean {parent}.{close}?")


def check_keys_of_config_files(cfg: DictConfig, known: set[str], overrides: list[str]) -> None:
    """Raise a ConfigError for a top-level key that a config file (the user's own, ``--config-dir``) set
    and is none of the ``known`` keys and groups, where the file misses its package line or the key is
    close to one of them: ``experiment/mine.yaml`` without ``# @package _global_`` put its settings under
    ``experiment``, and ``cpu_thread: 1`` stood for ``cpu_threads``; both ran as if not written. A key
    that a value reads (``${steps}``) is the user's own variable; one like none of the command's keys
    that nothing reads gets the warning a ``+key`` does (`check_added_keys`)."""
    hydra = HydraConfig.get()
    typed = {top_key(o) for o in overrides}
    nodes = {top_key(o) for o in overrides if "." in override_key(o)}
    for key in cfg:
        package = _packages().get(key) if key not in nodes else None  # (+size.dim=64: the command line's)
        if package is not None:  # (ttt-mm's own options of this group all declare it: the user's lacked it)
            choice = hydra.runtime.choices.get(key)
            raise ConfigError(
                f"{key}={choice} put its settings under {key}.*, where nothing reads them: begin its file "
                f"({key}/{choice}.yaml) with the line  # @package {package}  as ttt-mm's own {key} configs do"
            )
        if key in known or key in typed or _interpolated(str(key), cfg, hydra):  # (a variable of the user's own)
            continue  # (a key added on the command line: `check_added_keys`)
        close = _closest(str(key), known)
        if close:
            raise ConfigError(f"{key} (set in a config file) is not a key of this command; did you mean {close}?")
        if process_rank() == 0:
            log.warning("%s: a config file sets it, but it is no key of this command and nothing reads it", key)


def _closest(key: str, known: set[str]) -> str | None:
    return closest_key(key, sorted(known - {"defaults", "hydra"}))


@functools.cache
def _packages() -> dict[str, str]:
    """The config groups whose options ttt-mm ships all under another package than the group's name
    (``experiment``: ``_global_``; ``size``: ``model.backbone``), by group."""
    packages = {}
    for group in Path(CONF_DIR).iterdir():
        declared = set()
        for option in group.glob("*.yaml") if group.is_dir() else ():
            found = re.search(r"^# @package (\S+)", option.read_text(), re.MULTILINE)
            declared.add(found[1] if found else group.name)
        if len(declared) == 1 and (package := declared.pop()) != group.name:
            packages[group.name] = package
    return packages


def _interpolated(key: str, *configs: DictConfig) -> bool:
    """Whether a value of these configs, as written, reads ``key`` (top-level or dotted: `reads`)."""
    return any(reads(OmegaConf.to_yaml(c, resolve=False), key) for c in configs)


def _kind(default):
    """The annotation a shipped value stands for: a number's or true/false's type, or a list of its
    items' one type (a string may stand for a path or a name, which may read as a number: unchecked)."""
    if isinstance(default, (bool, int, float)):
        return type(default)
    if isinstance(default, list):
        kinds = {str if isinstance(v, str) else _kind(v) for v in default}
        return list[kinds.pop()] if len(kinds) == 1 and None not in kinds else list
    return None


def _message(name: str, hint, value) -> str:
    text = f"{name} must be {_described(hint)}; got {_shown(value)}"
    if isinstance(value, float) and value.is_integer() and _fits(int(value), hint):
        text += f" (a number with a decimal point or an exponent is not whole: write {int(value)})"
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and _fits(str(value), hint):
        key = name.split(" ")[0]  # (without the interpolation it came from)
        text += quote_it(key)
    return text


def _built_nodes(node, path: str) -> Iterator[tuple[str, DictConfig]]:
    """``(key path, node)`` of every mapping with a ``_target_`` (those in lists are not walked)."""
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


@functools.cache
def _annotations(target) -> tuple[dict[str, Any], dict[str, inspect.Parameter]]:
    """The annotations of ``target``'s parameters (a class's ``__init__``), each evaluated on its own:
    one that names something imported only for type checkers leaves just that parameter unchecked.
    Read once per target (the names and the values of a config node are checked against them apart)."""
    try:
        params = dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):  # (a builtin without a signature)
        return {}, {}
    function = inspect.unwrap(target.__init__ if isinstance(target, type) else target)
    namespace = getattr(function, "__globals__", {})
    hints = {}
    for name, param in params.items():
        hint = param.annotation
        if isinstance(hint, str):  # (postponed: `from __future__ import annotations`)
            try:
                hint = eval(hint, namespace)  # what typing.get_type_hints does, one parameter at a time
            except Exception:
                continue
        if hint is not inspect.Parameter.empty:
            hints[name] = hint
    return hints, params


def _fits(value, hint) -> bool | None:
    """Whether ``value`` (plain, from a config) matches ``hint``: True, False, or `UNKNOWN` where the
    hint is not one of the plain types a config can hold."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return _any(_fits(value, arm) for arm in args)
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
    if hint in PATHS:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False  # (a string too: it would be read one character at a time)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and _every(_fits(v, a) for v, a in zip(value, args, strict=True))
        return _every(_fits(v, args[0]) for v in value) if args else True
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping)
    return UNKNOWN


def _any(answers) -> bool | None:
    """True if any answer is, else UNKNOWN if any is, else False."""
    answers = list(answers)
    return True if True in answers else UNKNOWN if UNKNOWN in answers else False


def _every(answers) -> bool | None:
    """False if any answer is, else UNKNOWN if any is, else True."""
    answers = list(answers)
    return False if False in answers else UNKNOWN if UNKNOWN in answers else True


PATHS = (Path, PurePath, os.PathLike)
PLAIN = {
    type(None): "null",
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    dict: "a mapping",
    Mapping: "a mapping",
    list: "a list",
    tuple: "a list",
    Sequence: "a list",
    **dict.fromkeys(PATHS, "a path"),
}


def _described(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):  # Literal arms read as one list of choices; a path takes strings
        choices = [c for a in args if typing.get_origin(a) is Literal for c in typing.get_args(a)]
        others = [a for a in args if typing.get_origin(a) is not Literal and not (a is str and set(args) & set(PATHS))]
        described = ([_described(Literal[tuple(choices)])] if choices else []) + [_described(a) for a in others]
        return " or ".join(dict.fromkeys(described))
    if origin is Literal:
        return "one of " + ", ".join(_shown(a) for a in args)
    if origin in (list, tuple, Sequence) and args:
        if origin is tuple and args[-1] is not Ellipsis:
            if len(set(args)) == 1:
                return f"a list of {len(args)} ({_described(args[0])} each)"
            return f"a list of {len(args)}: " + ", ".join(_described(a) for a in args)
        return f"a list (of {_described(args[0])} each)"
    return PLAIN.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value) -> str:
    """A value as it would be written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)
