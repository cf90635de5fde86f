"""The only module that calls decoders: probe a file, read audio or video by time.

Backends, chosen by content rather than extension:

- audio that libsndfile can open (wav, flac, ogg/vorbis, mp3, aiff, ...) is read with ``soundfile``
  by seeking, so a 10 s window of a 2 h file costs 10 s of decoding; other sample rates are
  resampled with ``torchaudio.functional.resample`` on block-aligned spans with context on both
  sides, so consecutive windows join into exactly the one-shot resampled signal;
- audio in other containers (the audio track of a video, m4a, webm, ...) is read with decord's
  ``AudioReader`` (mono, resampled by decord: asking for stereo can corrupt a channel). decord decodes
  the whole track when the reader is created (``AudioReader::Decode`` runs to the end of the file),
  at about 750x real time to 16 kHz here, so the decoded track is cached per process (bounded by
  `AUDIO_CACHE_SAMPLES`) and later windows are slices: an hour of container audio costs ~5 s and
  230 MB once per worker. Extract such audio to FLAC if many long files are sampled at random;
- video is read with decord's ``VideoReader`` (``num_threads=1``): frames are picked by timestamp
  on a grid of ``fps``, decoded at a size whose short side is ``size`` (scaled by ffmpeg inside
  decord), then center-cropped. Only the frames of the window are decoded (from the key frame
  before it).

Decord traps handled here: readers are created lazily in the process that reads (a DataLoader
worker), never shared across a fork (see `guard`); indices never pass the last indexed frame and
every native call runs under a watchdog, because decord can loop forever when a container claims
frames it cannot decode; ffmpeg's logging and decord's own stderr output are silenced so a bad
file costs one log line.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import decord
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from decord.bridge import to_torch
from torch import Tensor

from ttt_mm.data.guard import DecodeTimeout, LRUCache, native_stderr_silenced, run_with_timeout

decord.logging.set_level(decord.logging.QUIET)

DECODE_TIMEOUT_S = 60.0
"""Base deadline for one native decode call; more is allowed per byte opened and per frame read."""

QUIET_NATIVE_STDERR = True
"""Silence what decord prints to stderr during its calls (its errors reach us as exceptions anyway)."""

AUDIO_CACHE_SAMPLES = 2**26
"""Decoded container-audio samples kept per process (2**26 float32 = 256 MiB, ~70 min at 16 kHz)."""

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
    audio_backend: str | None = None  # "soundfile" or "decord"
    video_duration: float | None = None
    fps: float | None = None  # native average frame rate
    n_frames: int | None = None  # frames in the container's packet index
    size: tuple[int, int] | None = None  # native (width, height)
    silent: bool | None = None  # set by probe(verify=True): the audio is digital silence

    @property
    def duration(self) -> float:
        """Length of the longest stream present (0 if none)."""
        return max(self.audio_duration or 0.0, self.video_duration or 0.0)


# ---------------------------------------------------------------------------------------- helpers


def _stat(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError(path, "file not found") from None
    except OSError as exc:
        raise MediaError(path, f"cannot stat: {exc.strerror}") from None
    if not os.path.isfile(path):
        raise MediaError(path, "not a regular file")
    if st.st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return st


_AVERROR = {-1094995529: "invalid data", -1381258232: "stream not found", -541478725: "end of file"}


def _decord_reason(exc: BaseException, what: str) -> str:
    """decord's message without its timestamp and source location, ffmpeg codes named."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)
    if "cannot find video stream" in text:
        return "no video stream"
    if "Can't find audio stream" in text:
        return "no audio stream"
    if "ERROR opening" in text or text.startswith("Error reading"):
        return "not a readable media container (ffmpeg could not open it)"
    if "Error sending packet" in text:
        text = "the decoder rejected a packet (corrupt or missing frame data)"
    elif "run_.load()" in text:  # decord's decoder thread stopped after an earlier packet error
        text = "the decoder stopped after a bad packet (corrupt or missing frame data)"
    elif "av_read_frame failed" in text:
        text = "the container is truncated or corrupt (" + text.split("Error: ")[-1] + ")"
    elif "avfilter_graph_create_filter" in text:
        text = "the video stream cannot be decoded (no frames or unknown format)"
    for code, name in _AVERROR.items():
        text = text.replace(str(code), f"{code} ({name})").replace(str(-code), f"{-code} ({name})")
    return f"{what} failed: {text[:200]}"


def _native(path: str, what: str, fn, timeout: float, reader=None):
    """Call decord under the watchdog; any failure becomes a MediaError naming the file."""
    try:
        if QUIET_NATIVE_STDERR:
            with native_stderr_silenced():
                return run_with_timeout(fn, timeout, f"{what} of {path}", abandon_on_timeout=reader)
        return run_with_timeout(fn, timeout, f"{what} of {path}", abandon_on_timeout=reader)
    except DecodeTimeout:
        raise MediaError(
            path,
            f"{what} did not return within {timeout:.0f} s (decord loops forever when a container "
            "claims frames it cannot decode); the reader was abandoned",
        ) from None
    except (decord.DECORDError, RuntimeError, IndexError) as exc:
        if isinstance(exc, RuntimeError) and "decoder calls never returned" in str(exc):
            raise
        raise MediaError(path, _decord_reason(exc, what)) from None


def _sf_info(path: str):
    """libsndfile's view of the file, or None when it cannot read it (cached per file version)."""
    st = _stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    cached = _sf_infos.get(key)
    if cached is None:
        try:
            with native_stderr_silenced():  # libmpg123 prints "Note: ..." lines on bad MP3 data
                cached = (sf.info(path),)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            cached = (None,)
        _sf_infos.put(key, cached)
    return cached[0]


# ------------------------------------------------------------------------------------------ video


@dataclass(frozen=True)
class _VideoIndex:
    starts: np.ndarray  # [n] float64 seconds, presentation start of each indexed frame
    duration: float  # end of the last frame
    fps: float
    size: tuple[int, int]  # native (width, height) after rotation


_video_index: LRUCache[_VideoIndex] = LRUCache(max_items=4096)
_video_readers: LRUCache[decord.VideoReader] = LRUCache(max_items=4)
_audio_tracks: LRUCache[Tensor] = LRUCache(max_items=64, max_cost=AUDIO_CACHE_SAMPLES)
_sf_infos: LRUCache[tuple] = LRUCache(max_items=4096)


def clear_caches() -> None:
    """Close this process's cached readers and decoded audio tracks (benchmarks, tests, memory)."""
    for cache in (_video_index, _video_readers, _audio_tracks, _sf_infos):
        cache.clear()


def _open_timeout(st: os.stat_result) -> float:
    return DECODE_TIMEOUT_S + st.st_size / 2e6  # opening demuxes the whole file: allow >= 2 MB/s


def _index(path: str) -> _VideoIndex:
    st = _stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    index = _video_index.get(key)
    if index is not None:
        return index
    reader = _native(path, "opening the video", lambda: decord.VideoReader(path, num_threads=1), _open_timeout(st))
    n = len(reader)
    if n < 1:
        raise MediaError(path, "video stream has no frames")
    fps = float(reader.get_avg_fps())
    first = _native(path, "decoding frame 0", lambda: reader.get_batch([0]), DECODE_TIMEOUT_S, reader)
    height, width = first.shape[1:3]
    stamps = np.asarray(reader.get_frame_timestamp(list(range(n))), dtype=np.float64)
    starts, stops = stamps[:, 0], stamps[:, 1]
    if not (np.isfinite(stamps).all() and (n == 1 or (np.diff(starts) > 0).all())):
        if not fps > 0:
            raise MediaError(path, "video has neither usable timestamps nor a frame rate")
        starts = np.arange(n) / fps  # broken timestamps: fall back to the average frame rate
        stops = starts + 1.0 / fps
    last = stops[-1] if stops[-1] > starts[-1] else starts[-1] + 1.0 / (fps if fps > 0 else 30.0)
    if not fps > 0:
        fps = n / last
    return _video_index.put(key, _VideoIndex(starts, float(last), fps, (int(width), int(height))))


def _scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Frame size whose short side is `size` (aspect kept), before the center crop."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def read_video(
    path: str | os.PathLike, start: float = 0.0, duration: float | None = None, fps: float = 8.0, size: int = 128
) -> Tensor:
    """Frames of ``[start, start + duration)`` sampled at ``fps``: uint8 ``[T, 3, size, size]`` RGB.

    Frame ``k`` shows what is on screen at ``start + k / fps`` (the last source frame starting at
    or before it), so variable frame rates and odd native rates are handled. The window is cut at
    the end of the video, so ``T`` can be smaller than ``duration * fps`` (0 past the end).
    """
    path = os.fspath(path)
    if start < 0:
        raise ValueError(f"start must be >= 0 for video, got {start}")
    index = _index(path)
    end = index.duration if duration is None else min(start + duration, index.duration)
    count = max(0, math.ceil((end - start) * fps - 1e-6))
    if count == 0:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    times = start + np.arange(count) / fps
    frame_ids = np.searchsorted(index.starts, times + 1e-6, side="right") - 1
    frame_ids = np.clip(frame_ids, 0, len(index.starts) - 1)  # never past the indexed end
    unique, inverse = np.unique(frame_ids, return_inverse=True)

    width, height = _scaled_size(*index.size, size)
    st = _stat(path)
    key = (path, st.st_mtime_ns, st.st_size, width, height)
    reader = _video_readers.get(key)
    if reader is None:
        reader = _native(
            path,
            "opening the video",
            lambda: decord.VideoReader(path, num_threads=1, width=width, height=height),
            _open_timeout(st),
        )
        _video_readers.put(key, reader)
    what = f"decoding frames {unique[0]}-{unique[-1]}"
    try:
        batch = _native(path, what, lambda: reader.get_batch(unique.tolist()), DECODE_TIMEOUT_S + len(unique), reader)
    except MediaError:
        _video_readers.pop(key)  # its state is unknown after a failure
        raise
    frames = to_torch(batch).numpy()  # [U, H, W, 3] uint8, zero-copy
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
    """Native-rate mono samples ``[first, last)``; zeros outside the file."""
    out = torch.zeros(max(0, last - first), dtype=torch.float32)
    lo, hi = max(first, 0), min(last, info.frames)
    if hi <= lo:
        return out
    try:
        with sf.SoundFile(path) as f:
            f.seek(lo)
            data = f.read(hi - lo, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise MediaError(path, f"cannot read samples {lo}-{hi} (truncated or corrupt?): {exc}") from None
    if len(data) < hi - lo:
        raise MediaError(path, f"file ends at sample {lo + len(data)} but its header promises {info.frames}")
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


def _decord_track(path: str, sample_rate: int) -> Tensor:
    st = _stat(path)
    key = (path, st.st_mtime_ns, st.st_size, sample_rate)
    track = _audio_tracks.get(key)
    if track is None:
        reader = _native(
            path,
            "decoding the audio track",
            lambda: decord.AudioReader(path, sample_rate=sample_rate, mono=True),
            _open_timeout(st) + st.st_size / 1e5,
        )
        samples = np.asarray(reader._array)  # [1, n]; decord's own slicing builds an index per sample
        track = torch.from_numpy(samples.reshape(-1).astype(np.float32, copy=True))
        del reader
        _audio_tracks.put(key, track, cost=track.numel())
    return track


def read_audio(
    path: str | os.PathLike, start: float = 0.0, duration: float | None = None, sample_rate: int = 16000
) -> Tensor:
    """Mono float32 samples of ``[start, start + duration)`` at ``sample_rate``: ``[n]``.

    ``n = round(duration * sample_rate)``, cut at the end of the track. Samples before time 0 are
    zeros, so callers may read left context at the start of a file with a negative ``start``.
    """
    path = os.fspath(path)
    _stat(path)
    first = round(start * sample_rate)
    info = _sf_info(path)
    if info is not None:
        total = math.ceil(info.frames * sample_rate / info.samplerate)
        count = total - first if duration is None else round(duration * sample_rate)
        count = max(0, min(count, total - first))
        samples = _sf_window(path, info, first, count, sample_rate)
    else:
        track = _decord_track(path, sample_rate)
        count = len(track) - first if duration is None else round(duration * sample_rate)
        count = max(0, min(count, len(track) - first))
        samples = torch.zeros(count, dtype=torch.float32)
        lo = max(first, 0)
        if count and lo < first + count:
            samples[lo - first :] = track[lo : first + count]
    return _check_finite(path, samples, start, sample_rate)


# ------------------------------------------------------------------------------------------ probe


def probe(path: str | os.PathLike, streams: tuple[str, ...] = ("audio", "video"), verify: bool = False) -> MediaInfo:
    """Describe a file, raising `MediaError` if a requested stream is present but unreadable.

    A stream not in ``streams`` is reported as ``None`` (not checked). Container audio is decoded
    in full here (decord cannot do less), and cached for later reads. ``verify`` also decodes the
    last video frame (catching containers that claim more frames than they hold) and scans all of
    the audio for NaN/Inf and for digital silence.
    """
    path = os.fspath(path)
    st = _stat(path)
    info = _sf_info(path)
    fields: dict = {"path": path, "num_bytes": st.st_size, "has_audio": None, "has_video": None}
    if "video" in streams:
        if info is not None and info.format != "OGG":  # only Ogg among libsndfile formats holds video
            fields["has_video"] = False
        else:
            try:
                index = _index(path)
            except MediaError as exc:
                if exc.reason != "no video stream" and info is None:
                    raise
                fields["has_video"] = False
            else:
                n = len(index.starts)
                fields.update(has_video=True, video_duration=index.duration, fps=index.fps, n_frames=n, size=index.size)
                if verify and len(read_video(path, float(index.starts[-1]), 1e-3, fps=1.0, size=16)) != 1:
                    raise MediaError(path, f"the last indexed frame ({n - 1}) cannot be read")
    if "audio" in streams:
        rate = 16000
        if info is not None:
            rate = info.samplerate
            fields.update(has_audio=True, audio_duration=info.frames / rate, sample_rate=rate, channels=info.channels)
            fields["audio_backend"] = "soundfile"
        else:
            try:
                track = _decord_track(path, rate)
            except MediaError as exc:
                if exc.reason != "no audio stream":
                    raise
                fields["has_audio"] = False
            else:
                fields.update(has_audio=True, audio_duration=len(track) / rate, audio_backend="decord")
        if verify and fields["has_audio"]:
            peak, step = 0.0, 60.0
            for t in np.arange(0.0, fields["audio_duration"], step):
                chunk = read_audio(path, float(t), step, rate)  # raises on NaN/Inf
                peak = max(peak, float(chunk.abs().max())) if len(chunk) else peak
            fields["silent"] = peak == 0.0
        video_duration = fields.get("video_duration")
        if fields["has_audio"] and video_duration and fields["audio_duration"] < 0.5 * video_duration:
            raise MediaError(
                path,
                f"the audio track decodes to {fields['audio_duration']:.2f} s but the video lasts "
                f"{video_duration:.2f} s (truncated or corrupt audio)",
            )
    if not fields["has_audio"] and not fields["has_video"]:
        raise MediaError(path, "no " + " or ".join(s for s in ("audio", "video") if s in streams) + " stream")
    return MediaInfo(**fields)
