"""Media in hand, windowed exactly like files: the protocol that procedural clips and decoded tensors
share, and tensors as media.

`ttt_mm.data.datasets` reads a window of a file through the decoders in `ttt_mm.data.decode` and a
window of anything else through this protocol, so files, synthetic clips and in-memory tensors
(`TensorMedia`, what ``Embedder.embed_tensor`` streams) are cut into the same windows with the same
audio context by the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Media(Protocol):
    """Media that needs no decoder. Time 0 is its start and ``duration`` its end, in seconds."""

    duration: float

    def audio(self, start: float, duration: float, sample_rate: int) -> Tensor:
        """float32 mono ``[round(duration * sample_rate)]`` from ``start`` (zeros before 0, cut at the end)."""
        ...

    def video(self, start: float, duration: float, fps: float, size: int) -> Tensor:
        """uint8 ``[ceil(duration * fps), 3, size, size]`` frames from ``start`` (cut at the end)."""
        ...


@dataclass(frozen=True)
class TensorMedia:
    """One decoded input: ``samples [n]`` at ``sample_rate`` and/or uint8 ``frames [T, 3, S, S]`` at
    ``fps``, the first of each at ``offset`` seconds. Windows are slices, never resampled: asking for
    another rate or frame size is an error."""

    samples: Tensor | None = None
    frames: Tensor | None = None
    sample_rate: int | None = None
    fps: float | None = None
    offset: float = 0.0
    name: str = "<tensor>"

    def __post_init__(self) -> None:
        if self.samples is None and self.frames is None:
            raise ValueError("TensorMedia needs samples, frames or both")
        if (self.samples is not None and not self.sample_rate) or (self.frames is not None and not self.fps):
            raise ValueError("give the sample_rate of samples and the fps of frames")

    def __str__(self) -> str:
        return self.name

    @property
    def duration(self) -> float:
        """The end in seconds: where the shorter of the streams ends."""
        ends = []
        if self.samples is not None:
            ends.append(len(self.samples) / self.sample_rate)
        if self.frames is not None:
            ends.append(len(self.frames) / self.fps)
        return self.offset + min(ends)

    def audio(self, start: float, duration: float, sample_rate: int) -> Tensor:
        if self.samples is None:
            raise ValueError(f"{self.name} holds no audio")
        if sample_rate != self.sample_rate:
            raise ValueError(f"{self.name} holds audio at {self.sample_rate} Hz, not {sample_rate} Hz")
        first = round(start * sample_rate) - round(self.offset * sample_rate)
        count = round(duration * sample_rate)
        out = torch.zeros(max(0, min(count, len(self.samples) - first)), dtype=torch.float32)
        lo = max(first, 0)
        if lo < first + len(out):
            out[lo - first :] = self.samples[lo : first + len(out)]
        return out

    def video(self, start: float, duration: float, fps: float, size: int) -> Tensor:
        if self.frames is None:
            raise ValueError(f"{self.name} holds no video")
        if abs(fps - self.fps) > 1e-9 or tuple(self.frames.shape[1:]) != (3, size, size):
            raise ValueError(
                f"{self.name} holds frames {tuple(self.frames.shape[1:])} at {self.fps} fps, not (3, {size}, {size}) "
                f"at {fps} fps"
            )
        first = round((start - self.offset) * fps)
        if first < 0:  # (frames from its first were given as if from ``start``: a window later gave them again)
            raise ValueError(f"{self.name}'s frames start at {self.offset:g} s, after {start:g} s")
        return self.frames[first : first + max(0, math.ceil(duration * fps - 1e-6))]
