"""Window-by-window embedding of one input: the backbone state carried between windows, rows
kept per whole token step, optional downsampling to a fixed hop, running pooled statistics, and
the `Clock` that gives every row its timestamp. `ttt_mm.embedder.Embedder` drives it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ttt_mm.backbone import BackboneState

if TYPE_CHECKING:
    from ttt_mm.embedder import Embedder

MIXED = -1
"""Modality id of downsampled rows that average audio and video tokens."""


# ------------------------------------------------------------------------------------ the clock


@dataclass
class Clock:
    """Where every row sits in time, without listing the rows.

    Rows come in groups ("steps") of ``len(slot_offsets)``; step ``s`` starts at
    ``start + s * seconds_per_step`` and its row ``j`` at that plus ``slot_offsets[j]``, with
    modality ``slot_modality[j]``. ``steps`` lists the steps present as half-open ranges (one range
    unless some step had to be left out). For downsampled rows a step is a bin of ``hop`` seconds
    with one slot.
    """

    start: float
    seconds_per_step: float
    slot_offsets: tuple[float, ...]
    slot_modality: tuple[int, ...]
    steps: list[tuple[int, int]] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return len(self.slot_offsets) * sum(b - a for a, b in self.steps)

    def step_indices(self) -> Tensor:
        """Index of the step of every row ``[N]`` (long)."""
        if not self.steps:
            return torch.zeros(0, dtype=torch.long)
        steps = torch.cat([torch.arange(a, b) for a, b in self.steps])
        return steps.repeat_interleave(len(self.slot_offsets))

    def timestamps(self) -> Tensor:
        """Seconds from the file start of every row, ``[N]`` float64."""
        steps = self.step_indices().double()
        offsets = torch.tensor(self.slot_offsets, dtype=torch.float64).repeat(
            len(steps) // max(1, len(self.slot_offsets))
        )
        return self.start + steps * self.seconds_per_step + offsets

    def modality(self) -> Tensor:
        """Modality of every row ``[N]`` (int8: 0 audio, 1 video, -1 mixed)."""
        return torch.tensor(self.slot_modality, dtype=torch.int8).repeat(
            self.num_rows // max(1, len(self.slot_offsets))
        )

    def add(self, first: int, count: int) -> None:
        """Record steps ``first .. first + count - 1`` (in order), merging contiguous ranges."""
        if count <= 0:
            return
        if self.steps and self.steps[-1][1] == first:
            self.steps[-1] = (self.steps[-1][0], first + count)
        else:
            self.steps.append((first, first + count))

    def to_json(self) -> dict:
        return {
            "start": self.start,
            "seconds_per_step": self.seconds_per_step,
            "slot_offsets": list(self.slot_offsets),
            "slot_modality": list(self.slot_modality),
            "steps": [list(r) for r in self.steps],
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Clock:
        return cls(
            float(data["start"]),
            float(data["seconds_per_step"]),
            tuple(float(x) for x in data["slot_offsets"]),
            tuple(int(x) for x in data["slot_modality"]),
            [(int(a), int(b)) for a, b in data["steps"]],
        )


# ------------------------------------------------------------------------------------ streaming


class Stream:
    """One input being embedded: `push` its window batches in order, then `finish`.

    Each call returns the rows that became final, ``[B, n, D]`` float32 on the CPU (n may be 0);
    `clock` and `pooled` describe everything returned so far.
    """

    def __init__(self, embedder: Embedder, start: float = 0.0) -> None:
        self.embedder, self.start = embedder, float(start)
        self.state: BackboneState | None = None
        if embedder.hop_seconds is None:
            self.clock = Clock(self.start, embedder.seconds_per_step, embedder.slot_offsets, embedder.slot_modality)
        else:
            modalities = set(embedder.modality_ids)
            mixed = modalities.pop() if len(modalities) == 1 else MIXED
            self.clock = Clock(self.start, embedder.hop_seconds, (0.0,), (mixed,))
        self.batch_size = 1
        self.num_tokens = 0
        self._sum = self._sumsq = self._max = None  # pooling accumulators [B, D]
        self._bin: tuple[int, Tensor, int] | None = None  # open bin: (index, sum [B, D] float64, tokens)

    @torch.inference_mode()
    def push(self, batch: Mapping[str, Any]) -> Tensor:
        """Embed the next window (a collated batch as `ttt_mm.data.iter_windows` yields)."""
        e = self.embedder
        device = e.device
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        tokens = e.tokenizer(batch)
        _, hidden, self.state = e.backbone.forward_intermediates(tokens.embeddings, self.state, layers=(e.layer,))
        h = e.backbone.norm(hidden[0]) if e.norm else hidden[0]  # [B, N, D]
        B, N, D = h.shape
        k = e.tokens_per_step
        if N % k:
            raise ValueError(f"the tokenizer returned {N} tokens, not a whole number of steps of {k}")
        window_start = float(torch.as_tensor(batch.get("start", 0.0), dtype=torch.float64).reshape(-1)[0])
        first = (window_start - self.start) / e.seconds_per_step
        if abs(first - round(first)) > 1e-6:
            raise ValueError(
                f"a window starts {window_start - self.start:.6f} s into the input, not on the "
                f"{e.seconds_per_step} s step grid: use windows whose length is a multiple of it"
            )
        self.batch_size = B
        keep = tokens.mask.reshape(B, N // k, k).all(-1).all(0)  # [S] steps whose tokens are all real
        steps = round(first) + keep.nonzero().squeeze(1).cpu()
        rows = h.reshape(B, N // k, k, D)[:, keep].reshape(B, -1, D).float().cpu()
        self._pool(rows)
        if e.hop_seconds is None:
            for a, count in _runs(steps):
                self.clock.add(a, count)
            return rows
        return self._downsample(rows, steps)

    def finish(self) -> Tensor:
        """Rows still held back (the last open bin when downsampling)."""
        if self._bin is None:
            return torch.zeros(self.batch_size, 0, self.embedder.dim)
        index, total, count = self._bin
        self._bin = None
        self.clock.add(index, 1)
        return (total / count).float().unsqueeze(1)

    def pooled(self) -> Tensor | None:
        """The pooled vector of every batch row ``[B, P]`` over all tokens so far (None: pooling off)."""
        pool = self.embedder.pool
        if pool is None:
            return None
        if self.num_tokens == 0:
            raise ValueError("no token to pool: the input is shorter than one token step")
        mean = self._sum / self.num_tokens
        if pool == "mean":
            return mean.float()
        if pool == "max":
            return self._max.float()
        std = (self._sumsq / self.num_tokens - mean**2).clamp_min(0).sqrt()
        return torch.cat([mean, std], dim=-1).float()

    def _pool(self, rows: Tensor) -> None:
        if self.embedder.pool is None or rows.shape[1] == 0:
            self.num_tokens += rows.shape[1]
            return
        x = rows.double()
        if self._sum is None:
            self._sum, self._sumsq = torch.zeros_like(x[:, 0]), torch.zeros_like(x[:, 0])
            self._max = torch.full_like(x[:, 0], -math.inf)
        self._sum += x.sum(1)
        self._sumsq += (x * x).sum(1)
        self._max = torch.maximum(self._max, x.amax(1))
        self.num_tokens += rows.shape[1]

    def _downsample(self, rows: Tensor, steps: Tensor) -> Tensor:
        """Close the bins that can no longer grow; keep the last one open."""
        e = self.embedder
        B, _, D = rows.shape
        if len(steps) == 0:
            return rows.new_zeros(B, 0, D)
        # bin of each kept step: floor(step * p / hop), with a tolerance for 0.04 * 25 != 1.0
        bins = torch.floor(steps.double() * e.seconds_per_step / e.hop_seconds + 1e-9).long()
        bins = bins.repeat_interleave(e.tokens_per_step)
        ids, counts = torch.unique_consecutive(bins, return_counts=True)
        segment = torch.repeat_interleave(torch.arange(len(ids)), counts)
        sums = rows.new_zeros(B, len(ids), D, dtype=torch.float64).index_add_(1, segment, rows.double())
        out = []
        if self._bin is not None:
            index, total, count = self._bin
            if index == int(ids[0]):
                sums[:, 0] += total
                counts[0] += count
            else:
                self.clock.add(index, 1)
                out.append((total / count).unsqueeze(1))
        for j in range(len(ids) - 1):
            self.clock.add(int(ids[j]), 1)
        self._bin = (int(ids[-1]), sums[:, -1], int(counts[-1]))
        out.append(sums[:, :-1] / counts[:-1, None].double())
        return torch.cat(out, dim=1).float()


def _runs(steps: Tensor) -> Iterator[tuple[int, int]]:
    """Contiguous runs ``(first, length)`` of a sorted index tensor."""
    if len(steps) == 0:
        return
    breaks = (torch.diff(steps) != 1).nonzero().squeeze(1) + 1
    bounds = [0, *breaks.tolist(), len(steps)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        yield int(steps[a]), b - a
