"""The only module that calls decoders: probe a file, read audio or video by time.

Backends, chosen per file and per stream when the file is first probed (`probe`; the dataset index
records the choice, see `ttt_mm.data.index`), by content rather than extension:

- ``soundfile`` (libsndfile) for audio it can open (wav, flac, ogg/vorbis/opus, mp3, aiff, ...):
  read by seeking, so a 10 s window of a 2 h file costs 10 s of decoding; other sample rates are
  resampled with ``torchaudio.functional.resample`` on block-aligned spans with context on both
  sides, so consecutive windows join into exactly the one-shot resampled signal. A stream that
  ends up to `AUDIO_SHORTFALL_S` before its header says is read as far as it goes (the rest is
  silence; a debug line, not a failure);
- ``decord`` for video (``VideoReader``, ``num_threads=1``) and for audio in other containers
  (``AudioReader``, mono, resampled by decord: asking for stereo can corrupt a channel). decord
  decodes a whole audio track when the reader is created, at about 750x real time to 16 kHz here,
  so decoded tracks are cached per process (bounded by `AUDIO_CACHE_SAMPLES`) and later windows are
  slices; extract such audio to FLAC if many long files are sampled at random;
- ``pyav`` (PyAV, which ships its own FFmpeg and raises Python exceptions) for the streams decord
  cannot open or decode: codecs its FFmpeg 4.1 lacks (AV1 video, DFPWM audio, ...) and containers
  or tracks it fails on. Video frames are decoded from the key frame before a window (and onwards
  without seeking for the next window); audio tracks are decoded whole and cached like decord's.

Both video backends index frames by their presentation timestamps (``pts * time_base``, decord's
convention), fall back to a grid of the average frame rate when those are broken, and agree within
one frame (``tests/data/test_backends.py``). Frames are picked by timestamp on a grid of ``fps``,
scaled by FFmpeg so the short side is ``size``, then center-cropped; only a window's frames are
decoded. Audio is mono float32 from the first decoded sample.

torchcodec is not used: it needs a system FFmpeg (this project installs from wheels alone, and
torchaudio no longer decodes files without it), and its wheels pin one torch version each; PyAV
covers the same FFmpeg in a self-contained wheel.

Decord traps handled here: readers are created lazily in the process that reads (a DataLoader
worker), never shared across a fork (see `guard`); indices never pass the last indexed frame and
every native call runs under a watchdog, because decord can loop forever when a container claims
frames it cannot decode; ffmpeg's logging and decord's own stderr output are silenced so a bad
file costs one log line. A decoder can also abort the whole process on a corrupt file (decord
throws ``std::bad_alloc``), which no watchdog catches: that is why files are first opened in a
subprocess by the dataset index, and only files it found good reach these functions in a long job.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from functools import partial

import av
import decord
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from decord.bridge import to_torch
from torch import Tensor

from ttt_mm.data.guard import DecodeTimeout, LRUCache, native_stderr_silenced, run_with_timeout

decord.logging.set_level(decord.logging.QUIET)
log = logging.getLogger(__name__)

AUDIO_BACKENDS = ("soundfile", "decord", "pyav")
"""Tried in this order for an audio stream; the first that reads it is recorded."""
VIDEO_BACKENDS = ("decord", "pyav")
"""Tried in this order for a video stream; the first that reads it is recorded."""

DECODE_TIMEOUT_S = 60.0
"""Base deadline for one native decode call; more is allowed per byte opened and per frame read."""

AUDIO_CACHE_SAMPLES = 2**26
"""Decoded container-audio samples kept per process (2**26 float32 = 256 MiB, ~70 min at 16 kHz)."""

AUDIO_SHORTFALL_S = 0.1
"""How far (seconds) an audio stream may end before the length its header promises and still be
read as a good file: the missing tail reads as silence. Encoders and muxers get the last packet's
length slightly wrong (a 6.5 min Opus track ending 10 samples short); more is a truncated file."""

_RESAMPLE_WIDTH, _RESAMPLE_ROLLOFF = 6, 0.99  # torchaudio.functional.resample defaults


class MediaError(RuntimeError):
    """A file cannot be used; `reason` says why in words (also what the skip list records)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) when raised inside a DataLoader worker
        return (MediaError, (self.path, self.reason))


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds. Durations are seconds from each stream's first sample or frame."""

    path: str
    num_bytes: int
    has_audio: bool | None  # None: not checked (the stream was not asked for)
    has_video: bool | None
    audio_duration: float | None = None
    sample_rate: int | None = None  # native
    channels: int | None = None
    audio_backend: str | None = None  # one of AUDIO_BACKENDS
    video_duration: float | None = None
    fps: float | None = None  # native average frame rate
    n_frames: int | None = None  # frames in the container's packet index
    size: tuple[int, int] | None = None  # native (width, height)
    video_backend: str | None = None  # one of VIDEO_BACKENDS
    silent: bool | None = None  # set by probe(verify=True): the audio is digital silence

    @property
    def duration(self) -> float:
        """Length of the longest stream present (0 if none)."""
        return max(self.audio_duration or 0.0, self.video_duration or 0.0)


# ---------------------------------------------------------------------------------------- helpers


def stat_reason(path: str, exc: OSError) -> str:
    """Why a file cannot be used, when ``os.stat`` fails; a link whose target is gone is named as such,
    since the file listed is there."""
    if not isinstance(exc, FileNotFoundError):
        return f"cannot stat: {exc.strerror}"
    try:
        return f"broken symbolic link (to {os.readlink(path)})" if os.path.islink(path) else "file not found"
    except OSError:  # removed meanwhile
        return "file not found"


def _stat(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise MediaError(path, stat_reason(path, exc)) from None
    if not os.path.isfile(path):
        raise MediaError(path, "not a regular file")
    if st.st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return st


def _key(path: str, st: os.stat_result) -> tuple:
    """Cache key of one version of a file."""
    return (path, st.st_mtime_ns, st.st_size)


_AVERROR = {-1094995529: "invalid data", -1381258232: "stream not found", -541478725: "end of file"}
_UNREADABLE = "not a readable media container (ffmpeg could not open it)"


def _decord_reason(exc: BaseException, what: str) -> str:
    """decord's message without its timestamp and source location, ffmpeg codes named."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)
    if "cannot find video stream" in text:
        return "no video stream"
    if "Can't find audio stream" in text:
        return "no audio stream"
    if "ERROR opening" in text or text.startswith("Error reading"):
        return _UNREADABLE
    if "Error sending packet" in text:
        text = "the decoder rejected a packet (corrupt or missing frame data)"
    elif "run_.load()" in text:  # decord's decoder thread stopped after an earlier packet error
        text = "the decoder stopped after a bad packet (corrupt or missing frame data)"
    elif "av_read_frame failed" in text:
        text = "the container is truncated or corrupt (" + text.split("Error: ")[-1] + ")"
    elif "avfilter_graph_create_filter" in text:
        text = "the video stream cannot be decoded (no frames or unknown format)"
    elif "Decoder not found" in text:
        text = "no decoder for this codec in decord's FFmpeg"
    for code, name in _AVERROR.items():
        text = text.replace(str(code), f"{code} ({name})").replace(str(-code), f"{-code} ({name})")
    return f"{what} failed: {text[:200]}"


def _pyav_reason(exc: BaseException, what: str) -> str:
    """PyAV's error in words (FFmpeg's message, without the file name it repeats)."""
    if isinstance(exc, av.error.FFmpegError):
        if what.startswith("opening") and isinstance(exc, av.error.InvalidDataError):
            return _UNREADABLE
        text = exc.strerror or str(exc)
    else:
        text = str(exc) or type(exc).__name__
    return f"{what} failed: {text.splitlines()[0][:200]}"


_DECODER_ERRORS = (decord.DECORDError, av.error.FFmpegError, RuntimeError, ValueError, IndexError, MemoryError)
"""What decoders raise for a file they cannot read (PyAV's errors are also ValueError/OSError subclasses)."""


def _native(path: str, what: str, fn, timeout: float, reader=None):
    """Call a decoder under the watchdog; any decoder failure becomes a MediaError naming the file."""
    try:
        with native_stderr_silenced():
            return run_with_timeout(fn, timeout, f"{what} of {path}", abandon_on_timeout=reader)
    except MediaError:
        raise
    except DecodeTimeout:
        raise MediaError(
            path,
            f"{what} did not return within {timeout:.0f} s (decord loops forever when a container "
            "claims frames it cannot decode); the reader was abandoned",
        ) from None
    except av.error.FFmpegError as exc:
        raise MediaError(path, _pyav_reason(exc, what)) from None
    except _DECODER_ERRORS as exc:
        if isinstance(exc, RuntimeError) and "decoder calls never returned" in str(exc):
            raise
        raise MediaError(path, _decord_reason(exc, what)) from None


def _sf_info(path: str):
    """libsndfile's view of the file, or None when it cannot read it (cached per file version)."""
    st = _stat(path)
    key = _key(path, st)
    cached = _sf_infos.get(key)
    if cached is None:
        try:
            with native_stderr_silenced():  # libmpg123 prints "Note: ..." lines on bad MP3 data
                cached = (sf.info(path),)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            cached = (None,)
        _sf_infos.put(key, cached)
    return cached[0]


def _av_open(path: str):
    """A PyAV input container; broken text tags (title, artist) do not make a file unreadable."""
    return av.open(path, metadata_errors="ignore")


def _video_stream(container):
    """The first video stream that is a picture sequence (cover art is not video), or None."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


@dataclass(frozen=True)
class _Streams:
    """The streams FFmpeg (PyAV) finds in a container, and the audio's native format."""

    audio: bool
    video: bool
    sample_rate: int | None = None
    channels: int | None = None


def _streams_present(path: str) -> _Streams | None:
    """What the container holds as FFmpeg (PyAV) sees it, or None if it cannot open the file."""
    try:
        with _av_open(path) as container:
            audio = container.streams.audio[0] if container.streams.audio else None
            video = _video_stream(container) is not None
            if audio is None:
                return _Streams(False, video)
            rate, channels = audio.codec_context.sample_rate, audio.codec_context.channels
            if not (rate or channels or video):  # a format guessed from the name alone (a text file called .flac)
                return None
            return _Streams(True, video, rate or None, channels or None)
    except (av.error.FFmpegError, ValueError, MemoryError):
        return None


# ------------------------------------------------------------------------------------------ video


@dataclass(frozen=True)
class _VideoIndex:
    starts: np.ndarray  # [n] float64 seconds, presentation start of each indexed frame
    duration: float  # end of the last frame
    fps: float
    size: tuple[int, int]  # native (width, height)
    pts: np.ndarray | None = None  # pyav: [n] int64 stream pts of each frame (None: timestamps broken)
    key_pts: np.ndarray | None = None  # pyav: sorted pts of the key frames


_video_index: LRUCache[_VideoIndex] = LRUCache(max_items=4096)
_video_readers: LRUCache = LRUCache(max_items=4, native=True)
_audio_tracks: LRUCache[Tensor] = LRUCache(max_items=64, max_cost=AUDIO_CACHE_SAMPLES)
_sf_infos: LRUCache[tuple] = LRUCache(max_items=4096)
_backends: LRUCache[str] = LRUCache(max_items=8192)  # (path, mtime, size, stream) -> backend chosen by probe


def clear_caches() -> None:
    """Close this process's cached readers and decoded audio tracks (benchmarks, tests, memory)."""
    for cache in (_video_index, _video_readers, _audio_tracks, _sf_infos, _backends):
        cache.clear()


def _open_timeout(st: os.stat_result) -> float:
    return DECODE_TIMEOUT_S + st.st_size / 2e6  # opening demuxes the whole file: allow >= 2 MB/s


def _timeline(path: str, starts: np.ndarray, stops: np.ndarray, fps: float) -> tuple[np.ndarray, float, float]:
    """Frame starts, end and frame rate; the average frame rate's grid when timestamps are broken."""
    n = len(starts)
    if not (np.isfinite(starts).all() and np.isfinite(stops).all() and (n == 1 or (np.diff(starts) > 0).all())):
        if not fps > 0:
            raise MediaError(path, "video has neither usable timestamps nor a frame rate")
        starts = np.arange(n) / fps
        stops = starts + 1.0 / fps
    last = stops[-1] if stops[-1] > starts[-1] else starts[-1] + 1.0 / (fps if fps > 0 else 30.0)
    return starts, float(last), fps if fps > 0 else n / last


def _decord_index(path: str, st: os.stat_result) -> _VideoIndex:
    reader = _native(path, "opening the video", lambda: decord.VideoReader(path, num_threads=1), _open_timeout(st))
    n = len(reader)
    if n < 1:
        raise MediaError(path, "video stream has no frames")
    first = _native(path, "decoding frame 0", lambda: reader.get_batch([0]), DECODE_TIMEOUT_S, reader)
    height, width = first.shape[1:3]
    stamps = np.asarray(reader.get_frame_timestamp(list(range(n))), dtype=np.float64)
    starts, duration, fps = _timeline(path, stamps[:, 0], stamps[:, 1], float(reader.get_avg_fps()))
    return _VideoIndex(starts, duration, fps, (int(width), int(height)))


def _pyav_index(path: str, st: os.stat_result) -> _VideoIndex:
    def first_frame():
        with _av_open(path) as container:
            stream = _video_stream(container)
            if stream is None:
                raise MediaError(path, "no video stream")
            frame = next(container.decode(stream), None)
            return None if frame is None else (frame.width, frame.height)

    def scan():  # demuxing reads packet headers only: no decoding
        with _av_open(path) as container:
            stream = _video_stream(container)
            rows = [(p.pts, p.dts, p.duration or 0, p.is_keyframe) for p in container.demux(stream) if p.size > 0]
            rate = stream.average_rate or stream.guessed_rate
            return rows, float(stream.time_base), float(rate) if rate else 0.0

    size = _native(path, "decoding frame 0", first_frame, _open_timeout(st))
    rows, time_base, fps = _native(path, "opening the video", scan, _open_timeout(st))
    if not rows or size is None:
        raise MediaError(path, "video stream has no frames")
    stamps = [pts if pts is not None else dts for pts, dts, _, _ in rows]
    if None in stamps or len(set(stamps)) != len(stamps):  # broken timestamps: frames are counted instead
        starts, duration, fps = _timeline(path, np.full(len(rows), np.nan), np.full(len(rows), np.nan), fps)
        return _VideoIndex(starts, duration, fps, size)
    pts = np.array(stamps, dtype=np.int64)
    order = np.argsort(pts)
    pts = pts[order]
    durations = np.array([r[2] for r in rows], dtype=np.int64)[order]
    keys = np.array([r[3] for r in rows], dtype=bool)[order]
    starts, duration, fps = _timeline(path, pts * time_base, (pts + durations) * time_base, fps)
    return _VideoIndex(starts, duration, fps, size, pts, pts[keys] if keys.any() else pts[:1])


def _index(path: str, backend: str) -> _VideoIndex:
    st = _stat(path)
    key = (*_key(path, st), backend)
    index = _video_index.get(key)
    if index is None:
        index = _video_index.put(key, (_decord_index if backend == "decord" else _pyav_index)(path, st))
    return index


def video_timeline(path: str | os.PathLike, backend: str) -> tuple[np.ndarray, float, float]:
    """(frame start times [n] in seconds, duration, average fps) of a file's video as one backend reads it."""
    index = _index(os.fspath(path), _check_backend(backend, VIDEO_BACKENDS))
    return index.starts.copy(), index.duration, index.fps


def _scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Frame size whose short side is `size` (aspect kept), before the center crop."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


class _PyAVVideo:
    """An open PyAV container that remembers where its decoder is, so the next window of a file
    continues decoding instead of seeking back to a key frame."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.container = _av_open(path)
        self.stream = _video_stream(self.container)
        self.stream.codec_context.thread_count = 1  # as decord's num_threads=1: workers are the parallelism
        self.frames = None  # decoded-frame iterator, None before the first seek
        self.position = -1  # index id of the last frame the iterator yielded

    def _must_seek(self, index: _VideoIndex, first: int) -> bool:
        """Whether frame ``first`` is reached sooner by seeking than by decoding on from here."""
        if self.frames is None or first <= self.position:
            return True
        if index.pts is None:
            return False
        key = index.key_pts[max(0, np.searchsorted(index.key_pts, index.pts[first], side="right") - 1)]
        return key > index.pts[max(self.position, 0)]

    def _id(self, index: _VideoIndex, frame) -> int | None:
        """Index id of a decoded frame (None for a frame the packet index does not list)."""
        if index.pts is None:
            return self.position + 1
        i = int(np.searchsorted(index.pts, frame.pts)) if frame.pts is not None else len(index.pts)
        return i if i < len(index.pts) and index.pts[i] == frame.pts else None

    def read(self, index: _VideoIndex, ids: np.ndarray, width: int, height: int) -> np.ndarray:
        """Frames ``ids`` (sorted, unique index ids) as uint8 ``[U, height, width, 3]``."""
        first, last = int(ids[0]), int(ids[-1])
        if self._must_seek(index, first):
            target = 0 if index.pts is None else int(index.pts[first])
            self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
            self.frames, self.position = self.container.decode(self.stream), -1
        slots = {int(i): k for k, i in enumerate(ids)}
        out = np.empty((len(ids), height, width, 3), dtype=np.uint8)
        found = 0
        for frame in self.frames:
            i = self._id(index, frame)
            if i is None:
                continue
            self.position = i
            if i in slots:
                out[slots[i]] = frame.reformat(width, height, "rgb24", interpolation="BICUBIC").to_ndarray()
                found += 1
            if i >= last:
                break
        if found < len(ids):
            self.frames = None
            raise MediaError(self.path, f"frames {first}-{last} could not all be decoded")
        return out


def _open_reader(path: str, backend: str, width: int, height: int):
    if backend == "decord":
        return decord.VideoReader(path, num_threads=1, width=width, height=height)
    return _PyAVVideo(path)


def _frames(path: str, index: _VideoIndex, ids: np.ndarray, width: int, height: int, backend: str) -> np.ndarray:
    """Decode frames ``ids`` of the index scaled to ``width x height`` (decord: perhaps one pixel
    wider, see below): uint8 ``[U, H, W, 3]``."""
    st = _stat(path)
    try:
        return _scaled_frames(path, st, index, ids, width, height, backend)
    except MediaError as exc:
        if backend != "decord" or "DECORDArrayCopyFromTo" not in exc.reason:
            raise
    # decord takes the channel count from the row stride (linesize // width), which FFmpeg's row
    # padding breaks at some widths (48 x 32, 16 x 16, ...); one pixel wider avoids it, and the
    # center crop takes the pixel off again
    return _scaled_frames(path, st, index, ids, width + 1, height, backend)


def _scaled_frames(path, st, index: _VideoIndex, ids: np.ndarray, width: int, height: int, backend: str):
    key = (*_key(path, st), backend) + ((width, height) if backend == "decord" else ())  # PyAV scales per frame
    reader = _video_readers.get(key)
    if reader is None:
        opener = partial(_open_reader, path, backend, width, height)
        reader = _video_readers.put(key, _native(path, "opening the video", opener, _open_timeout(st)))

    def decode() -> np.ndarray:
        if backend == "decord":
            return to_torch(reader.get_batch(ids.tolist())).numpy()
        return reader.read(index, ids, width, height)

    try:
        return _native(path, f"decoding frames {ids[0]}-{ids[-1]}", decode, DECODE_TIMEOUT_S + len(ids), reader)
    except MediaError:
        _video_readers.pop(key)  # its state is unknown after a failure
        raise


def read_video(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float | None = None,
    fps: float = 8.0,
    size: int = 128,
    backend: str | None = None,
) -> Tensor:
    """Frames of ``[start, start + duration)`` sampled at ``fps``: uint8 ``[T, 3, size, size]`` RGB.

    Frame ``k`` shows what is on screen at ``start + k / fps`` (the last source frame starting at
    or before it), so variable frame rates and odd native rates are handled. The window is cut at
    the end of the video, so ``T`` can be smaller than ``duration * fps`` (0 past the end).
    ``backend`` is one of `VIDEO_BACKENDS` (None: the one `probe` chooses).
    """
    path = os.fspath(path)
    if start < 0:
        raise ValueError(f"start must be >= 0 for video, got {start}")
    backend = _chosen(path, "video") if backend is None else _check_backend(backend, VIDEO_BACKENDS)
    index = _index(path, backend)
    end = index.duration if duration is None else min(start + duration, index.duration)
    count = max(0, math.ceil((end - start) * fps - 1e-6))
    if count == 0:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    times = start + np.arange(count) / fps
    frame_ids = np.searchsorted(index.starts, times + 1e-6, side="right") - 1
    frame_ids = np.clip(frame_ids, 0, len(index.starts) - 1)  # never past the indexed end
    unique, inverse = np.unique(frame_ids, return_inverse=True)
    frames = _frames(path, index, unique, *_scaled_size(*index.size, size), backend)  # [U, H, W, 3]
    top, left = (frames.shape[1] - size) // 2, (frames.shape[2] - size) // 2
    frames = frames[:, top : top + size, left : left + size].transpose(0, 3, 1, 2)
    # numpy, not torch: torch's strided uint8 copy is ~10x slower here and this is the hot path
    return torch.from_numpy(np.take(frames, inverse.reshape(-1), axis=0))


# ------------------------------------------------------------------------------------------ audio


def _check_finite(path: str, samples: Tensor, start: float, sample_rate: int) -> Tensor:
    bad = ~torch.isfinite(samples)
    if bad.any():
        first = start + int(bad.nonzero()[0, 0]) / sample_rate
        raise MediaError(path, f"{int(bad.sum())} NaN/Inf audio samples, the first at {first:.3f} s")
    return samples


def _sf_read(path: str, info, first: int, last: int) -> Tensor:
    """Native-rate mono samples ``[first, last)``; zeros outside the file.

    A read that stops early leaves NaN rows in the buffer: libsndfile's FLAC reader returns the
    samples it has, then python-soundfile's seek past the real end raises, so the count is taken
    from the buffer. The end is tolerated (silence) within `AUDIO_SHORTFALL_S` of the header's.
    """
    out = torch.zeros(max(0, last - first), dtype=torch.float32)
    lo, hi = max(first, 0), min(last, info.frames)
    if hi <= lo:
        return out
    data = np.full((hi - lo, info.channels), np.nan, dtype=np.float32)
    try:
        with sf.SoundFile(path) as f:
            f.seek(lo)
            got = len(f.read(hi - lo, dtype="float32", always_2d=True, out=data))
    except (sf.LibsndfileError, RuntimeError) as exc:
        stopped = np.isnan(data).all(axis=1)
        got = int(stopped.argmax()) if stopped.any() else hi - lo
        if got == hi - lo or hi != info.frames:
            raise MediaError(path, f"cannot read samples {lo}-{hi} (truncated or corrupt?): {exc}") from None
    if got < hi - lo:
        end, shortfall = lo + got, (info.frames - lo - got) / info.samplerate
        if hi != info.frames or shortfall > AUDIO_SHORTFALL_S:
            raise MediaError(path, f"file ends at sample {end} but its header promises {info.frames}")
        log.debug("%s: audio ends at sample %d, %.4f s before its header says; read as silence", path, end, shortfall)
        data[got:] = 0.0
    mono = data @ np.full(data.shape[1], 1.0 / data.shape[1], dtype=np.float32)  # a BLAS call beats mean(axis=1)
    out[lo - first : hi - first] = torch.from_numpy(mono)
    return out


def _sf_window(path: str, info, first: int, count: int, sample_rate: int) -> Tensor:
    """Output-rate samples ``[first, first + count)`` of the (resampled) file, zeros before 0."""
    if info.samplerate == sample_rate:
        return _sf_read(path, info, first, first + count)
    g = math.gcd(info.samplerate, sample_rate)
    down, up = info.samplerate // g, sample_rate // g  # one block: `down` input -> `up` output samples
    width = math.ceil(_RESAMPLE_WIDTH * down / (min(down, up) * _RESAMPLE_ROLLOFF))
    context = math.ceil(width / down) + 1  # whole blocks of context on each side
    b0, b1 = first // up - context, -(-(first + count) // up) + context
    x = _sf_read(path, info, b0 * down, b1 * down)
    y = AF.resample(x, info.samplerate, sample_rate)[first - b0 * up : first - b0 * up + count]
    if first < 0:
        y[: min(-first, count)] = 0.0  # the filter rings before the first sample; the file has nothing there
    return y


def _decord_samples(path: str, sample_rate: int) -> np.ndarray:
    samples = np.asarray(decord.AudioReader(path, sample_rate=sample_rate, mono=True)._array)  # [1, n]
    return samples.reshape(-1)  # decord's own slicing builds an index per sample: take the array


def _pyav_samples(path: str, sample_rate: int) -> np.ndarray:
    """The first audio track, mono at its own rate, then resampled as soundfile audio is (no
    resampler delay: sample k is at k / sample_rate)."""
    with _av_open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream")
        stream = container.streams.audio[0]
        native = stream.codec_context.sample_rate
        mixer = av.AudioResampler(format="flt", layout="mono", rate=native)  # channels mixed, rate kept
        frames = [out for frame in container.decode(stream) for out in mixer.resample(frame)]
        frames += mixer.resample(None)
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames else np.zeros(0, np.float32)
    if native and native != sample_rate:
        samples = AF.resample(torch.from_numpy(samples), native, sample_rate).numpy()
    return samples


def _container_track(path: str, sample_rate: int, backend: str) -> Tensor:
    """A whole audio track decoded by decord or PyAV at ``sample_rate``, mono (cached per process)."""
    st = _stat(path)
    key = (*_key(path, st), sample_rate, backend)
    track = _audio_tracks.get(key)
    if track is None:
        decode = _decord_samples if backend == "decord" else _pyav_samples
        samples = _native(
            path, "decoding the audio track", lambda: decode(path, sample_rate), _open_timeout(st) + st.st_size / 1e5
        )
        track = torch.from_numpy(samples.astype(np.float32, copy=True))
        _audio_tracks.put(key, track, cost=track.numel())
    return track


def read_audio(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float | None = None,
    sample_rate: int = 16000,
    backend: str | None = None,
) -> Tensor:
    """Mono float32 samples of ``[start, start + duration)`` at ``sample_rate``: ``[n]``.

    ``n = round(duration * sample_rate)``, cut at the end of the track. Samples before time 0 are
    zeros, so callers may read left context at the start of a file with a negative ``start``.
    ``backend`` is one of `AUDIO_BACKENDS` (None: the one `probe` chooses).
    """
    path = os.fspath(path)
    _stat(path)
    backend = _chosen(path, "audio") if backend is None else _check_backend(backend, AUDIO_BACKENDS)
    first = round(start * sample_rate)
    if backend == "soundfile":
        info = _sf_info(path)
        if info is None:
            raise MediaError(path, "libsndfile cannot open this file")
        total = math.ceil(info.frames * sample_rate / info.samplerate)
        count = total - first if duration is None else round(duration * sample_rate)
        count = max(0, min(count, total - first))
        samples = _sf_window(path, info, first, count, sample_rate)
    else:
        track = _container_track(path, sample_rate, backend)
        count = len(track) - first if duration is None else round(duration * sample_rate)
        count = max(0, min(count, len(track) - first))
        samples = torch.zeros(count, dtype=torch.float32)
        lo = max(first, 0)
        if count and lo < first + count:
            samples[lo - first :] = track[lo : first + count]
    return _check_finite(path, samples, start, sample_rate)


# ------------------------------------------------------------------------------------------ probe


def _check_backend(backend: str, allowed: tuple[str, ...]) -> str:
    if backend not in allowed:
        raise ValueError(f"backend must be one of {allowed}; got {backend!r}")
    return backend


def _chosen(path: str, stream: str) -> str:
    """The backend `probe` chose for this version of the file's stream (probing it if needed)."""
    backend = _backends.get((*_key(path, _stat(path)), stream))
    if backend is None:
        info = probe(path, streams=(stream,))
        backend = info.audio_backend if stream == "audio" else info.video_backend
        if backend is None:
            raise MediaError(path, f"no {stream} stream")
    return backend


def _without_frames(exc: MediaError) -> MediaError:
    """``exc`` without its traceback and the decoder error it replaced, whose frames hold the failed
    reader: kept in a list, they would keep it alive until a garbage collection."""
    exc.__context__ = None
    return exc.with_traceback(None)


def _first_reason(errors: list[MediaError], stream: str) -> MediaError:
    """The most telling of the backends' errors: the first that is not just "no <stream> stream"."""
    return next((e for e in errors if e.reason != f"no {stream} stream"), errors[0])


def _probe_video(path: str, present: bool | None, verify: bool) -> dict:
    """The video fields of `MediaInfo`, from the first backend that reads the stream."""
    if present is False:
        return {"has_video": False}
    errors = []
    for backend in VIDEO_BACKENDS:
        try:
            index = _index(path, backend)
            if verify:
                last = float(index.starts[-1])
                if len(read_video(path, last, 1e-3, fps=1.0, size=16, backend=backend)) != 1:
                    raise MediaError(path, f"the last indexed frame ({len(index.starts) - 1}) cannot be read")
        except MediaError as exc:
            errors.append(_without_frames(exc))
            continue
        _backends.put((*_key(path, _stat(path)), "video"), backend)
        fields = {"has_video": True, "video_backend": backend, "video_duration": index.duration, "fps": index.fps}
        return fields | {"n_frames": len(index.starts), "size": index.size}
    if present is None and all(e.reason == "no video stream" for e in errors):
        return {"has_video": False}
    raise _first_reason(errors, "video")


def _probe_audio(path: str, present: _Streams | None, verify: bool) -> dict:
    """The audio fields of `MediaInfo`, from the first backend that reads the stream."""
    info = _sf_info(path)
    if present is not None and not present.audio and info is None:
        return {"has_audio": False}
    errors = []
    for backend in AUDIO_BACKENDS:
        if backend == "soundfile" and info is None:
            continue
        try:
            if backend == "soundfile":
                rate = info.samplerate
                fields = {"audio_duration": info.frames / rate, "sample_rate": rate, "channels": info.channels}
            else:
                rate = 16000  # the usual training rate: the decoded track is cached for the first reads
                fields = {"audio_duration": len(_container_track(path, rate, backend)) / rate}
                if present is not None:
                    fields |= {"sample_rate": present.sample_rate, "channels": present.channels}
            if not fields["audio_duration"] > 0:
                raise MediaError(path, "the audio stream has no samples")
            if verify:
                fields["silent"] = _scan_audio(path, fields["audio_duration"], rate, backend)
        except MediaError as exc:
            errors.append(_without_frames(exc))
            continue
        _backends.put((*_key(path, _stat(path)), "audio"), backend)
        return {"has_audio": True, "audio_backend": backend, **fields}
    if present is None and all(e.reason == "no audio stream" for e in errors):
        return {"has_audio": False}
    raise _first_reason(errors, "audio")


def _scan_audio(path: str, duration: float, rate: int, backend: str) -> bool:
    """Read all of the audio (raising on NaN/Inf or a short file); True if it is digital silence."""
    peak, step = 0.0, 60.0
    for t in np.arange(0.0, duration, step):
        chunk = read_audio(path, float(t), step, rate, backend)
        peak = max(peak, float(chunk.abs().max())) if len(chunk) else peak
    return peak == 0.0


def check_audio_covers_video(info: MediaInfo) -> None:
    """Raise if the audio track decodes to much less than the video (truncated or corrupt audio)."""
    if info.has_audio and info.video_duration and info.audio_duration < 0.5 * info.video_duration:
        raise MediaError(
            info.path,
            f"the audio track decodes to {info.audio_duration:.2f} s but the video lasts "
            f"{info.video_duration:.2f} s (truncated or corrupt audio)",
        )


def probe(path: str | os.PathLike, streams: tuple[str, ...] = ("audio", "video"), verify: bool = False) -> MediaInfo:
    """Describe a file, raising `MediaError` if a requested stream is present but unreadable.

    A stream not in ``streams`` is reported as ``None`` (not checked). Each stream gets the first
    backend (`AUDIO_BACKENDS`, `VIDEO_BACKENDS`) that reads it, and later reads of the file in this
    process use the same. Container audio is decoded in full here (decord cannot do less) and
    cached for later reads. ``verify`` also decodes the last video frame (catching containers that
    claim more frames than they hold) and reads all of the audio (NaN/Inf, a file shorter than its
    header, digital silence).

    This opens the file in the calling process, and a corrupt file can abort that process: long
    jobs probe through the dataset index (`ttt_mm.data.index`), which runs this in a subprocess.
    """
    path = os.fspath(path)
    st = _stat(path)
    sf_info = _sf_info(path)
    if sf_info is not None and sf_info.format != "OGG":  # only Ogg among libsndfile formats holds video
        present = _Streams(audio=True, video=False)
    else:
        present = _streams_present(path)  # FFmpeg's list of streams: which ones a backend must read
        if present is None and sf_info is None:
            raise MediaError(path, _UNREADABLE)
    fields: dict = {"path": path, "num_bytes": st.st_size, "has_audio": None, "has_video": None}
    if "video" in streams:
        fields |= _probe_video(path, None if present is None else present.video, verify)
    if "audio" in streams:
        fields |= _probe_audio(path, present, verify)
    if not fields["has_audio"] and not fields["has_video"]:
        raise MediaError(path, "no " + " or ".join(s for s in ("audio", "video") if s in streams) + " stream")
    info = MediaInfo(**fields)
    check_audio_covers_video(info)
    return info
