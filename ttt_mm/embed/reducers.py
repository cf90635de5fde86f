"""Running reductions over the rows of one streamed input: a pooled vector, and bins of a fixed hop.

Both see the rows window by window and keep only fixed-size sums, so an input of any length costs
the memory of one window.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

from ttt_mm.embed.clock import Clock

PoolKind = Literal["mean", "max", "mean_std"]
POOLS: tuple[str, ...] = get_args(PoolKind)


class Pool:
    """The pooled vector of every batch row over all rows added: ``"mean"``, ``"max"`` or
    ``"mean_std"`` (mean and population standard deviation concatenated); float64 sums."""

    def __init__(self, kind: PoolKind) -> None:
        if kind not in POOLS:
            raise ValueError(f"pool must be one of {POOLS} or None; got {kind!r}")
        self.kind, self.count = kind, 0
        self._sum = self._sumsq = self._max = None  # [B, D]

    def add(self, rows: Tensor) -> None:
        """Rows ``[B, n, D]`` (n may be 0)."""
        if rows.shape[1] == 0:
            return
        x = rows.double()
        if self._sum is None:
            self._sum, self._sumsq = torch.zeros_like(x[:, 0]), torch.zeros_like(x[:, 0])
            self._max = torch.full_like(x[:, 0], -math.inf)
        self._sum += x.sum(1)
        self._sumsq += (x * x).sum(1)
        self._max = torch.maximum(self._max, x.amax(1))
        self.count += rows.shape[1]

    def result(self) -> Tensor:
        """``[B, P]`` float32 (``P = 2D`` for ``"mean_std"``, else ``D``)."""
        if self.count == 0:
            raise ValueError("no token to pool: the input is shorter than one token step")
        mean = self._sum / self.count
        if self.kind == "mean":
            return mean.float()
        if self.kind == "max":
            return self._max.float()
        return mean_and_std(mean, self._sumsq / self.count).float()


def mean_and_std(mean: Tensor, mean_square: Tensor) -> Tensor:
    """``[..., 2D]``: the mean and the population standard deviation, from the mean and the mean square."""
    return torch.cat([mean, (mean_square - mean.square()).clamp_min(0).sqrt()], dim=-1)


class HopBins:
    """Means of the rows whose step starts in ``[k * hop, (k + 1) * hop)`` seconds, closed in order.

    ``push`` returns the bins that can no longer grow; the last one stays open until `finish`.
    Every closed bin is recorded in ``clock`` (a `Clock` of one slot per bin), where one is given.
    Sums are float64, the means returned in the rows' dtype (float64 rows keep a difference of two
    means exact enough for a standard deviation).
    """

    def __init__(
        self, seconds_per_step: float, hop_seconds: float, tokens_per_step: int, clock: Clock | None = None
    ) -> None:
        self.seconds_per_step, self.hop_seconds, self.tokens_per_step = seconds_per_step, hop_seconds, tokens_per_step
        self.clock = clock
        self._open: tuple[int, Tensor, int] | None = None  # (bin index, sum [B, D] float64, rows)
        self.dtype = torch.float32  # the rows' (set by `push`)

    def push(self, rows: Tensor, steps: Tensor) -> Tensor:
        """Rows ``[B, n, D]`` of the steps ``steps [n / tokens_per_step]`` -> closed bins ``[B, m, D]``."""
        B, _, D = rows.shape
        self.dtype = rows.dtype
        if len(steps) == 0:
            return rows.new_zeros(B, 0, D)
        # bin of each kept step: floor(step * p / hop), with a tolerance for 0.04 * 25 != 1.0
        bins = torch.floor(steps.double() * self.seconds_per_step / self.hop_seconds + 1e-9).long()
        bins = bins.repeat_interleave(self.tokens_per_step)
        ids, counts = torch.unique_consecutive(bins, return_counts=True)
        segment = torch.repeat_interleave(torch.arange(len(ids)), counts)
        sums = rows.new_zeros(B, len(ids), D, dtype=torch.float64).index_add_(1, segment, rows.double())
        out = []
        if self._open is not None:
            index, total, count = self._open
            if index == int(ids[0]):
                sums[:, 0] += total
                counts[0] += count
            else:
                self._closed(index)
                out.append((total / count).unsqueeze(1))
        for j in range(len(ids) - 1):
            self._closed(int(ids[j]))
        self._open = (int(ids[-1]), sums[:, -1], int(counts[-1]))
        out.append(sums[:, :-1] / counts[:-1, None].double())
        return torch.cat(out, dim=1).to(self.dtype)

    def finish(self, batch_size: int, dim: int) -> Tensor:
        """The open bin ``[B, 1, D]`` (``[B, 0, D]`` when there is none)."""
        if self._open is None:
            return torch.zeros(batch_size, 0, dim, dtype=self.dtype)
        index, total, count = self._open
        self._open = None
        self._closed(index)
        return (total / count).to(self.dtype).unsqueeze(1)

    def _closed(self, index: int) -> None:
        if self.clock is not None:
            self.clock.add(index, 1)
