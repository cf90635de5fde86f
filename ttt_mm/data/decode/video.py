"""Video frames by time: each file's frame timeline (indexed once per process by decord or PyAV),
and the frames of a window sampled on a grid of ``fps``, scaled by FFmpeg and center-cropped.

Both backends index frames by their presentation timestamps counted from the stream's start
(decord's convention: a clip cut from a longer recording starts at 0), fall back to a grid of the
average frame rate when those are broken, show frames the way up the file's display matrix says
(phone videos), and agree within one frame (``tests/data/test_backends.py``). Only a window's
frames are decoded; PyAV decodes from the key frame before a window, and onwards without seeking
for the next window (`FROM_START`: from the first frame, where seeks land on other pictures).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from dataclasses import dataclass, replace
from functools import partial

import av
import decord
import numpy as np
import torch
from decord.bridge import to_torch
from torch import Tensor

from ttt_mm.data.decode import native
from ttt_mm.data.decode.backends import FROM_START, VIDEO_BACKENDS, check_backend
from ttt_mm.data.decode.errors import (
    FramesRefused,
    MediaError,
    NothingDecodes,
    checked_stat,
    version_key,
    zeroed_tail_bytes,
)
from ttt_mm.data.decode.guard import LRUCache
from ttt_mm.data.decode.native import av_open, open_timeout, video_stream
from ttt_mm.messages import once, one_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoIndex:
    """A video stream's frames as one backend reads them."""

    starts: np.ndarray  # [n] float64 seconds, presentation start of each indexed frame
    duration: float  # end of the last frame
    fps: float
    size: tuple[int, int]  # native (width, height)
    pts: np.ndarray | None = None  # pyav: [n] int64 stream pts of each frame (None: timestamps broken)
    key_pts: np.ndarray | None = None  # pyav: sorted pts of the key frames
    quarter_turns: int = 0  # pyav: counterclockwise quarter turns that show a frame upright (`_orientation`)
    first_decoded: int | None = None  # pyav: pts of the first frame a decode from the file's start gives
    gaps: float = 0.0  # seconds inside the video that no frame covers (`_gaps`)
    mirrored: bool = False  # pyav: shown mirrored left to right, once turned (`_orientation`)
    slack: float = 0.0  # seconds by which a frame's times may be off, past 1e-6 (decord's: `_float32_slack`)


_video_index: LRUCache[VideoIndex] = LRUCache(max_items=4096)
_video_readers: LRUCache = LRUCache(max_items=4, native=True)


def clear() -> None:
    _video_index.clear()
    _video_readers.clear()


def _timeline(path: str, starts: np.ndarray, stops: np.ndarray, fps: float) -> tuple[np.ndarray, float, float, float]:
    """Frame starts, end, frame rate and gaps (`_gaps`); the average frame rate's grid when timestamps
    are broken."""
    n = len(starts)
    if not (np.isfinite(starts).all() and np.isfinite(stops).all() and (n == 1 or (np.diff(starts) > 0).all())):
        if not fps > 0:
            raise MediaError(path, "video has neither usable timestamps nor a frame rate")
        starts = np.arange(n) / fps
        stops = starts + 1.0 / fps
    last = stops[-1] if stops[-1] > starts[-1] else starts[-1] + 1.0 / (fps if fps > 0 else 30.0)
    fps = fps if fps > 0 else n / last
    return starts, float(last), fps, _gaps(starts, stops, fps)


def _gaps(starts: np.ndarray, stops: np.ndarray, fps: float) -> float:
    """Seconds inside the video that no frame covers: where a frame whose length is known ends over half
    a frame before the next starts (packets lost, a recording that skipped, timestamps that jump). The
    picture before each gap shows through it."""
    holes = starts[1:] - stops[:-1]
    return float(holes[(stops[:-1] > starts[:-1]) & (holes > 0.5 / fps)].sum())


NOTHING_DECODES = "none of the video's {n} frames decodes (its codec's parameters are missing, or it is damaged)"

EDIT_LIST_FORMAT = "mov"
"""FFmpeg's name (among others) of the MP4/QuickTime demuxer, whose edit lists can hide frames."""
HIDDEN_BY_EDIT_LIST = (
    "decord counts the frames that the file's edit list hides (a stream-copy cut, ffmpeg -ss/-t -c copy), "
    "so its frames land off their times"
)


NOT_SQUARE = "pixels that are not square (sample aspect ratio {}), which decord scales as they are stored"
MIRRORED = "a display matrix that shows it mirrored, which decord does not"


def _pixel_aspect(stream) -> float:
    """How much wider a stored pixel is shown than it is high (its sample aspect ratio; 1 where unset,
    and where it is not one a video is shown with: a stream's 65535:1 would scale every frame of a
    1080p video to 101,520 x 224, over a gigabyte a window)."""
    ratio = float(stream.sample_aspect_ratio or 0) if stream is not None else 0.0
    return ratio if 1 / MOST_PIXEL_ASPECT <= ratio <= MOST_PIXEL_ASPECT else 1.0


MOST_PIXEL_ASPECT = 4.0
"""The widest (and, inverted, the narrowest) pixel taken as shown so: anamorphic video's run from 0.5 to 2."""


def _as_shown(path: str) -> tuple[float | None, float, bool]:
    """What PyAV reads of how the video is shown, that decord does not: its length as an MP4/QuickTime
    container shows it (after its edit list; None for another container), its pixel aspect
    (`_pixel_aspect`), and whether it is shown mirrored (`_orientation`)."""
    with av_open(path) as container:
        stream = video_stream(container)
        if stream is None:
            return None, 1.0, False
        mp4 = EDIT_LIST_FORMAT in container.format.name.split(",")
        shown = float(stream.duration * stream.time_base) if mp4 and stream.duration is not None else None
        frame = next(_decoded(container.demux(stream)), None)
        return shown, _pixel_aspect(stream), frame is not None and _orientation(frame)[1]


def _decord_index(path: str, st: os.stat_result) -> VideoIndex:
    reader = native.call(path, "opening the video", lambda: decord.VideoReader(path, num_threads=1), open_timeout(st))
    n = len(reader)
    if n < 1:
        raise MediaError(path, "video stream has no frames")
    first = native.call(
        path, "decoding frame 0", lambda: reader.get_batch([0]), native.DECODE_TIMEOUT_S, reader, FramesRefused
    )
    height, width = first.shape[1:3]
    stamps = np.asarray(reader.get_frame_timestamp(list(range(n))), dtype=np.float64)
    starts, duration, fps, gaps = _timeline(path, stamps[:, 0], stamps[:, 1], float(reader.get_avg_fps()))
    # decord lists the frames an MP4 edit list hides (before time 0, or past the shown length) but
    # decodes only the shown ones, so its frame k is another picture; PyAV leaves them out
    shown, aspect, mirrored = native.call(path, "opening the video", partial(_as_shown, path), open_timeout(st))
    if shown is not None and (stamps[0, 0] < -0.5 / fps or stamps[-1, 1] > shown + 1.5 / fps):
        raise MediaError(path, HIDDEN_BY_EDIT_LIST)
    # (PyAV's index scales frames to the shape they are shown at, and mirrors them as shown)
    if abs(aspect - 1.0) > 0.01:
        raise MediaError(path, NOT_SQUARE.format(f"{aspect:.4g}:1"))
    if mirrored:
        raise MediaError(path, MIRRORED)
    if gaps > 0:  # (its frames' ends are its packets' lengths in decoding order: with B-frames, false holes)
        with contextlib.suppress(MediaError):
            measured = video_index(path, "pyav")  # (which measures them between decoding times)
            gaps = gaps if measured.pts is None else measured.gaps  # (its timestamps broken: decord's stand)
    return VideoIndex(
        starts, duration, fps, (int(width), int(height)), gaps=gaps, slack=_float32_slack(starts, duration)
    )


def _float32_slack(starts: np.ndarray, end: float) -> float:
    """How far decord's timestamps (float32 seconds) may lie from the times they round: one float32 step
    at the latest of the frames' starts and their end (6e-5 s at 10 min; not at a stop time decord
    makes up, as for AVI frames: 3e10 s). Matched to within 1e-6 s instead, a frame whose start was
    rounded up was passed over for the one before it (past about 30 s, at rates that land on frame
    starts: 5 fps from a 25 fps video), and a last frame whose end was rounded up was counted again."""
    return float(np.spacing(np.float32(max(abs(end), np.abs(starts).max(initial=0.0)))))


def _orientation(frame) -> tuple[int, bool]:
    """Counterclockwise quarter turns (0-3) that the file's display matrix asks for (phone videos
    store frames sideways and say so there), and whether it then shows them mirrored left to right (a
    matrix of negative determinant, as a front camera's may be; its turns are those of the matrix
    unmirrored). decord applies the turns itself, but no mirroring."""
    matrix = frame.side_data.get("DISPLAYMATRIX")  # (a mapping by type; PyAV 18 iterates it by its keys)
    if matrix is None:
        return 0, False
    m = np.frombuffer(bytes(matrix), dtype="<i4")[:9] / 65536.0  # (a, b, u, c, d, v, x, y, w; 16.16 fixed point)
    mirrored = bool(m[0] * m[4] - m[1] * m[3] < 0)
    if mirrored:  # (FFmpeg's flip of the shown x axis: the first column negated)
        m = m * np.array([-1, 1, 1, -1, 1, 1, -1, 1, 1])
    across, down = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if not (across and down):  # (a degenerate matrix: nothing to go by)
        return 0, False
    degrees = -math.degrees(math.atan2(m[1] / down, m[0] / across))  # (as FFmpeg's av_display_rotation_get)
    return round(degrees / 90) % 4, mirrored


def _pyav_index(path: str, st: os.stat_result) -> VideoIndex:
    def first_frame():
        with av_open(path) as container:
            stream = video_stream(container)
            if stream is None:
                raise MediaError(path, "no video stream")
            frame = next(_decoded(container.demux(stream)), None)
            if frame is None:
                return None
            shown = max(1, round(frame.width * _pixel_aspect(stream)))  # (anamorphic video: its stored width, scaled)
            return shown, frame.height, *_orientation(frame), frame.pts

    zeros = zeroed_tail_bytes(path)
    data_end = st.st_size - zeros if zeros else math.inf  # (an unfinished download's)

    def scan():  # demuxing reads packet headers only: no decoding
        with av_open(path) as container:
            stream = video_stream(container)
            packets = [  # (headers only: a packet's data is not kept)
                (p.pts, p.dts, p.duration or 0, p.is_keyframe, p.is_discard, p.is_corrupt)
                for p in itertools.takewhile(lambda p: (p.pos or 0) + p.size <= data_end, container.demux(stream))
                if p.size > 0
            ]  # (from the first packet whose data lies in a zeroed tail on, nothing decodes: the frames end there)
            while packets and packets[-1][5]:  # cut short by the file's end: its frame cannot be read
                packets.pop()
            # (a packet an edit list hides is decoded for the frames after it, but never shown)
            rows = [row[:4] for row in packets if not row[4]]
            rate = stream.average_rate or stream.guessed_rate
            return rows, float(stream.time_base), float(rate) if rate else 0.0, stream.start_time

    first = native.call(path, "decoding frame 0", first_frame, open_timeout(st))
    rows, time_base, fps, start_time = native.call(path, "opening the video", scan, open_timeout(st))
    if not rows:
        raise MediaError(path, "video stream has no frames")
    if first is None:  # (a stream cut after its codec's parameters, which only its start held)
        raise NothingDecodes(path, NOTHING_DECODES.format(n=len(rows)))
    width, height, turns, mirrored, first_pts = first
    size = (height, width) if turns % 2 else (width, height)  # as shown
    stamps = [pts if pts is not None else dts for pts, dts, _, _ in rows]
    if None in stamps or len(set(stamps)) != len(stamps):  # broken timestamps: frames are counted instead
        starts, duration, fps, _ = _timeline(path, np.full(len(rows), np.nan), np.full(len(rows), np.nan), fps)
        return VideoIndex(starts, duration, fps, size, quarter_turns=turns, mirrored=mirrored)
    pts = np.array(stamps, dtype=np.int64)
    order = np.argsort(pts)
    pts = pts[order]
    in_decoding = np.array([r[2] for r in rows], dtype=np.int64)
    durations = in_decoding[order]
    keys = np.array([r[3] for r in rows], dtype=bool)[order]
    # time 0 is the stream's start (its first frame), as decord counts: a file cut from a longer
    # recording starts its timestamps at 10 s, say, and its first frame is still at time 0
    origin = int(pts[0]) if start_time is None else int(start_time)
    shown = (pts - origin) * time_base
    starts, duration, fps, gaps = _timeline(path, shown, shown + durations * time_base, fps)
    if (order != np.arange(len(order))).any():
        # frames shown in another order than decoded (B-frames): an MP4's durations are decoding steps,
        # so a frame's own is not how long it is shown (a variable-rate video had 1 s of false gaps);
        # the stream's holes are those between decoding times, where every packet has one
        decoded = np.array([dts if dts is not None else np.nan for _, dts, _, _ in rows], dtype=np.float64)
        if (np.diff(decoded) > 0).all():
            gaps = _gaps(decoded * time_base, (decoded + in_decoding) * time_base, fps)
    key_pts = pts[keys] if keys.any() else pts[:1]
    return VideoIndex(starts, duration, fps, size, pts, key_pts, turns, first_pts, gaps, mirrored)


def _from_first_decoded(index: VideoIndex) -> VideoIndex:
    """PyAV's index without the frames before the first that a decode from the file's start gives: those
    refer to pictures that were cut off (a stream cut inside a group of pictures, as recordings of
    broadcasts start). The timeline keeps its origin, so that the sound stays in place, and the first
    kept picture is what shows before it."""
    if index.pts is None or index.first_decoded is None or index.pts[0] >= index.first_decoded:
        return index
    kept = index.pts >= index.first_decoded
    return replace(index, starts=index.starts[kept], pts=index.pts[kept])


def video_index(path: str, backend: str) -> VideoIndex:
    """The frame timeline of this version of the file as ``backend`` reads it (cached per process)."""
    st = checked_stat(path)
    key = (*version_key(path, st), backend)
    index = _video_index.get(key)
    if index is None:
        if backend == FROM_START:
            index = _from_first_decoded(video_index(path, "pyav"))
        else:
            index = (_decord_index if backend == "decord" else _pyav_index)(path, st)
        index = _video_index.put(key, index)
    return index


def video_timeline(path: str | os.PathLike, backend: str) -> tuple[np.ndarray, float, float]:
    """(frame start times [n] in seconds, duration, average fps) of a file's video as one backend reads it."""
    index = video_index(os.fspath(path), check_backend(backend, VIDEO_BACKENDS))
    return index.starts.copy(), index.duration, index.fps


TIME_UNSEEKABLE_FORMATS = frozenset({"mpeg", "mpegts", "mpegvideo"})
"""FFmpeg's names of the MPEG program and transport streams (.mpg, .vob, .ts, .m2ts): their packets
carry no frame index, and seeks in them land seconds off the frame asked for, so their video is read
only by decoding from its start (`FROM_START`)."""


def decode_in_order(path: str) -> None:
    """Decode every indexed frame of the video in order, as `FROM_START` reads it (scaled to 16 x 16:
    only that they come out matters), a second of frames at a time, raising `MediaError` for a second
    more than `MOST_STOOD_IN` of whose frames do not (a damaged stretch, which would fail the windows
    read there)."""
    index = video_index(path, FROM_START)
    ids = np.arange(len(index.starts))
    for second in np.array_split(ids, max(1, math.ceil(len(ids) / max(1.0, index.fps)))):
        _frames(path, index, second, 16, 16, FROM_START)


SEEK_CHECKS = 3
"""Key frames after the first that `seeks_land_exactly` checks around (and groups of pictures in the middle)."""
SEEK_CHECK_FRAMES = 600
"""Frames at most that `seeks_land_exactly` decodes in order (a few seconds of video at most)."""


def seeks_land_exactly(path: str, backend: str) -> bool:
    """Whether ``backend`` reads, from a fresh reader, the frames that decoding in order gives: a lone
    frame in the middle of a group of pictures (a seek), and frames 3 apart across a key frame (a
    window's frames: the reader skips forward across it), around the first key frames after the
    first. Where it does not (key frames that cannot start a decode, as in a cut stream; decord in
    open-GOP and some MPEG-1/2/4 and WMV streams), every window read mid-file holds other pictures
    than asked for, and they change with where the reader last was. Damage that decord stops at in
    these frames fails its check: PyAV passes over it, and its own seeks are checked across it (for
    decord, windows there would be read by PyAV, `read_frames`, its seeks unchecked). Where PyAV cannot
    decode them in order (over half missing), nothing is held against the file here."""
    index = video_index(path, backend)
    if backend == FROM_START or (backend != "decord" and index.pts is None):
        return True  # every window is decoded from the start: no seek to check
    width, height = 64, 48  # small frames: only equality is asked (64 wide: a row stride decord copies right)

    def check() -> bool:
        in_order = _open_reader(path, backend, width, height)
        if backend == "decord":
            key_ids = [int(k) for k in in_order.get_key_indices()] + [len(in_order)]
        else:
            key_ids = np.searchsorted(index.pts, index.key_pts).tolist() + [len(index.pts)]
        n = key_ids[-1]
        middles = [[(a + b) // 2] for a, b in zip(key_ids[1:], key_ids[2:]) if (a + b) // 2 > a]
        spans = [[i for i in range(k - 6, k + 7, 3) if 0 <= i < n] for k in key_ids[1:-1]]
        batches = [b for b in middles[:SEEK_CHECKS] + spans[:SEEK_CHECKS] if b[-1] < SEEK_CHECK_FRAMES]
        if not batches:
            return True
        last = max(b[-1] for b in batches)
        try:
            if backend == "decord":  # (next, not skip_frames: mixed with next, that lands frames off)
                frames = [in_order.next().asnumpy() for _ in range(last + 1)]
            else:
                frames = _read_ids(in_order, index, np.arange(last + 1), width, height)
        except decord.DECORDError:
            return False  # (damage, which decord stops at: PyAV passes over it, and is checked across it)
        except MediaError:
            return True
        for ids in batches:  # a fresh reader for each
            try:
                sought = _read_ids(_open_reader(path, backend, width, height), index, np.array(ids), width, height)
            except (decord.DECORDError, MediaError):  # the decoder refused what it was given after the seek
                return False
            if not all(np.array_equal(sought[j], frames[i]) for j, i in enumerate(ids)):
                return False
        return True

    st = checked_stat(path)
    return native.call(path, "checking seeks", check, open_timeout(st) + native.DECODE_TIMEOUT_S)


MOST_STOOD_IN = 0.5
"""The largest share of a window's frames that may be missing (packets the decoder refused) and stood
in for by the picture before each; a window with more is not read (`_PyAVVideo._stand_in`)."""

SLIVER_ASPECT = 4
"""Frames longer than this many times their short side, and narrower than the frame size (a 4 x 2000
video), are cropped to a square in source pixels before they are scaled up: scaled whole, their long
side would be 500 frame sizes, and one window could take gigabytes to keep a ``size x size`` crop of it.
(Wide frames larger than the frame size are scaled down whole, which is cheaper than decoding them.)"""


def _scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Frame size whose short side is `size` (aspect kept), before the center crop."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


class _PyAVVideo:
    """An open PyAV container that remembers where its decoder is, so the next window of a file
    continues decoding instead of seeking back to a key frame, and keeps the last picture it gave,
    which the next window may show again (a source slower than the rate read). ``from_start``:
    instead of seeking, it opens the file again and decodes from the first frame (`FROM_START`).
    ``stood_in``: the frames of the last read that did not decode, each shown as the picture before it."""

    def __init__(self, path: str, from_start: bool = False) -> None:
        self.path, self.from_start = path, from_start
        self.container, self.stood_in = None, None
        self._open()

    def _open(self) -> None:
        if self.container is not None:
            self.container.close()
        self.container = av_open(self.path)
        self.stream = video_stream(self.container)
        self.stream.codec_context.thread_count = 1  # as decord's num_threads=1: workers are the parallelism
        self.read_from = False  # whether anything was demuxed from this container yet
        self._restart()

    def _restart(self) -> None:
        self.frames = None  # decoded-frame iterator, None before the first seek
        self.position = -1  # index id of the last frame the iterator yielded
        self.held = None  # (its id, (width, height), picture) of the last frame a read gave

    def _must_seek(self, index: VideoIndex, first: int) -> bool:
        """Whether frame ``first`` is reached sooner by seeking than by decoding on from here."""
        if self.frames is None or first <= self.position:
            return True
        if index.pts is None or self.from_start:
            return False
        key = index.key_pts[max(0, np.searchsorted(index.key_pts, index.pts[first], side="right") - 1)]
        return key > index.pts[max(self.position, 0)]

    def _id(self, index: VideoIndex, frame) -> int | None:
        """Index id of a decoded frame (None for a frame the packet index does not list)."""
        if index.pts is None:
            return self.position + 1
        i = int(np.searchsorted(index.pts, frame.pts)) if frame.pts is not None else len(index.pts)
        return i if i < len(index.pts) and index.pts[i] == frame.pts else None

    def read(self, index: VideoIndex, ids: np.ndarray, width: int, height: int) -> np.ndarray:
        """Frames ``ids`` (sorted, unique index ids) as uint8 ``[U, height, width, 3]``."""
        first, last = int(ids[0]), int(ids[-1])
        self.stood_in = None
        out = np.empty((len(ids), height, width, 3), dtype=np.uint8)
        filled = np.zeros(len(ids), dtype=bool)
        held = self.held
        sought = None  # the time sought to, where this read seeks
        if held is not None and held[0] == first == self.position and held[1] == (width, height):
            out[0], filled[0] = held[2], True  # the last window's last picture: decoding goes on after it
        elif self._must_seek(index, first):
            if self.from_start:
                if self.read_from:
                    self._open()
            else:
                sought = 0 if index.pts is None else int(index.pts[first])
                self.container.seek(sought, stream=self.stream, backward=True, any_frame=False)
            self._restart()
            self.frames, self.read_from = _decoded(self.container.demux(self.stream)), True
        self._decode_into(index, ids, out, filled)
        if (~filled).mean() > MOST_STOOD_IN and sought is not None and (key := _key_before(index, sought)) is not None:
            # a seek that landed on a damaged key frame loses its group of pictures whole; decoding on into
            # the damage from the group before, as a window that started there does, conceals most of it,
            # so that whether a window is read does not depend on where it starts
            self.container.seek(key, stream=self.stream, backward=True, any_frame=False)
            self._restart()
            self.frames = _decoded(self.container.demux(self.stream))
            filled[:] = False
            self._decode_into(index, ids, out, filled)
        if not filled.all():
            self._stand_in(ids, out, filled)
        self.held = (last, (width, height), out[-1].copy())
        return out

    def _decode_into(self, index: VideoIndex, ids: np.ndarray, out: np.ndarray, filled: np.ndarray) -> None:
        """Decode on from where the decoder is up to frame ``ids[-1]``, putting frames ``ids`` into ``out``
        (scaled to its size) and marking them in ``filled``."""
        slots = {int(i): k for k, i in enumerate(ids)}
        turns = index.quarter_turns  # frames are stored sideways, turned once scaled
        height, width = out.shape[1:3]
        stored = (height, width) if turns % 2 else (width, height)
        for frame in self.frames if not filled.all() else ():
            i = self._id(index, frame)
            if i is None:
                continue
            self.position = i
            if i in slots:
                picture = frame.reformat(*stored, "rgb24", interpolation="BICUBIC").to_ndarray()
                picture = np.rot90(picture, turns) if turns else picture
                out[slots[i]] = picture[:, ::-1] if index.mirrored else picture
                filled[slots[i]] = True
            if i >= ids[-1]:
                break

    def _stand_in(self, ids: np.ndarray, out: np.ndarray, filled: np.ndarray) -> None:
        """Put in the place of each frame that did not come out (a packet the decoder refused) the
        nearest picture before it in the window (after it, at the window's start), and keep their ids
        in ``stood_in``; raise where more than `MOST_STOOD_IN` of the window's frames are missing."""
        missing = int(ids[np.argmin(filled)])
        if (~filled).mean() > MOST_STOOD_IN:
            self._restart()
            raise MediaError(
                self.path,
                f"{np.count_nonzero(~filled)} of the {len(ids)} video frames read from frame {ids[0]} to {ids[-1]} "
                f"do not decode (damaged data, the first frame {missing}): over half, too many to stand in for",
            )
        slots = np.arange(len(ids))
        before = np.maximum.accumulate(np.where(filled, slots, -1))
        after = np.minimum.accumulate(np.where(filled, slots, len(ids))[::-1])[::-1]
        out[:] = out[np.where(before >= 0, before, after)]
        self.stood_in = ids[~filled]


def _key_before(index: VideoIndex, pts: int) -> int | None:
    """The time of the key frame before the one that a seek to ``pts`` lands on (None: there is none,
    or the index lists no key frames)."""
    if index.key_pts is None or index.pts is None:
        return None
    landed = np.searchsorted(index.key_pts, pts, side="right") - 1
    return int(index.key_pts[landed - 1]) if landed >= 1 else None


def _decoded(packets):
    """The frames of ``packets``, passing over each packet the decoder refuses: damaged data in the
    middle of a file (`_PyAVVideo.read` shows the picture before it in its place, as players do), one
    the file's end cut short (`_pyav_index` lists no frame of it: a frame the decoder holds back for it,
    a B-frame, still comes out at the flush), and those before the first key frame, which a stream cut
    inside a group of pictures starts with (their references, perhaps the codec's parameters too, were
    cut off: `_from_first_decoded`)."""
    for packet in packets:
        try:
            yield from packet.decode()
        except av.error.FFmpegError:
            continue


def _open_reader(path: str, backend: str, width: int, height: int):
    if backend == "decord":
        return decord.VideoReader(path, num_threads=1, width=width, height=height)
    return _PyAVVideo(path, from_start=backend == FROM_START)


def _read_ids(reader, index: VideoIndex, ids: np.ndarray, width: int, height: int) -> np.ndarray:
    """Frames ``ids`` (sorted, unique index ids) of an open reader (`_open_reader`): uint8 ``[U, H, W, 3]``."""
    if isinstance(reader, _PyAVVideo):
        return reader.read(index, ids, width, height)
    return to_torch(reader.get_batch(ids.tolist())).numpy()


def _frames(path: str, index: VideoIndex, ids: np.ndarray, width: int, height: int, backend: str) -> np.ndarray:
    """Decode frames ``ids`` of the index scaled to ``width x height`` (decord: perhaps one pixel
    wider, see below): uint8 ``[U, H, W, 3]``."""
    st = checked_stat(path)
    try:
        return _scaled_frames(path, st, index, ids, width, height, backend)
    except MediaError as exc:
        if backend != "decord" or "DECORDArrayCopyFromTo" not in exc.reason:
            raise
    # decord takes the channel count from the row stride (linesize // width), which FFmpeg's row
    # padding breaks at some widths (48 x 32, 16 x 16, ...); one pixel wider avoids it, and the
    # center crop takes the pixel off again
    return _scaled_frames(path, st, index, ids, width + 1, height, backend)


def _sliver_frames(path: str, index: VideoIndex, ids: np.ndarray, size: int, backend: str) -> np.ndarray:
    """Frames of a very long, thin video (`SLIVER_ASPECT`): decoded at their own size, their central
    square cut out, then scaled to ``size`` (bilinear, antialiased): uint8 ``[U, size, size, 3]``."""
    frames = _frames(path, index, ids, *index.size, backend)
    side = min(frames.shape[1], frames.shape[2])
    top, left = (frames.shape[1] - side) // 2, (frames.shape[2] - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + side, left : left + side]))
    scaled = torch.nn.functional.interpolate(
        square.permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear", antialias=side > size
    )
    return scaled.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _scaled_frames(path, st, index: VideoIndex, ids: np.ndarray, width: int, height: int, backend: str):
    key = (*version_key(path, st), backend) + ((width, height) if backend == "decord" else ())  # PyAV scales per frame
    reader = _video_readers.get(key)
    if reader is None:
        opener = partial(_open_reader, path, backend, width, height)
        reader = _video_readers.put(key, native.call(path, "opening the video", opener, open_timeout(st)))

    def decode() -> np.ndarray:
        return _read_ids(reader, index, ids, width, height)

    what = f"decoding frames {ids[0]}-{ids[-1]}"
    try:
        frames = native.call(path, what, decode, native.DECODE_TIMEOUT_S + len(ids), reader, FramesRefused)
    except MediaError:
        _video_readers.pop(key)  # its state is unknown after a failure
        raise
    missing = getattr(reader, "stood_in", None)
    if missing is not None and once.first_time(f"damaged video: {path}"):  # (said here: stderr is silenced
        log.warning(  # during the call)
            "%s: %d of the %d video frames read from %.3f s do not decode (damaged data), the first at %.3f s: "
            "the picture before each stands in (said once per file and run)",
            one_line(path),
            len(missing),
            len(ids),
            index.starts[ids[0]],
            index.starts[missing[0]],
        )
    return frames


def read_frames(
    path: str, start: float, duration: float | None, fps: float, size: int, backend: str, past_damage: bool = True
) -> Tensor:
    """Frames of ``[start, start + duration)`` sampled at ``fps``: uint8 ``[T, 3, size, size]`` RGB.

    Frame ``k`` shows what is on screen at ``start + k / fps`` (the last source frame starting at
    or before it), so variable frame rates and odd native rates are handled. The window is cut at
    the end of the video, so ``T`` can be smaller than ``duration * fps`` (0 past the end).
    ``backend`` is one of `VIDEO_BACKENDS`; with ``past_damage``, a window decord stops in is read
    by PyAV (`_read_past_decord`), not so where the probe checks what decord itself reads.
    """
    if start < 0:
        raise ValueError(f"start must be >= 0 for video, got {start}")
    check_backend(backend, VIDEO_BACKENDS)
    index = None
    try:
        index = video_index(path, backend)
        times = _times(index, start, duration, fps)
        return _frames_at(path, index, times, size, backend)
    except FramesRefused as exc:
        if backend != "decord" or not past_damage:
            raise
        return _read_past_decord(path, index, start, duration, fps, size, exc)


def _times(index: VideoIndex, start: float, duration: float | None, fps: float) -> np.ndarray:
    """The times of the frames `read_frames` gives: from ``start`` on, every ``1 / fps``, up to the video's end
    (a time within the index's slack of it is past it, but for a window's only one: a sliver of a window
    at an end rounded up reads the last frame, as a window reaching into a frame does)."""
    end = index.duration if duration is None else min(start + duration, index.duration)
    n = max(0, math.ceil((end - start) * fps - 1e-6))
    if n > 1 and start + (n - 1) / fps > end - index.slack:
        n -= 1
    return start + np.arange(n) / fps


def _shown_at(index: VideoIndex, times: np.ndarray) -> np.ndarray:
    """The indexed frame on screen at each of ``times``: the last to start by then (or within its slack)."""
    frame_ids = np.searchsorted(index.starts, times + 1e-6 + index.slack, side="right") - 1
    return np.clip(frame_ids, 0, len(index.starts) - 1)  # never past the indexed end


def _frames_at(path: str, index: VideoIndex, times: np.ndarray, size: int, backend: str) -> Tensor:
    """The frames on screen at ``times`` (`read_frames`): uint8 ``[T, 3, size, size]``."""
    if not len(times):
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    unique, inverse = np.unique(_shown_at(index, times), return_inverse=True)
    if max(index.size) > SLIVER_ASPECT * min(index.size) and min(index.size) < size:
        frames = _sliver_frames(path, index, unique, size, backend)
    else:
        frames = _frames(path, index, unique, *_scaled_size(*index.size, size), backend)  # [U, H, W, 3]
    top, left = (frames.shape[1] - size) // 2, (frames.shape[2] - size) // 2
    frames = frames[:, top : top + size, left : left + size].transpose(0, 3, 1, 2)
    # numpy, not torch: torch's strided uint8 copy is ~10x slower here and this is the hot path
    return torch.from_numpy(np.take(frames, inverse.reshape(-1), axis=0))


def _read_past_decord(
    path: str, index: VideoIndex | None, start: float, duration: float | None, fps: float, size: int, failed: MediaError
) -> Tensor:
    """The frames `read_frames` gives, read by PyAV where decord failed on them (or on its index, ``None``,
    when its decoding ahead reached the damage): decord stops at a packet it cannot decode, where PyAV
    passes over it (`_decoded`). ``failed`` is raised if PyAV cannot index the video, or it ends before
    the frames asked for (frames decord lists that hold no picture: a container that claims more)."""
    try:
        pyav = video_index(path, "pyav")
    except MediaError:
        raise failed from None
    times = _times(pyav if index is None else index, start, duration, fps)
    if len(times) and times[-1] >= pyav.duration:
        raise failed
    frames = _frames_at(path, pyav, times, size, "pyav")  # (its own error says why: most frames do not decode)
    if once.first_time(f"damaged video: {path}"):
        log.warning(
            "%s: damaged video data that decord stops at (%s): the windows it fails on are read by PyAV, which "
            "passes over such data (said once per file and run)",
            one_line(path),
            failed.reason,
        )
    return frames
