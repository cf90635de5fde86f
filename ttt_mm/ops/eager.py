"""Sequence ops that run as they are under ``torch.compile`` (see `ttt_mm.ops`).

``torch.compiler.disable`` applied when a module is imported would import dynamo and inductor with
it, about a second added to every command's start (embed, evaluate and the probe compile nothing):
so the op is disabled only once a compile reaches it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def eager_under_compile(fn: F) -> F:
    """``fn``, called as it is in eager code and through ``torch.compiler.disable`` while compiling."""

    @functools.wraps(fn)
    def op(*args, **kwargs):
        if torch.compiler.is_compiling():
            return torch.compiler.disable(fn)(*args, **kwargs)
        return fn(*args, **kwargs)

    # each op its own code object: dynamo compiles the wrapper's frame at every call (the graph breaks
    # there) and keys its cache by code, so one shared by every op hit its recompile limit, with warnings
    op.__code__ = op.__code__.replace(co_name=fn.__name__)  # (a new object, with the op's name in traces)
    return op  # type: ignore[return-value]
