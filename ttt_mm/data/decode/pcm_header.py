"""The length a WAV or AIFF header states. libsndfile trims its frame count to the bytes present, so a
truncated file would otherwise read as a shorter, whole one; FFmpeg-read formats are checked
against their container's length instead (`ttt_mm.data.decode.probing`)."""

from __future__ import annotations

import os
import struct

_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
"""Data sizes written by a recorder that did not know the length (a pipe, a stream): nothing is stated."""

_MAX_CHUNKS = 1000


def stated_frames(path: str | os.PathLike) -> int | None:
    """Sample frames the header of a WAV (RIFF, RIFX, RF64) or AIFF/AIFC file says it holds; None for
    other files, or when the header states no length."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12:
                return None
            if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
                return _wave_frames(f, ">" if head[:4] == b"RIFX" else "<", rf64=head[:4] == b"RF64")
            if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                return _aiff_frames(f)
    except (OSError, struct.error):
        return None
    return None


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


def _wave_frames(f, order: str, rf64: bool) -> int | None:
    block_align, data_size = None, None
    for kind, size, body in _chunks(f, order):
        f.seek(body)
        if kind == b"ds64" and rf64:  # RF64: the real sizes, 64-bit (the data chunk's own is 0xFFFFFFFF)
            _, data_size = struct.unpack("<QQ", f.read(16))
        elif kind == b"fmt " and size >= 14:
            block_align = struct.unpack(order + "H", f.read(14)[12:14])[0]
        elif kind == b"data":
            if not rf64:
                data_size = size
            break
    if not block_align or data_size is None or (not rf64 and data_size in _UNKNOWN_SIZES):
        return None
    return data_size // block_align


def _aiff_frames(f) -> int | None:
    for kind, size, body in _chunks(f, ">"):
        if kind == b"COMM" and size >= 6:
            f.seek(body)
            _, frames = struct.unpack(">hI", f.read(6))
            return frames
    return None
