"""Calls into the native decoders: each under the watchdog, with its failure turned into a
`MediaError` that says in words what went wrong, and the PyAV helpers every reader shares."""

from __future__ import annotations

import os
import re

import av
import decord

from ttt_mm.data.decode.errors import MediaError
from ttt_mm.data.decode.guard import DecodeTimeout, native_stderr_silenced, run_with_timeout
from ttt_mm.messages import first_line

decord.logging.set_level(decord.logging.QUIET)

DECODE_TIMEOUT_S = 60.0
"""Base deadline for one native decode call; more is allowed per byte opened and per frame read."""

UNREADABLE = "not a readable media container (ffmpeg could not open it)"
NO_AUDIO_DECODER = "its audio codec has no decoder here (neither FFmpeg nor libsndfile reads it)"

_AVERROR = {-1094995529: "invalid data", -1381258232: "stream not found", -541478725: "end of file"}

_DECODER_ERRORS = (decord.DECORDError, av.error.FFmpegError, RuntimeError, ValueError, IndexError, MemoryError)
"""What decoders raise for a file they cannot read (PyAV's errors are also ValueError/OSError subclasses)."""


_TRIPPED = (AttributeError, TypeError, KeyError, ZeroDivisionError, OverflowError, UnicodeError)
"""What a decoder's own Python code raises where a damaged file gives it a field it does not expect (a
missing codec context, a None duration): the file's fault. Others, such as OSError for too many open
files, are the process's and propagate."""


def open_timeout(st: os.stat_result) -> float:
    """Deadline for opening a file: opening demuxes the whole file, so allow >= 2 MB/s."""
    return DECODE_TIMEOUT_S + st.st_size / 2e6


def _decord_reason(exc: BaseException, what: str) -> str:
    """decord's message without its timestamp and source location, ffmpeg codes named."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", first_line(exc))
    if "cannot find video stream" in text:
        return "no video stream"
    if "Can't find audio stream" in text:
        return "no audio stream"
    if "ERROR opening" in text or text.startswith("Error reading"):
        return UNREADABLE
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
            return UNREADABLE
        text = (exc.strerror or "").strip() or first_line(exc)
    else:
        text = first_line(exc)
    return f"{what} failed: {text.splitlines()[0][:200]}"


def call(path: str, what: str, fn, timeout: float, reader=None, error: type[MediaError] = MediaError):
    """Call a decoder under the watchdog; any decoder failure becomes a MediaError naming the file (the
    decoder's own error: an ``error``), also where a damaged file trips the decoder's own Python code
    (`_TRIPPED`). ``reader`` is the handle to abandon (never free) if the call does not return in time."""
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
        raise error(path, _pyav_reason(exc, what)) from None
    except _DECODER_ERRORS as exc:
        if isinstance(exc, RuntimeError) and "decoder calls never returned" in str(exc):
            raise
        raise error(path, _decord_reason(exc, what)) from None
    except _TRIPPED as exc:  # (a damaged file trips a decoder's own code: an AttributeError ended the job)
        raise MediaError(path, f"{what} failed: {type(exc).__name__}: {first_line(exc)[:200]}") from None


def av_open(path: str):
    """A PyAV input container; broken text tags (title, artist) do not make a file unreadable."""
    return av.open(path, metadata_errors="ignore")


def video_stream(container):
    """The first video stream that is a picture sequence (cover art is not video), or None."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None
