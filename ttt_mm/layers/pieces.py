"""Long inputs through a streaming mixer a piece at a time: every temporary stays the size of a piece,
and, because the mixer streams exactly, the result is the same as one call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

S = TypeVar("S")

# Off the CPU, pieces are a question of kernel launches, not of caches: every piece costs the same
# launches whatever its length (LaCT: about 160 per piece, TTT: dozens), and the host waits on them,
# so a 64k-token sequence in CPU-sized pieces of 2048 would be bound by launches. Temporaries of a
# piece this long are still small beside a GPU's memory (about 100 MiB per batch row at width 1024).
DEVICE_PIECE_TOKENS = 16384


def piece_tokens(x: Tensor, cpu_tokens: int) -> int:
    """Tokens per piece for ``x``'s device: ``cpu_tokens`` (sized for the caches) on the CPU, at least
    `DEVICE_PIECE_TOKENS` elsewhere."""
    return cpu_tokens if x.device.type == "cpu" else max(cpu_tokens, DEVICE_PIECE_TOKENS)


def in_pieces(step: Callable[[Tensor, S], tuple[Tensor, S]], x: Tensor, state: S, tokens: int) -> tuple[Tensor, S]:
    """``step`` over ``x [B, T, C]`` in pieces of ``tokens`` along ``T``, carrying the state."""
    if x.shape[1] <= tokens:
        return step(x, state)
    ys = []
    for piece in x.split(tokens, dim=1):
        y, state = step(piece, state)
        ys.append(y)
    return torch.cat(ys, dim=1), state
