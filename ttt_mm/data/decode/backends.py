"""Which decoder reads which stream of a file: the backends in the order they are tried, and the
choice `probe` made for each version of a file, so later reads in the process use the same one."""

from __future__ import annotations

from ttt_mm.data.decode.errors import checked_stat, version_key
from ttt_mm.data.decode.guard import LRUCache

AUDIO_BACKENDS = ("soundfile", "pyav", "decord")
"""Tried in this order for an audio stream; the first that reads it is recorded."""
FROM_START = "pyav_from_start"
"""PyAV, reaching every window by decoding on from the first frame, never by a seek mid-file: the last
resort for a video whose seeks land on other pictures (key frames that cannot start a decode, an MPEG
program or transport stream), which each window read out of order costs a decode from the start."""
VIDEO_BACKENDS = ("decord", "pyav", FROM_START)
"""Tried in this order for a video stream, the first that reads it recorded: `FROM_START` only where
the seeks of both others land off, and alone for an MPEG program or transport stream."""

_recorded: LRUCache[tuple[str, bool]] = LRUCache(max_items=8192)
"""(path, mtime, size, stream) -> (the backend `probe` chose, whether the choice was checked: `remember`)"""


def check_backend(backend: str, allowed: tuple[str, ...]) -> str:
    """``backend``, if it is one of ``allowed``; a ValueError naming them otherwise."""
    if backend not in allowed:
        raise ValueError(f"backend must be one of {allowed}; got {backend!r}")
    return backend


def remember(path: str, stream: str, backend: str, checked: bool = True) -> None:
    """Record the backend `probe` found for this version of the file's stream. ``checked``: False for a
    choice made without ``verify``, which the first read checks (`probing.chosen`)."""
    _recorded.put((*version_key(path, checked_stat(path)), stream), (backend, checked))


def recorded(path: str, stream: str) -> tuple[str, bool] | None:
    """The backend `probe` chose for this version of the file's stream and whether the choice was
    checked (`remember`), if it has probed it here."""
    return _recorded.get((*version_key(path, checked_stat(path)), stream))


def clear() -> None:
    _recorded.clear()
