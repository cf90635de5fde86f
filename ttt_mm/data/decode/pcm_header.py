"""The length a WAV or AIFF header states, for a file cut short. libsndfile trims its frame count to
the bytes present, so a truncated file would otherwise read as a shorter, whole one; FFmpeg-read
formats are checked against their container's length instead (`ttt_mm.data.decode.probing`)."""

from __future__ import annotations

import os
import struct

_UNKNOWN_SIZE = 0x7FFFF000
"""Data sizes from here up (0xFFFFFFFF, 0x7FFFFFFF, SoX's 0x7FFFF000) and 0 are what recorders writing
to a pipe put in the header: the length is unknown, nothing is stated."""

_MAX_CHUNKS = 1000


def stated_frames(path: str | os.PathLike, frames_present: int) -> int | None:
    """The frames the header of a WAV (RIFF, RIFX, RF64) or AIFF/AIFC file says it holds, when its
    sound data runs past the end of the file: ``frames_present`` (libsndfile's count) scaled by the
    bytes stated over the bytes there. None for a whole file, another format, or an unknown length."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12:
                return None
            if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
                data = _wave_data(f, ">" if head[:4] == b"RIFX" else "<", rf64=head[:4] == b"RF64")
            elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                data = _chunk(f, ">", b"SSND")
            else:
                return None
    except (OSError, struct.error):
        return None
    if data is None:
        return None
    start, stated = data
    present = size - start
    if present <= 0 or stated <= present:
        return None  # whole (or nothing to scale from)
    return round(frames_present * stated / present)


def _chunks(f, order: str):
    """``(id, size, offset of its body)`` of each chunk after the 12-byte file header."""
    at = 12
    for _ in range(_MAX_CHUNKS):
        f.seek(at)
        header = f.read(8)
        if len(header) < 8:
            return
        kind, size = struct.unpack(order + "4sI", header)
        yield kind, size, at + 8
        at += 8 + size + (size & 1)  # (chunks are padded to an even size)


def _chunk(f, order: str, wanted: bytes) -> tuple[int, int] | None:
    """``(offset of its body, its stated size)`` of the first ``wanted`` chunk; None for an unknown size."""
    for kind, size, body in _chunks(f, order):
        if kind == wanted:
            return None if size == 0 or size >= _UNKNOWN_SIZE else (body, size)
    return None


def _wave_data(f, order: str, rf64: bool) -> tuple[int, int] | None:
    if not rf64:
        return _chunk(f, order, b"data")
    stated = None
    for kind, _, body in _chunks(f, order):
        if kind == b"ds64":  # RF64: the real sizes, 64-bit (the data chunk's own is 0xFFFFFFFF)
            f.seek(body)
            stated = struct.unpack("<QQ", f.read(16))[1]
        elif kind == b"data":
            return None if not stated else (body, stated)
    return None
