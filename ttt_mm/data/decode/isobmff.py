"""Why FFmpeg cannot open an MP4/MOV file: the top-level boxes of the ISO base media format
(ISO/IEC 14496-12) say whether its index (the ``moov`` box) is missing, the file is cut short, or its
boxes stop lining up (damaged inside).
FFmpeg says so only on its log ("moov atom not found"), which the decoders silence."""

from __future__ import annotations

import os
import struct

_CONTAINER_START = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
"""Box types a QuickTime/MP4 file may open with (``wide`` and ``pnot``: older QuickTime files)."""

_IMAGE_BRANDS = (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis")
"""``ftyp`` brands of still images (HEIF, AVIF), which have no ``moov`` box to miss."""

_MAX_BOXES = 10_000
MOOV_SEARCH_BYTES = 128 << 20


def _a_box_type(kind: bytes) -> bool:
    """Whether four bytes can be a box type: printable (``©`` opens QuickTime's metadata types)."""
    return all(32 <= b < 127 or b == 0xA9 for b in kind)


def _holds_moov_after(f, start: int, size: int) -> bool:
    """Whether a ``moov`` box lies in the file (of ``size`` bytes) after ``start``: its type, after a size
    that ends it at the file's end or at another box (four bytes ``moov`` alone turn up in a gigabyte of
    media data by chance). Looked for in the `MOOV_SEARCH_BYTES` after ``start`` and as many before the
    end (where a recorder writes it): a probe reads no more of a large file cut short."""
    if size - start <= 2 * MOOV_SEARCH_BYTES:
        return _moov_within(f, start, size, size)
    return _moov_within(f, start, start + MOOV_SEARCH_BYTES, size) or _moov_within(
        f, size - MOOV_SEARCH_BYTES, size, size
    )


def _moov_within(f, start: int, end: int, size: int, block: int = 1 << 20) -> bool:
    """`_holds_moov_after`, for a ``moov`` type between ``start`` and ``end``."""
    f.seek(start)
    offset, data = start, b""
    while offset + len(data) < end and (chunk := f.read(min(block, end - offset - len(data)))):
        data += chunk
        found = data.find(b"moov", 4)
        while found != -1:
            box_at = offset + found - 4
            length = struct.unpack(">I", data[found - 4 : found])[0]
            if length >= 8 and (box_at + length == size or _next_is_a_box(f, box_at + length, size)):
                return True
            found = data.find(b"moov", found + 1)
        offset += len(data) - 7  # (the last 7 bytes again: a size and a type across two blocks)
        data = data[-7:]
        f.seek(offset + len(data))
    return False


def _next_is_a_box(f, at: int, size: int) -> bool:
    """Whether a box header with a type that can be one sits at ``at`` (the file position is kept)."""
    if at + 8 > size:
        return False
    here = f.tell()
    f.seek(at + 4)
    kind = f.read(4)
    f.seek(here)
    return _a_box_type(kind)


def missing_index(path: str | os.PathLike) -> str | None:
    """A hint for an MP4/MOV file that cannot be opened: it has no ``moov`` box, is cut short before or
    inside it, or its boxes stop lining up (bytes lost or inserted inside it: the walk lands on data);
    None when the file is not one of them or has its index whole (FFmpeg's trouble is elsewhere)."""
    seen, cut = [], False
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            at = 0
            while at + 8 <= size:
                if len(seen) == _MAX_BOXES:
                    return None  # (not walked to its end: a hint would be a guess)
                f.seek(at)
                length, kind = struct.unpack(">I4s", f.read(8))
                if not seen and (kind not in _CONTAINER_START or (kind == b"ftyp" and f.read(4) in _IMAGE_BRANDS)):
                    return None  # another container, or an image: a hint would be a guess
                unwritten = (kind, length) == (bytes(4), 0) and not _holds_moov_after(f, at + 8, size)  # (zeros)
                if not _a_box_type(kind) and not unwritten:
                    return f"an MP4/MOV file whose boxes stop lining up at byte {at}: damaged inside"
                seen.append(kind)
                header = 8
                if length == 1:  # a 64-bit size follows the type
                    header = 16
                    f.seek(at + 8)
                    length = struct.unpack(">Q", f.read(8))[0] if at + 16 <= size else 0
                elif length == 0:  # the box runs to the end of the file
                    length = size - at
                if length < header or at + length > size:
                    if kind != b"moov" and _holds_moov_after(f, at + 8, size):  # (landed on data: an index lies ahead)
                        return f"an MP4/MOV file whose boxes stop lining up at byte {at}: damaged inside"
                    cut = True
                    break
                at += length
    except OSError:
        return None
    if not seen:
        return None
    if cut and seen[-1] == b"moov":
        return "an MP4/MOV file whose index, the moov box, is cut short: truncated, or still being written?"
    if b"moov" in seen:
        return None
    where = "cut short before its index" if cut else "without its index"
    return f"an MP4/MOV file {where}, the moov box: truncated, or still being written?"
