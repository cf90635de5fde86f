"""The only package that calls decoders: probe a file, read audio or video by time.

Backends are chosen per file and per stream when the file is first probed (`probe`; the dataset
index records the choice, see `ttt_mm.data.index`), by content rather than extension:

- ``soundfile`` (libsndfile) for audio it can open (wav, flac, ogg/vorbis/opus, mp3, aiff, ...),
  read by seeking (`audio`);
- ``decord`` for video and for audio in other containers;
- ``pyav`` (PyAV, which ships its own FFmpeg and raises Python exceptions) for the streams decord
  cannot open or decode: codecs its FFmpeg 4.1 lacks (AV1 video, DFPWM audio, ...) and containers
  or tracks it fails on;
- ``pyav_from_start`` (`FROM_START`) for a video whose seeks land on other pictures (an MPEG program
  or transport stream, key frames that cannot start a decode): every window is reached by decoding
  from the first frame, which bounds the length of such a video it accepts.

torchcodec is not used: it needs a system FFmpeg (this project installs from wheels alone, and
torchaudio no longer decodes files without it), and its wheels pin one torch version each; PyAV
covers the same FFmpeg in a self-contained wheel.

Decord traps handled here: readers are created lazily in the process that reads (a DataLoader
worker), never shared across a fork (`guard`); indices never pass the last indexed frame and
every native call runs under a watchdog (`native`), because decord can loop forever when a
container claims frames it cannot decode; ffmpeg's logging and decord's own stderr output are
silenced so a bad file costs one log line. A decoder can also abort the whole process on a corrupt
file (decord throws ``std::bad_alloc``), which no watchdog catches: that is why files are first
opened in a subprocess (`isolation`) by the dataset index, and only files it found good reach
these functions in a long job.
"""

import math
import numbers
import os

from torch import Tensor

from ttt_mm.data.decode import audio, backends, video
from ttt_mm.data.decode.backends import AUDIO_BACKENDS, FROM_START, VIDEO_BACKENDS
from ttt_mm.data.decode.errors import MediaError, NotAsProbed, stat_reason
from ttt_mm.data.decode.probing import MediaInfo, check_audio_covers_video, chosen, probe
from ttt_mm.data.decode.video import video_timeline

VERSION = 9
"""Bump when what a file decodes to changes (its timeline, channel mix, rotation, which backend reads
it first): embeddings made by another version are made again (`ttt_mm.embed.files`)."""

__all__ = [
    "AUDIO_BACKENDS",
    "FROM_START",
    "VERSION",
    "VIDEO_BACKENDS",
    "MediaError",
    "MediaInfo",
    "NotAsProbed",
    "check_audio_covers_video",
    "clear_caches",
    "probe",
    "read_audio",
    "read_video",
    "stat_reason",
    "video_timeline",
]


def read_video(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float | None = None,
    fps: float = 8.0,
    size: int = 128,
    backend: str | None = None,
) -> Tensor:
    """Frames of ``[start, start + duration)`` sampled at ``fps``: uint8 ``[T, 3, size, size]`` RGB
    (`video.read_frames`). ``backend`` is one of `VIDEO_BACKENDS`; None: the one `probe` chose."""
    path = os.fspath(path)
    if not start >= 0 or math.isinf(start):  # (NaN too)
        raise ValueError(f"start must be a number of seconds >= 0 for video, got {start}")
    duration = _to_the_end(duration)
    if not fps > 0 or math.isinf(fps):
        raise ValueError(f"fps must be a number of frames per second > 0; got {fps}")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be a whole number of pixels >= 1; got {size!r}")
    return video.read_frames(path, start, duration, fps, size, chosen(path, "video") if backend is None else backend)


def _to_the_end(duration: float | None) -> float | None:
    """A read's ``duration`` as the readers take it (None, or infinity: to the end of the file)."""
    if duration is None or duration == math.inf:
        return None
    if not duration >= 0:  # (NaN too; a negative one read nothing, without a word)
        raise ValueError(f"duration must be a number of seconds >= 0, or None for the rest of the file; got {duration}")
    return duration


def read_audio(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float | None = None,
    sample_rate: int = 16000,
    backend: str | None = None,
) -> Tensor:
    """Mono float32 samples of ``[start, start + duration)`` at ``sample_rate``: ``[n]``, silence before
    the file's start (a negative ``start`` reads left context; `audio.read_samples`). ``backend`` is one
    of `AUDIO_BACKENDS`; None: the one `probe` chose. Where that one's read fails, the file is probed
    again with ``verify``, which reads it through: a file that holds less than its header says (cut
    short) goes on to the backend that reads it as far as it goes, as in the dataset index."""
    path = os.fspath(path)
    if not math.isfinite(start):
        raise ValueError(f"start must be a number of seconds; got {start}")
    duration = _to_the_end(duration)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate < 1:
        raise ValueError(f"sample_rate must be a whole number of samples per second >= 1; got {sample_rate!r}")
    if backend is not None:
        return audio.read_samples(path, start, duration, sample_rate, backend)
    choice = chosen(path, "audio")
    try:
        return audio.read_samples(path, start, duration, sample_rate, choice)
    except MediaError:
        if (verified := probe(path, streams=("audio",), verify=True).audio_backend) == choice:
            raise
    return audio.read_samples(path, start, duration, sample_rate, verified)


def clear_caches() -> None:
    """Close this process's cached readers and decoded audio tracks (benchmarks, tests, memory)."""
    video.clear()
    audio.clear()
    backends.clear()
