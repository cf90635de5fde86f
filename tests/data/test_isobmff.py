"""The MP4/MOV index hint, on box layouts written by hand: whole, without an index, cut before or
inside it, and files it must not guess about."""

from __future__ import annotations

import struct

import pytest

from ttt_mm.data.decode import isobmff
from ttt_mm.data.decode.isobmff import missing_index


def box(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


FTYP = box(b"ftyp", b"isom" + bytes(8))
MDAT = box(b"mdat", b"x" * 100)


def test_a_moov_box_is_looked_for_near_where_the_walk_broke_and_near_the_end_only(tmp_path, monkeypatch):
    """A large MP4 cut short was read to its end by the probe (a slow disk's time limit)."""
    monkeypatch.setattr(isobmff, "MOOV_SEARCH_BYTES", 64)
    spliced = FTYP + MDAT[:60] + bytes(range(130, 170)) + MDAT[60:]  # (the walk lands on media data at 128)
    for middle, hint in ((b"x" * 10, "stop lining up"), (b"x" * 1000, "cut short before its index")):
        path = tmp_path / "file.mp4"
        path.write_bytes(spliced + box(b"free", middle) + box(b"moov"))  # (the moov: in the last 64 bytes)
        assert "stop lining up" in missing_index(path)
        path.write_bytes(spliced + box(b"moov") + box(b"free", middle))  # (the moov: 48 bytes after the break)
        assert "stop lining up" in missing_index(path)
        path.write_bytes(spliced + box(b"free", middle) + box(b"moov") + box(b"free", middle))
        assert hint in missing_index(path)  # (too far from both ends: not looked for)


@pytest.mark.parametrize(
    "data,hint",
    [
        (FTYP + MDAT + box(b"moov", b"m" * 10), None),
        (FTYP + MDAT, "an MP4/MOV file without its index, the moov box: truncated, or still being written?"),
        (FTYP + MDAT[:50], "an MP4/MOV file cut short before its index, the moov box"),
        (FTYP + MDAT + struct.pack(">I4s", 256, b"moov") + b"m" * 20, "whose index, the moov box, is cut short"),
        (FTYP + struct.pack(">I4sQ", 1, b"mdat", 16 + 50) + b"x" * 50, "without its index"),  # a 64-bit size
        (FTYP + struct.pack(">I4sQ", 1, b"mdat", 16 + 500) + b"x" * 50, "cut short before its index"),
        (FTYP + box(b"free") * 10_001 + box(b"moov"), None),  # too many boxes to walk: no guess
        (box(b"ftyp", b"heic" + bytes(8)) + box(b"meta", b"z" * 10), None),  # an image has no moov
        (b"RIFF" + bytes(100), None),  # another container
        (b"abc", None),
        # bytes inserted inside mdat (its size unchanged): the walk lands on data, not on the moov after it
        (FTYP + MDAT[:100] + bytes(range(130, 170)) + MDAT[100:] + box(b"moov"), "stop lining up at byte 128"),
        (FTYP + MDAT[:60] + bytes(range(130, 170)) + MDAT[60:] + box(b"moov"), "stop lining up at byte 128"),
        (FTYP + MDAT + bytes(200), "without its index"),  # zeros after the last box: unwritten, not damaged
        (FTYP + MDAT + bytes(200) + box(b"moov"), "stop lining up at byte 128"),  # zeros inside: damaged
        # the four bytes "moov" in media data cut short (no box size before them): cut, not damaged inside
        (
            FTYP + struct.pack(">I4s", 500, b"mdat") + b"x" * 20 + b"\xff\xff\xff\xffmoov" + b"x" * 20,
            "cut short before",
        ),
    ],
    ids=[
        "whole",
        "no-index",
        "cut-before",
        "cut-inside",
        "64-bit",
        "64-bit-cut",
        "many-boxes",
        "heic",
        "riff",
        "tiny",
        "spliced",
        "spliced-printable",
        "zero-tail",
        "zeros-inside",
        "moov-in-data",
    ],
)
def test_the_hint_names_a_missing_or_cut_index_and_guesses_nothing_else(tmp_path, data, hint):
    path = tmp_path / "file.mp4"
    path.write_bytes(data)
    got = missing_index(path)
    assert got is None if hint is None else hint in got
