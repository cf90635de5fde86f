"""Training orders that survive a restart: an endless, seeded stream of random windows, and
streams of consecutive windows (whole files as one context) for training with carried state.

Both are pure functions of (seed, position) and the skip list, so a run resumed from a checkpoint
at optimizer step ``n`` continues with the data it would have seen, and each distributed rank takes
its own share without a distributed sampler. Failures are taken to be repeatable: the resumed run
finds the files that failed listed (a stream, with the second each failed at), and its readers do
what the interrupted run's did on reaching them. A read that hung past ``data.timeout`` may not
fail again; nor does a decoder crash list where in the file it happened (`ttt_mm.data.restarts`).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler

from ttt_mm.data import reading_notes
from ttt_mm.data.datasets import ReadSpec, clip_span, collate, read_item, window_spans
from ttt_mm.data.decode import MediaError, NotAsProbed
from ttt_mm.data.skiplist import SkipList, unusable_message
from ttt_mm.data.sources import ClipInfo

log = logging.getLogger(__name__)


def is_seed(value: object) -> bool:
    """Whether ``value`` is a seed NumPy and Lightning take: a whole number from 0 to 2**32 - 1."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled clip order of one pass over the training clips."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def shuffled_positions(size: int, seed: int, first: int, step: int) -> Iterator[tuple[int, int]]:
    """Endless ``(clip index, epoch)`` at global positions ``first, first + step, ...``: position ``g``
    is clip ``epoch_order(g // size)[g % size]``. Each epoch's order is drawn once (2 ms at 100k clips)."""
    g, cached = first, (None, None)
    while True:
        epoch, i = divmod(g, size)
        if cached[0] != epoch:
            cached = (epoch, epoch_order(size, seed, epoch))
        yield int(cached[1][i]), epoch
        g += step


class ResumableSampler(Sampler):
    """Endless ``(index, epoch)`` pairs for `WindowDataset`, starting at per-rank position ``start``.

    Global position ``g = p * world + rank`` is clip ``epoch_order(epoch)[g % size]`` of epoch
    ``g // size``. It has no length: training is counted in steps (``trainer.max_steps``).
    """

    def __init__(self, size: int, seed: int = 0, start: int = 0, rank: int = 0, world: int = 1) -> None:
        if size < 1:
            raise ValueError("no training clips to sample from")
        self.size, self.seed, self.start, self.rank, self.world = size, seed, start, rank, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return shuffled_positions(self.size, self.seed, self.start * self.world + self.rank, self.world)


class WindowDataset(Dataset):
    """Training: item ``i`` is a random window of ``clip_seconds`` from clip ``i`` (whole clip if shorter).

    The window start is on the ``1 / fps`` grid and drawn from ``(seed, epoch, i)``; index with
    ``(i, epoch)`` (as `ttt_mm.data.training_order.ResumableSampler` does) or a plain ``i`` for epoch 0.
    A clip that fails is replaced by another that reads, the first in a seeded order (`_candidates`).
    """

    def __init__(
        self,
        clips: Sequence[ClipInfo],
        clip_seconds: float,
        spec: ReadSpec = ReadSpec(),
        seed: int = 0,
        skip_list: SkipList | str | None = None,
    ) -> None:
        self.skips = skip_list if isinstance(skip_list, SkipList) else SkipList(skip_list)
        self.clips = list(clips)  # skip-listed ones too, replaced when drawn: indices keep their clips
        if self.skips.holds_all(self.clips):
            raise ValueError(f"no clips to read ({len(clips)} given, all in the skip list or none at all)")
        self.clip_seconds, self.spec, self.seed = clip_seconds, spec, seed

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        index, epoch = index if isinstance(index, tuple) else (index, 0)
        for i in self._candidates(index, epoch):
            clip = self.clips[i]
            if self.skips.holds(clip):
                continue
            rng = np.random.default_rng([self.seed, epoch, index] + ([] if i == index else [i + 1]))
            try:
                start, end = clip_span(clip, self.spec)
                length = min(self.clip_seconds, end - start)
                slots = math.floor((end - start - length) * self.spec.fps + 1e-6)
                offset = int(rng.integers(slots + 1)) / self.spec.fps
                with reading_notes.reading(clip.name):
                    return read_item(clip, start + offset, length, self.spec)
            except MediaError as exc:
                self.skips.add(exc.path, exc.reason)
        raise RuntimeError(unusable_message(self.clips, self.skips))

    def _candidates(self, index: int, epoch: int) -> Iterator[int]:
        """Clip ``index``, then the others in a seeded order of their own: a failed clip's stand-in is
        the first of them that reads, whatever other workers have listed meanwhile (a listed clip would
        fail too), so the data stays the same for any number of workers and in a resumed run."""
        yield index
        for i in np.random.default_rng([self.seed, epoch, index, 0]).permutation(len(self.clips)).tolist():
            if i != index:
                yield i


class StreamWindows(IterableDataset):
    """Batches in which row ``r`` walks its own run of clips, window by window, in order.

    Yields collated batches (use ``DataLoader(batch_size=None)``) with ``batch["reset"] [B]`` true
    where a row starts a new clip: the model restarts that row's state and carries the others; and
    ``batch["stream_step"]``, the batch's place in the stream: a stream started again at a later
    step (each epoch, a resumed run) goes on mid-clip, and a model carries its state into a batch
    only from the one just before (a resumed run, from the state its checkpoint saved at that step;
    without one, every row starts afresh). A clip's last
    window shorter than ``spec.min_seconds`` is left out: too short to train on.
    Clips come from the seeded epoch orders, row ``r`` of rank ``k`` taking every ``B * world``-th.
    ``start_step`` batches are skipped by arithmetic over clip durations, without decoding (a clip
    that the index did not probe, ``ClipInfo.info`` None, is probed for its duration).
    A clip whose window fails to read is logged and recorded in the skip list (a span of a file by its
    `ClipInfo.segment`: the file's other spans are read on) with that window's start, and its row moves
    on to the next clip; in later passes the clip's windows before that start are read again
    (`_row_windows`). One that fails before any window (`clip_span`: no such
    stream, too short) is listed whole, or its span alone.
    """

    def __init__(
        self,
        clips: Sequence[ClipInfo],
        window_seconds: float,
        batch_size: int,
        spec: ReadSpec,
        seed: int = 0,
        skip_list: SkipList | str | None = None,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.skips = skip_list if isinstance(skip_list, SkipList) else SkipList(skip_list)
        self.clips = list(clips)  # skip-listed ones too, passed over when read: the order stays that of the list
        if self.skips.none_readable(self.clips):
            raise ValueError(f"no clips to stream ({len(self.clips)} given, all in the skip list or none at all)")
        self.window, self.batch_size, self.spec, self.seed = window_seconds, batch_size, spec, seed
        self.start_step, self.rank, self.world = start_step, rank, world

    def _row_clips(self, row: int) -> Iterator[ClipInfo]:
        lane, lanes = row * self.world + self.rank, self.batch_size * self.world
        for index, _ in shuffled_positions(len(self.clips), self.seed, lane, lanes):
            yield self.clips[index]

    def _row_windows(self, row: int) -> Iterator[tuple[ClipInfo, float, float, bool]]:
        """``(clip, start, duration, first)`` for every window of the row, in order, but those of
        unreadable clips: a listed clip's windows from where its file failed (`SkipList.readable_until`)
        are left out as they come, so a read that fails ends its clip, and a resumed stream (the failure
        listed) counts the windows that the interrupted one read before it."""
        passed = 0  # clips in a row that gave no window: when that is all of them, check whether any is left
        for clip in self._row_clips(row):
            gave = False
            if self.skips.readable_until(clip) > clip.start:
                try:
                    start, end = clip_span(clip, self.spec)
                except MediaError as exc:
                    self.skips.add(exc.path, exc.reason)
                else:
                    for k, (t, duration) in enumerate(window_spans(start, end, self.window)):
                        if t >= self.skips.readable_until(clip):  # (listed meanwhile: the rest of it too)
                            break
                        if k == 0 or duration >= self.spec.min_seconds:  # (a tail too short to train on: left out)
                            gave = True
                            yield clip, t, duration, k == 0
            passed = 0 if gave else passed + 1
            if passed >= len(self.clips) and self.skips.none_readable(self.clips):
                raise RuntimeError(unusable_message(self.clips, self.skips))

    def __iter__(self) -> Iterator[dict]:
        rows = [self._row_windows(r) for r in range(self.batch_size)]
        for _ in range(self.start_step):  # fast-forward without decoding
            for windows in rows:
                next(windows)
        for step in itertools.count(self.start_step):
            items, reset = [], []
            for windows in rows:
                failed = False
                while True:
                    clip, start, duration, first = next(windows)
                    try:
                        with reading_notes.reading(clip.name):
                            items.append(read_item(clip, start, duration, self.spec))
                    except MediaError as exc:  # the row goes on with the next clip, its state restarted
                        part = exc.path == clip.name and not isinstance(exc, NotAsProbed)  # (else all of it)
                        # (part-way: this clip from there on; the file's other spans read on, as they did)
                        self.skips.add(clip.segment if part else exc.path, exc.reason, read_to=start if part else None)
                        failed = True
                        continue
                    reset.append(first or failed)
                    break
            batch = collate(items)
            batch["reset"] = torch.tensor(reset)
            batch["stream_step"] = torch.tensor(step)  # a model carries its state only from the batch before
            yield batch
