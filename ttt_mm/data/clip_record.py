"""The training and validation clips a checkpoint was made with, kept in it: a run resumed after the data changed
names the files that changed, where the data order's digests only say that something did.

Kept compressed (about 1.5 MB for 100,000 files: their names compress well, their lengths do not), as JSON, which
``torch.load(weights_only=True)`` reads as plain bytes.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Sequence

from ttt_mm.data.sources import ClipInfo
from ttt_mm.messages import first_of

NAMED = 3
"""Files named for each kind of change; the rest are counted."""

_SPAN = re.compile(r"@(?P<start>[0-9.]+(?:e[+-]?[0-9]+)?)-(?P<end>end|[0-9.]+(?:e[+-]?[0-9]+)?)$")
"""How `ClipInfo.segment` ends for a span of a file: ``@start-end``."""


def _rows(clips: Sequence[ClipInfo]) -> dict[str, list | None]:
    """Each clip's segment name and its streams' lengths (None where it was not probed)."""
    return {c.segment: [i.audio_duration, i.video_duration] if (i := c.info) is not None else None for c in clips}


def clip_record(clips: Sequence[ClipInfo]) -> bytes:
    """What `clip_changes` compares with: the clips' names and lengths."""
    return zlib.compress(json.dumps(_rows(clips)).encode(), level=6)


def _read(record: bytes) -> dict | None:
    """The rows `clip_record` made; None where the record cannot be read (damaged, or foreign)."""
    try:
        saved = json.loads(zlib.decompress(record))
    except (zlib.error, ValueError, TypeError):
        return None
    return saved if isinstance(saved, dict) else None


def recorded_files(record: bytes, spans: bool = False) -> set[str] | None:
    """The files whose clips ``record`` lists (`files_of`), or with ``spans`` the clips' segment names as
    they are (`segment_span` reads them); None where it cannot be read."""
    saved = _read(record)
    return None if saved is None else set(saved) if spans else files_of(set(saved))


def files_of(segments: set[str] | None) -> set[str] | None:
    """The files of segment names (`ClipInfo.segment`): a span's name without its ``@start-end``."""
    return None if segments is None else {_SPAN.sub("", segment) for segment in segments}


def segment_span(segment: str) -> tuple[str, float, float]:
    """``(file, start, end)`` seconds of a segment name (`ClipInfo.segment`): ``a.ogg@12.5-30`` is
    ``("a.ogg", 12.5, 30.0)``; a whole file's name, and a span to the file's end, end at infinity."""
    match = _SPAN.search(segment)
    if match is None:
        return segment, 0.0, math.inf
    end = math.inf if match["end"] == "end" else float(match["end"])
    return segment[: match.start()], float(match["start"]), end


def clip_changes(record: bytes, clips: Sequence[ClipInfo]) -> str | None:
    """The clips added, removed and rewritten with another length since ``record`` was made,
    named (``2 added (a.wav, b.wav), 1 removed (c.wav)``); None where none changed, or where the
    record cannot be read (a damaged or foreign one: the digests have said that something changed)."""
    saved = _read(record)
    if saved is None:
        return None
    now = _rows(clips)
    kinds = {
        "added": [n for n in now if n not in saved],
        "removed": [n for n in saved if n not in now],
        "with another length": [n for n in now if n in saved and saved[n] != now[n]],
    }
    said = [f"{len(names)} {kind} ({first_of(names, NAMED)})" for kind, names in kinds.items() if names]
    return ", ".join(said) or None
