"""The timestamps of embedding rows in compact form: what the ``.json`` sidecar stores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

MIXED = -1
"""Modality id of downsampled rows that average audio and video tokens."""


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

    def add_runs(self, steps: Tensor) -> None:
        """Record the steps of a sorted index tensor, run by run."""
        if len(steps) == 0:
            return
        breaks = (torch.diff(steps) != 1).nonzero().squeeze(1) + 1
        bounds = [0, *breaks.tolist(), len(steps)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            self.add(int(steps[a]), b - a)

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
