"""Long inputs through a streaming mixer a piece at a time: every temporary stays the size of a piece,
and, because the mixer streams exactly, the result is the same as one call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

S = TypeVar("S")


def in_pieces(step: Callable[[Tensor, S], tuple[Tensor, S]], x: Tensor, state: S, tokens: int) -> tuple[Tensor, S]:
    """``step`` over ``x [B, T, C]`` in pieces of ``tokens`` along ``T``, carrying the state."""
    if x.shape[1] <= tokens:
        return step(x, state)
    ys = []
    for piece in x.split(tokens, dim=1):
        y, state = step(piece, state)
        ys.append(y)
    return torch.cat(ys, dim=1), state
