"""Held-out clips of files a checkpoint's run trained on. A file's split is drawn from its name as the
data config lists it (relative to ``data.root`` for a folder, as written for a manifest, or its
manifest group's name) and from the split fractions, so the same files listed another way, or split
with other fractions, put training files in a held-out split: scoring them there would pass training
data for held-out data. Evaluate and a test-only training run leave them out, with one warning that
names them."""

from __future__ import annotations

import logging
import math
import os

from ttt_mm.data.clip_record import segment_span
from ttt_mm.data.sources import ClipInfo
from ttt_mm.data.synthetic import NAME_PREFIX
from ttt_mm.messages import first_of, one_line
from ttt_mm.tasks.common import ConfigError
from ttt_mm.tasks.run_folders import run_started_in

log = logging.getLogger(__name__)

TRAINED_ON_NAMED = 5
"""Training files found in a held-out split that the warning names; the rest are counted."""


def from_anywhere(files: set[str] | None, ckpt_path: str | os.PathLike) -> set[str] | None:
    """A checkpoint's training files or segments (`ttt_mm.checkpoint.trained_files`) as paths that hold
    from any folder: a relative one (its run's ``data.root`` was) joined to the folder its run started
    in, where known. Synthetic clips' names are no paths: they stay as they are."""
    relative = [f for f in files or () if not os.path.isabs(f) and not f.startswith(NAME_PREFIX)]
    started_in = run_started_in(ckpt_path) if relative else None
    if started_in is None:
        return files
    return {f if os.path.isabs(f) or f.startswith(NAME_PREFIX) else os.path.join(started_in, f) for f in files}


def of_training_files(clips: list[ClipInfo], files: set[str] | None) -> list[bool]:
    """Whether each clip overlaps the training ``files`` (a file reached through another link is the
    same): their names, or their clips' segment names (`trained_files` with ``spans``), whose spans
    count alone, since spans of one file may sit in different splits (its first minutes trained on,
    its last held out)."""
    if not files:  # (no record: no path resolved, one by one on a network file system)
        return [False] * len(clips)
    by_name: dict[str, list[tuple[float, float]]] = {}
    for entry in files:
        name, start, end = segment_span(entry)
        by_name.setdefault(name, []).append((start, end))
    trained = {}
    for name, spans in by_name.items():  # (a file's many spans: its path resolved once)
        trained.setdefault(os.path.realpath(name), []).extend(spans)

    def overlaps(clip: ClipInfo) -> bool:
        end = math.inf if clip.end is None else clip.end
        return any(a < end and clip.start < b for a, b in trained.get(os.path.realpath(clip.name), ()))

    return [overlaps(c) for c in clips]


def held_out(clips: list[ClipInfo], split: str, files: set[str] | None, remedy: str) -> tuple[list[ClipInfo], int]:
    """The clips of a held-out ``split`` that are not of the training ``files`` (a checkpoint's record:
    `ttt_mm.checkpoint.trained_files`; None or empty: none known), and how many were left out;
    ``remedy`` ends the warning. A ConfigError where every clip is of a training file."""
    if not files:
        return clips, 0
    trained_on = of_training_files(clips, files)
    left_out = [c for c, t in zip(clips, trained_on) if t]
    if not left_out:
        return clips, 0
    names = list(dict.fromkeys(one_line(c.segment) for c in left_out))  # (a span: the file's others may be kept)
    kept = [c for c, t in zip(clips, trained_on) if not t]
    log.warning(
        "split=%s: %d of its %d clips overlap what the checkpoint's run trained on, left out: %s (a file's split "
        "is drawn from its name as the data config lists it, relative to data.root for a folder, as written "
        "for a manifest, or from its manifest group's name, and from the split fractions: %s)",
        split,
        len(left_out),
        len(clips),
        first_of(names, TRAINED_ON_NAMED),
        remedy,
    )
    if not kept:
        raise ConfigError(f"every clip of split {split!r} overlaps what the checkpoint's run trained on (see above)")
    return kept, len(left_out)
