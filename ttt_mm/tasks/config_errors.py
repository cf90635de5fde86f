"""A config mistake said on one line that names the key to fix: the error a check raises
(`ConfigError`), and the messages for what a constructor or an interpolation raised."""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Iterator
from difflib import get_close_matches

from hydra.errors import InstantiationException
from omegaconf.errors import InterpolationKeyError

from ttt_mm.data.index import IndexCacheError
from ttt_mm.messages import root_cause


class ConfigError(ValueError):
    """A config value that cannot work; the message says which key and why."""


def quote_it(key: str, what: str = "name or path") -> str:
    """The hint for a text value Hydra read as a number (``output=2024``): quoted, it stays text."""
    return f" (to give a {what} that reads as a number, quote it: {key}=\"'<as typed>'\")"


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
    taken = ""
    if raised_in is not None:
        key, node = raised_in
        name, _, rest = text.partition(" ")
        if name in node and rest.startswith("must "):
            source = _taken_from(str(node[name]))
            return f"{source[1] if source else f'{key}.{name}'} {rest}"
        # the node's values the message names that another key sets (a video tokenizer's size: data.size)
        named = [
            f"{arg} from {m[1]}"
            for arg, v in node.items()
            if (m := _taken_from(v)) and re.search(rf"\b{arg}\b", text) and not isinstance(_at(settings, m[1]), dict)
        ]
        taken = f"; its {', '.join(named)}" if named else ""
    where = f" (config key '{key}'{taken})" if key else ""
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


def _at(settings: dict | None, key: str):
    """The value at a dotted ``key`` of ``settings`` (plain containers), or None."""
    node = settings
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _taken_from(value) -> re.Match | None:
    """The key a value is read from, where it is a bare interpolation (``${data.size}``)."""
    return re.fullmatch(r"\$\{([\w.]+)\}", value) if isinstance(value, str) else None


def interpolation_message(err: InterpolationKeyError, settings: dict | None) -> str:
    """``${data.clip_len}`` read where no such key is (a config file's or an override's), on one line:
    the key whose value reads it, and the key of that name's node it most likely meant."""
    named = m[1] if (m := re.search(r"Interpolation key '([^']*)'", str(err))) else None
    key = getattr(err, "full_key", None) or (named and next(_keys_reading(settings, named), None))
    where = f"{key}: " if key else ""
    if named is None:
        return f"{where}an interpolation names no key of this command's config ({str(err).strip()})"
    parent, _, name = named.rpartition(".")
    node = _at(settings, parent) if parent else settings
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
