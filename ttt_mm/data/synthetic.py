"""Procedural audio-visual clips that need no files: deterministic, any length, cheap to make.

A clip is a pure function of ``(seed, index)`` and time, so any window of an hour-long clip is
generated directly (closed-form motion, no simulation from time 0) and always comes out the same.
Each clip has:

- 1 to 3 colored squares bouncing off the frame edges; every bounce plays a short decaying tone
  at the square's own pitch, so sound events line up with visible events (the label of a clip is
  its number of squares minus one, for probes);
- a chain of notes, one every 0.25 s, each seen as its own mosaic filling the frame and heard as a
  tone. Every second the chain jumps to a random note, then follows a successor rule drawn per clip
  (a random cycle through the 16 notes) for three steps. The rule can only be learned from the
  clip itself, one transition at a time, so prediction keeps improving while new transitions are
  seen: at 3 a second, seeing all 16 takes about 15 s (10 to 26 s);
- a faint noise floor (seeded per second of audio, so windows agree wherever they are cut).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

_NOISE = 0.003
_PENTATONIC = np.array([0, 2, 4, 7, 9])
NOTES = 16  # entries of the chain: pentatonic degrees from C4 up, each with its own picture
STEP = 0.25  # seconds between chain notes
OFFSET = 0.125  # first change: at 8 fps every 2-frame tubelet holds one change
RUN = 4  # chain notes per random jump (one jump a second)


def _midi_hz(note: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(note, dtype=np.float64) - 69) / 12)


def _hue_rgb(hue: np.ndarray) -> np.ndarray:
    """Saturated colors for hues in [0, 1): ``[..., 3]`` floats in [0, 1]."""
    k = (hue[..., None] * 6 + np.array([0.0, 4.0, 2.0])) % 6
    return np.clip(np.minimum(k, 4 - k), 0, 1) * 0.8 + 0.2


_DEGREES = np.arange(NOTES)
NOTE_HZ = _midi_hz(60 + 12 * (_DEGREES // len(_PENTATONIC)) + _PENTATONIC[_DEGREES % len(_PENTATONIC)])
TILE = 3  # cells per side of a note's tile; the frame shows 2 x 2 tiles
# Each note's picture: a fixed mosaic of random colors, so different notes look unrelated even
# after a linear patch embedding (a plain color per note would give only 3 numbers to tell 16 apart)
NOTE_PATTERN = np.random.default_rng(20261127).uniform(0.1, 0.9, (NOTES, TILE, TILE, 3))


class Event(NamedTuple):
    """A sound: a bounce of a square or a chain note."""

    time: float
    hz: float
    amplitude: float
    decay: float  # seconds
    length: float  # seconds
    kind: str  # "bounce" or "note"


NAME_PREFIX = "synthetic/"
"""How every synthetic clip's name begins (what tells a checkpoint's record of synthetic clips from one of files)."""


@dataclass(frozen=True)
class _Scene:
    start: np.ndarray  # [K, 2] top-left corner (x, y) at t = 0, in frame units
    velocity: np.ndarray  # [K, 2] frame units per second
    half: np.ndarray  # [K] half side, frame units
    color: np.ndarray  # [K, 3]
    pitch: np.ndarray  # [K] Hz of each square's bounce tone
    decay: np.ndarray  # [K] seconds
    successor: np.ndarray  # [NOTES] the clip's chain rule: note n is followed by successor[n] (one cycle)


@dataclass(frozen=True)
class SyntheticClip:
    """One procedural clip; ``duration`` only bounds reads (the content is defined for all t >= 0)."""

    seed: int
    index: int
    duration: float = 60.0

    def __str__(self) -> str:
        return f"{NAME_PREFIX}seed={self.seed}/index={self.index}"

    @cached_property
    def scene(self) -> _Scene:
        rng = np.random.default_rng([self.seed, self.index, 7])
        k = int(rng.integers(1, 4))
        half = rng.uniform(0.06, 0.12, k)
        speed, angle = rng.uniform(0.15, 0.5, k), rng.uniform(0, 2 * math.pi, k)
        velocity = np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=1)
        velocity[np.abs(velocity) < 0.05] = 0.05  # every square bounces on both axes eventually
        order = rng.permutation(NOTES)  # the chain rule walks one cycle through all notes
        return _Scene(
            start=rng.uniform(0, 1, (k, 2)) * (1 - 2 * half[:, None]),
            velocity=velocity,
            half=half,
            color=_hue_rgb(rng.uniform(0, 1, k)),
            pitch=_midi_hz(rng.choice(np.arange(48, 84, 3), k, replace=False)),
            decay=rng.uniform(0.05, 0.2, k),
            successor=np.roll(order, -1)[np.argsort(order)],
        )

    @cached_property
    def _powers(self) -> np.ndarray:
        """``[RUN, NOTES]``: row ``r`` maps a note to the one ``r`` steps later along the chain."""
        rows = [np.arange(NOTES)]
        for _ in range(RUN - 1):
            rows.append(self.scene.successor[rows[-1]])
        return np.stack(rows)

    @property
    def label(self) -> int:
        return len(self.scene.half) - 1

    def chain(self, steps: np.ndarray) -> np.ndarray:
        """The chain note of each step index (step ``j`` sounds from ``(j - 0.5) * STEP``, 0 for j = 0)."""
        steps = np.asarray(steps, dtype=np.int64)
        blocks = steps // RUN
        first = {
            int(b): int(np.random.default_rng([self.seed, self.index, int(b), 3]).integers(NOTES))
            for b in np.unique(blocks)
        }
        return self._powers[steps % RUN, np.array([first[int(b)] for b in blocks.ravel()]).reshape(steps.shape)]

    def step_at(self, times: np.ndarray) -> np.ndarray:
        """The chain step sounding at each time (>= 0)."""
        return np.floor((np.asarray(times, dtype=np.float64) + STEP - OFFSET) / STEP + 1e-9).astype(np.int64)

    def positions(self, times: np.ndarray) -> np.ndarray:
        """Top-left corners ``[T, K, 2]`` at ``times``: straight motion folded into the frame."""
        s = self.scene
        span = (1 - 2 * s.half)[None, :, None]
        unfolded = s.start[None] + s.velocity[None] * times[:, None, None]
        folded = np.mod(unfolded, 2 * span)
        return np.where(folded <= span, folded, 2 * span - folded)

    def events(self, t0: float, t1: float) -> list[Event]:
        """Sounds starting in ``[t0, t1)`` (and at or after 0)."""
        s, events = self.scene, []
        t0 = max(t0, 0.0)
        if t1 <= t0:
            return events
        for j in range(len(s.half)):  # bounces: the unfolded coordinate crosses a multiple of span
            span = 1 - 2 * s.half[j]
            for axis in range(2):
                p0, v = s.start[j, axis], s.velocity[j, axis]
                lo, hi = sorted((p0 + v * t0, p0 + v * t1))
                for m in range(math.floor(lo / span) + 1, math.floor(hi / span) + 1):
                    t = (m * span - p0) / v
                    if t0 <= t < t1:
                        events.append(Event(t, s.pitch[j], 0.3 / len(s.half), s.decay[j], 6 * s.decay[j], "bounce"))
        steps = np.arange(math.floor(t0 / STEP), math.ceil(t1 / STEP) + 2)
        onsets = np.maximum((steps - 0.5) * STEP, 0.0)
        keep = (onsets >= t0) & (onsets < t1)
        for t, note in zip(onsets[keep], self.chain(steps[keep])):
            events.append(Event(float(t), float(NOTE_HZ[note]), 0.2, STEP / 3, STEP, "note"))
        return events

    def audio(self, start: float, duration: float, sample_rate: int = 16000) -> Tensor:
        """float32 mono ``[round(duration * sample_rate)]`` samples from ``start`` (zeros before 0)."""
        n = round(duration * sample_rate)
        first = round(start * sample_rate)
        out = np.zeros(n, dtype=np.float64)
        for block in range(max(first, 0) // sample_rate, -(-(first + n) // sample_rate)):
            noise = np.random.default_rng([self.seed, self.index, block, 1]).standard_normal(sample_rate)
            lo, hi = max(block * sample_rate, first, 0), min((block + 1) * sample_rate, first + n)
            out[lo - first : hi - first] = _NOISE * noise[lo - block * sample_rate : hi - block * sample_rate]
        longest = max(6 * 0.2, STEP)
        for t, hz, amp, decay, length, _ in self.events(start - longest, start + duration):
            i0 = max(0, math.ceil(t * sample_rate) - first)
            i1 = min(n, math.ceil((t + length) * sample_rate) - first)
            if i1 <= i0:
                continue
            age = (first + np.arange(i0, i1)) / sample_rate - t
            envelope = np.minimum(age / 0.005, 1.0) * np.exp(-age / decay) * np.minimum((length - age) / 0.01, 1.0)
            out[i0:i1] += amp * envelope * (np.sin(2 * np.pi * hz * age) + 0.3 * np.sin(4 * np.pi * hz * age))
        return torch.from_numpy(out.astype(np.float32))

    def video(self, start: float, duration: float, fps: float = 8.0, size: int = 128) -> Tensor:
        """uint8 ``[ceil(duration * fps), 3, size, size]`` frames at ``start + k / fps``."""
        count = max(0, math.ceil(duration * fps - 1e-6))
        times = start + np.arange(count) / fps
        s = self.scene
        cells = np.arange(size) * 2 * TILE // size % TILE
        notes = self.chain(self.step_at(np.maximum(times, 0.0)))
        frames = (NOTE_PATTERN[notes][:, cells][:, :, cells] * 255).astype(np.uint8)  # [T, size, size, 3]
        corners = np.round(self.positions(times) * size).astype(int)  # [T, K, 2]
        sides = np.maximum(1, np.round(2 * s.half * size).astype(int))
        colors = (s.color * 255).astype(np.uint8)
        for k in range(count):
            for j in range(len(sides)):
                x, y = corners[k, j]
                frames[k, y : y + sides[j], x : x + sides[j]] = colors[j]
        return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
