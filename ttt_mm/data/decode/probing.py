"""What a file holds (`MediaInfo`), found by opening each stream with the first backend that reads
it; `verify` also decodes its ends, so a file that would fail halfway through training fails here."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import av
import numpy as np

from ttt_mm.data.decode.audio import AUDIO_SHORTFALL_S, UNCOMPRESSED, ogg_peak, placed_track, read_samples, sf_info
from ttt_mm.data.decode.backends import AUDIO_BACKENDS, FROM_START, VIDEO_BACKENDS, recorded, remember
from ttt_mm.data.decode.errors import (
    FramesRefused,
    MediaError,
    NothingDecodes,
    checked_stat,
    open_reason,
    without_frames,
    zeroed_tail_bytes,
)
from ttt_mm.data.decode.isobmff import missing_index
from ttt_mm.data.decode.native import NO_AUDIO_DECODER, UNREADABLE, av_open, video_stream
from ttt_mm.data.decode.pcm_header import stated_frames
from ttt_mm.data.decode.video import (
    TIME_UNSEEKABLE_FORMATS,
    decode_in_order,
    read_frames,
    seeks_land_exactly,
    video_index,
)

ESTIMATED_LENGTH_FORMATS = frozenset({"mp3", "aac", "ac3", "eac3", "mp2", "dts"})
"""Raw audio streams whose length FFmpeg estimates from the bit rate (a VBR file's estimate is off by
any amount): their decoded length is not held against it."""
VIDEO_SHORTFALL_S = 0.5
"""How much shorter than its stated length a video may index before the file is called cut short (the
frames of a truncated MP4 are listed in its index, but their data is not in the file). Whole files
index to their stated length, to the frame."""
RAW_VIDEO_FORMATS = frozenset({"mjpeg", "h264", "hevc", "m4v", "mpegvideo", "h261", "h263", "vc1", "cavsvideo"})
"""FFmpeg's names of raw video streams, which hold frames without a container's timing."""
CONTAINER_SUFFIXES = frozenset({".mp4", ".mov", ".3gp", ".mkv", ".webm", ".avi"})
"""Names of files that hold a container: one that FFmpeg reads as a raw video stream (`RAW_VIDEO_FORMATS`)
lost its container's header, and with it the frames' timing (FFmpeg assumes 25 fps) and any other stream.
(Not ``.m4v``: FFmpeg's own name for a raw MPEG-4 video stream, as well as Apple's for an MP4.)"""
INDEXED_VIDEO_FORMATS = frozenset({"mov", "mp4", "matroska"})
"""FFmpeg's names of the containers whose stated video length is held against what indexes: an MP4 or
MOV states the length its sample index lists, a Matroska or WebM file the length its muxer counted
(`_stated`: a file still being recorded states none). Elsewhere a shorter index is no sign of a cut: an
AVI's header counts the empty chunks that repeat a frame."""


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
    audio_stated: float | None = None  # the length the file states, when its audio decodes well short of it
    video_stated: float | None = None  # the same for the video (a file cut short: frames indexed but not there)
    audio_gaps: float | None = None  # seconds missing inside the audio (dropped packets, gaps), read as silence
    audio_late: float | None = None  # seconds of the video before its sound starts, read as silence
    audio_streams: int | None = None  # audio streams in the file, where more than one: the first is read
    video_gaps: float | None = None  # seconds inside the video no frame covers: the picture before shows on
    zeroed_tail: int | None = None  # zero bytes that end the file (`ZEROED_TAIL_BYTES` or more): unfinished?
    mtime_ns: int | None = None  # the file's modification time when it was probed (None: not known)

    @property
    def duration(self) -> float:
        """Length of the longest stream present (0 if none)."""
        return max(self.audio_duration or 0.0, self.video_duration or 0.0)


# A zeroed tail (`ZEROED_TAIL_BYTES` or more): the sound of a file read as far as its data goes stops
# early without a sign, where its format states no length (Ogg, MP3), and a video's frames that lie in
# the zeros are left out of its index (`video._pyav_index`). Uncompressed audio (WAV, AIFF) is not
# counted: its digital silence is zero bytes.
def zeroed_tail(path: str, libsndfile) -> int | None:
    """How many zero bytes end the file, where they are `ZEROED_TAIL_BYTES` or more (None: fewer, or
    uncompressed audio, ``libsndfile``'s view of the file saying so)."""
    if libsndfile is not None and UNCOMPRESSED.fullmatch(libsndfile.subtype or ""):
        return None
    return zeroed_tail_bytes(path)


@dataclass(frozen=True)
class _Streams:
    """The streams FFmpeg (PyAV) finds in a container, and the audio's native format."""

    audio: bool
    video: bool
    sample_rate: int | None = None
    channels: int | None = None
    audio_decoder: bool = True  # False: FFmpeg lists the audio stream but has no decoder for its codec
    audio_seconds: float | None = None  # the audio stream's length as the container states it (None: unknown)
    video_seconds: float | None = None  # the video stream's, likewise
    video_seekable: bool = True  # False: an MPEG program or transport stream (`TIME_UNSEEKABLE_FORMATS`)
    empty: bool = False  # FFmpeg opens the container but finds no stream of any kind in it
    raw_format: str | None = None  # a container's file read as a raw video stream (`CONTAINER_SUFFIXES`)
    audio_streams: int = 1  # audio streams in the container: the first is read


def _streams_present(path: str) -> _Streams | None:
    """What the container holds as FFmpeg (PyAV) sees it, or None if it cannot open the file."""
    try:
        with av_open(path) as container:
            audio = container.streams.audio[0] if container.streams.audio else None
            picture = video_stream(container)
            video = picture is not None
            formats = set(container.format.name.split(","))  # ("mov,mp4,m4a,3gp,3g2,mj2": one demuxer's names)
            estimated = container.format.name in ESTIMATED_LENGTH_FORMATS
            of_video = {
                "video_seekable": not formats & TIME_UNSEEKABLE_FORMATS,
                "video_seconds": _stated(picture) if formats & INDEXED_VIDEO_FORMATS else None,
            }
            if not len(container.streams):
                return _Streams(False, False, empty=True)
            if container.format.name in RAW_VIDEO_FORMATS and os.path.splitext(path)[1].lower() in CONTAINER_SUFFIXES:
                return _Streams(False, video, raw_format=container.format.name)
            if audio is None:
                return _Streams(False, video, **of_video)
            if audio.codec_context is None:  # an unknown codec (a WAV or AVI format tag FFmpeg lacks)
                return _Streams(True, video, audio_decoder=False, **of_video)
            rate, channels = audio.codec_context.sample_rate, audio.codec_context.channels
            if not (rate or channels or video):  # a format guessed from the name alone (a text file called .flac)
                return None
            seconds = None if estimated else _stated(audio)
            if seconds is not None and "ogg" in formats and not video and audio.start_time:
                # FFmpeg starts an Ogg stream at its first page it reads whole: damage before it moves the
                # start, while the last page's position (start plus duration) is the stream's length
                seconds += max(0.0, float(audio.start_time * audio.time_base))
            return _Streams(
                True,
                video,
                rate or None,
                channels or None,
                audio_seconds=seconds,
                audio_streams=len(container.streams.audio),
                **of_video,
            )
    except (av.error.FFmpegError, ValueError, MemoryError):
        return None


def _stated(stream) -> float | None:
    """A stream's length as its container states it, in seconds (None: not stated, or no stream): its
    duration, else the ``DURATION`` tag a Matroska muxer writes once the file is whole (``01:02:03.5``;
    FFmpeg's, or ``DURATION-eng`` as mkvmerge names it), which a file cut short keeps. The tag is where
    the stream ends on the file's clock, so a stream that starts late (sound after the first frame)
    is that much shorter."""
    if stream is None:
        return None
    if stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = next((v for k, v in stream.metadata.items() if k.upper().split("-")[0] == "DURATION"), None)
    found = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", str(tag).strip()) if tag else None
    if not found:
        return None
    start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
    return int(found[1]) * 3600 + int(found[2]) * 60 + float(found[3]) - max(0.0, start)


def _first_reason(errors: list[MediaError], stream: str) -> MediaError:
    """The most telling of the backends' errors: the first that is not just "no <stream> stream"."""
    return next((e for e in errors if e.reason != f"no {stream} stream"), errors[0])


NO_STREAMS = "the container holds no streams (cut short before its first stream, or damaged)"
RAW_STREAM = (
    "a damaged {kind} container: FFmpeg finds only a raw {raw} stream in it (the header is lost, and with it the "
    "frames' timing and any other stream)"
)
FROM_START_MAX_PIXELS = 2_000_000_000
"""The most decoded pixels (frames x width x height) a video read only from its start (`FROM_START`) may
hold: about 6,500 frames of 640x480 or 1,000 of 1080p, a few seconds of decoding for the window
furthest in. A longer one is left out with how to re-encode it, which makes it seekable."""
SEEKS_LAND_OFF = "video frames read after a seek are not the frames read in order at that place"
"""A backend's seeks land off: the next backend is tried, and `FROM_START` last."""
WHY_READ_FROM_START = {
    True: "key frames that cannot start a decode, or reordered frames decord seeks past",
    False: "an MPEG program or transport stream, which has no frame index",
}
FROM_START_TOO_LONG = (
    "video too long to decode from its start for each window ({n} frames of {width}x{height}, over "
    "{limit:.0e} decoded pixels)"
)
READ_FROM_START = (
    " (it is read from its start, as seeks in it land on other pictures: {why}); re-encode it, e.g. "
    "ffmpeg -i in{suffix} -c:v libx264 -c:a aac out.mp4"
)


def _check_read_from_start(path: str, present: _Streams, verify: bool) -> None:
    """Raise unless the video can be read from its start (`FROM_START`): small enough
    (`FROM_START_MAX_PIXELS`) and, with ``verify``, its indexed frames decode in order (those from the
    first that decodes on: `video._from_first_decoded`; all but a few damaged ones, which the picture
    before each stands in for: `video.decode_in_order`). The reason says why it is read so and how to
    re-encode it."""
    try:
        index = video_index(path, FROM_START)
        n, (width, height) = len(index.starts), index.size
        if n * width * height > FROM_START_MAX_PIXELS:
            raise MediaError(
                path, FROM_START_TOO_LONG.format(n=n, width=width, height=height, limit=FROM_START_MAX_PIXELS)
            )
        if verify:
            decode_in_order(path)
    except NothingDecodes:
        raise  # (no frame to re-encode: a hint about seeks would mislead)
    except MediaError as exc:
        why = WHY_READ_FROM_START[present.video_seekable]
        suffix = os.path.splitext(path)[1] or ".mp4"
        raise MediaError(path, exc.reason + READ_FROM_START.format(why=why, suffix=suffix)) from None


def _probe_video(path: str, present: _Streams | None, verify: bool) -> dict:
    """The video fields of `MediaInfo`, from the first backend that reads the stream. ``verify`` also
    reads the last frame and checks that the backend's seeks land on the frames asked for; where no
    backend's do, or a decoder refuses a packet after a seek (`_in_order_may_read`), or the container
    cannot seek (an MPEG program or transport stream), the video is read from its start (`FROM_START`),
    if `_check_read_from_start` passes."""
    if present is None or not present.video:
        return {"has_video": False}
    errors, short = [], None  # short: the first backend's fields that fell short of the stated length
    for backend in VIDEO_BACKENDS if present.video_seekable else (FROM_START,):
        if backend == FROM_START and present.video_seekable and not any(map(_in_order_may_read, errors)):
            continue  # (the last resort where seeks land off or damage stops reads that seek: see there)
        try:
            if backend == FROM_START:
                _check_read_from_start(path, present, verify)
            index = video_index(path, backend)
            if verify and backend != FROM_START:  # (which decoded every frame)
                # decord's last frame, which fails where it lists frames that hold no picture; PyAV's last
                # second, which a damaged last frame does not fail (the picture before it stands in)
                last = float(index.starts[-1])
                start, fps = (last, 1.0) if backend == "decord" else (max(0.0, last - 1.0), index.fps or 1.0)
                if not len(read_frames(path, start, None, fps, 16, backend, past_damage=False)):
                    raise MediaError(path, f"the last indexed frame ({len(index.starts) - 1}) cannot be read")
            if verify and not seeks_land_exactly(path, backend):
                raise MediaError(path, SEEKS_LAND_OFF)  # (the next backend may seek right)
        except MediaError as exc:
            # (the last resort's reason comes first: it says why the one way left to read it failed)
            errors.insert(len(errors) if backend != FROM_START else 0, without_frames(exc))
            continue
        fields = {"has_video": True, "video_backend": backend, "video_duration": index.duration, "fps": index.fps}
        fields |= {"n_frames": len(index.starts), "size": index.size}
        if round(index.gaps, 3):
            fields["video_gaps"] = round(index.gaps, 3)  # read with the picture before each, and said so
        if present.video_seconds is not None and index.duration < present.video_seconds - VIDEO_SHORTFALL_S:
            fields["video_stated"] = present.video_seconds  # read as far as it goes, and said so (`ttt_mm.data.index`)
            short = short or fields
            continue  # (the next backend may read it whole: decord ends a fragmented MP4 at its last frame's start)
        remember(path, "video", backend, checked=verify or backend == FROM_START)
        return fields
    if short is not None:
        remember(path, "video", short["video_backend"], checked=verify or short["video_backend"] == FROM_START)
        return short
    raise _first_reason(errors, "video")


def _probe_audio(path: str, present: _Streams | None, verify: bool) -> dict:
    """The audio fields of `MediaInfo`, from the first backend that reads the stream."""
    info = sf_info(path)
    if present is not None and not present.audio and info is None:
        return {"has_audio": False}
    errors = []
    for backend in AUDIO_BACKENDS:
        if backend == "soundfile" and (info is None or (present is not None and present.video)):
            continue  # (an Ogg video libsndfile opens: its sound is read on the video's timeline, by PyAV)
        if backend != "soundfile" and present is not None and not present.audio_decoder:
            errors.append(MediaError(path, NO_AUDIO_DECODER))  # (decord's FFmpeg has none either)
            continue
        try:
            if backend == "soundfile":
                rate = info.samplerate
                fields = {"audio_duration": info.frames / rate, "sample_rate": rate, "channels": info.channels}
                stated = stated_frames(path, info.frames)  # (libsndfile counts only the frames present)
                if stated is None and info.format == "OGG" and present is not None and present.audio_seconds:
                    # (the last page's position, as FFmpeg reads it: libsndfile's count ends at damage it
                    # cannot read past, and so do its reads and PyAV's)
                    stated = round(present.audio_seconds * rate)
                if stated is not None and (stated - info.frames) / rate > AUDIO_SHORTFALL_S:
                    fields["audio_stated"] = stated / rate
            else:
                rate = 16000  # the usual training rate: the decoded track is cached for the first reads
                track, placement = placed_track(path, rate, backend)
                fields = {"audio_duration": len(track) / rate}
                if present is not None and present.sample_rate:
                    fields |= {"sample_rate": present.sample_rate, "channels": present.channels}
                elif info is not None:  # (a format libsndfile opens: FFmpeg's view of it was not taken)
                    fields |= {"sample_rate": info.samplerate, "channels": info.channels}
                stated = _stated_seconds(info, present)
                if stated is not None:
                    stated += placement.moved  # (on the video's timeline: sound before its start is cut)
                if stated is not None and fields["audio_duration"] < stated - AUDIO_SHORTFALL_S:
                    fields["audio_stated"] = stated  # read as far as it goes, and said so (`ttt_mm.data.index`)
                if placement.gaps:
                    fields["audio_gaps"] = round(placement.gaps, 3)  # read as silence in place, and said so
                if placement.moved > 0:  # (the silence before the sound: no cover of the video)
                    fields["audio_late"] = round(placement.moved, 3)
                if present is not None and present.audio_streams > 1:  # (a film's dubs, a commentary: said)
                    fields["audio_streams"] = present.audio_streams
            if not fields["audio_duration"] > 0:
                raise MediaError(path, "the audio stream has no samples")
            if verify:
                fields["silent"] = _scan_audio(path, fields["audio_duration"], rate, backend)
        except MediaError as exc:
            errors.append(without_frames(exc))
            continue
        remember(path, "audio", backend, checked=verify)
        return {"has_audio": True, "audio_backend": backend, **fields}
    if present is None and all(e.reason == "no audio stream" for e in errors):
        return {"has_audio": False}
    raise _first_reason(errors, "audio")


def _stated_seconds(info, present: _Streams | None) -> float | None:
    """The audio's length as the file states it: libsndfile's (exact for its formats, not MP3's
    estimate), else the container's; None where neither is known. A truncated file decodes short of
    it (PyAV passes over a packet it cannot read, decord stops there): it is read as far as it goes,
    and the index says so."""
    if info is not None and info.format != "MPEG" and info.samplerate:
        return info.frames / info.samplerate
    return None if present is None else present.audio_seconds


def _scan_audio(path: str, duration: float, rate: int, backend: str) -> bool:
    """Read all of the audio (raising on NaN/Inf or a short file); True if it is digital silence."""
    if backend == "soundfile" and (info := sf_info(path)) is not None and info.format == "OGG":
        return ogg_peak(path, info) == 0.0  # (in one pass: reads across damage come early, unlike seeks)
    peak, step = 0.0, 60.0
    for t in np.arange(0.0, duration, step):
        chunk = read_samples(path, float(t), step, rate, backend)
        peak = max(peak, float(chunk.abs().max())) if len(chunk) else peak
    return peak == 0.0


def check_audio_covers_video(info: MediaInfo) -> None:
    """Raise if the audio track decodes to much less than the video (truncated or corrupt audio, or
    sound that starts late: the silence read before it covers nothing)."""
    late = info.audio_late or 0.0
    if info.has_audio and info.video_duration and info.audio_duration - late < 0.5 * info.video_duration:
        starts = f", from {late:.2f} s on" if late else ""
        raise MediaError(
            info.path,
            f"the audio track decodes to {info.audio_duration - late:.2f} s{starts}, but the video lasts "
            f"{info.video_duration:.2f} s (a truncated or corrupt track, or one that starts late or stops early)",
        )


def _in_order_may_read(error: MediaError) -> bool:
    """Whether reading from the start (`FROM_START`) may read a video that a backend failed on with
    ``error``: where its seeks land off, and where the decoder refused a packet after a seek (a damaged
    key frame: decoding in order, it holds the pictures before the damage and goes on past it).
    Elsewhere it would fail as PyAV did."""
    return error.reason == SEEKS_LAND_OFF or isinstance(error, FramesRefused)


def probe(path: str | os.PathLike, streams: tuple[str, ...] = ("audio", "video"), verify: bool = False) -> MediaInfo:
    """Describe a file, raising `MediaError` if a requested stream is present but unreadable.

    A stream not in ``streams`` is reported as ``None`` (not checked). Each stream gets the first
    backend (`AUDIO_BACKENDS`, `VIDEO_BACKENDS`) that reads it, and later reads of the file in this
    process use the same, once the first read checked it where that matters (`chosen`).
    Container audio is decoded in full here (decord cannot do less) and cached for later reads.
    ``verify`` also decodes the last video frame (catching containers that claim more frames than they
    hold), checks that seeks in it land on the frames asked for (`seeks_land_exactly`; where they do
    not, the video is read from its start, `FROM_START`, and every frame is decoded here), and reads
    all of the audio (NaN/Inf, a file shorter than its header, digital silence).

    This opens the file in the calling process, and a corrupt file can abort that process: long
    jobs probe through the dataset index (`ttt_mm.data.index`), which runs this in a subprocess.
    """
    path = os.fspath(path)
    st = checked_stat(path)
    if why := open_reason(path):
        raise MediaError(path, why)
    libsndfile = sf_info(path)
    if libsndfile is not None and libsndfile.format != "OGG":  # only Ogg among libsndfile formats holds video
        present = _Streams(audio=True, video=False)
    else:
        present = _streams_present(path)  # FFmpeg's list of streams: which ones a backend must read
        if present is None and libsndfile is None:
            hint = missing_index(path)
            raise MediaError(path, f"{UNREADABLE[:-1]}; {hint})" if hint else UNREADABLE)  # (counted as one kind)
        if present is not None and present.empty and libsndfile is None:
            raise MediaError(path, NO_STREAMS)
        if present is not None and present.raw_format:
            raise MediaError(
                path, RAW_STREAM.format(kind=os.path.splitext(path)[1][1:].upper(), raw=present.raw_format)
            )
    fields: dict = {
        "path": path,
        "num_bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "has_audio": None,
        "has_video": None,
    }
    fields["zeroed_tail"] = zeroed_tail(path, libsndfile)
    if "video" in streams:  # (present None: FFmpeg cannot open what libsndfile reads, so no video is readable)
        fields |= _probe_video(path, present, verify)
    if "audio" in streams:
        fields |= _probe_audio(path, present, verify)
    if not fields["has_audio"] and not fields["has_video"]:
        raise MediaError(path, "no " + " or ".join(s for s in ("audio", "video") if s in streams) + " stream")
    info = MediaInfo(**fields)
    check_audio_covers_video(info)
    return info


def chosen(path: str, stream: str) -> str:
    """The backend `probe` chose for this version of the file's stream (probing it if needed). A choice
    made without ``verify`` is checked where it may read other content than the index's choice: a
    video's seeks (`seeks_land_exactly`; where they land off, the file is probed again with ``verify``,
    which goes on to the backend that reads it right), and an Ogg file libsndfile reads (probed again
    with ``verify``, which reads it through once: where libsndfile passes over damage, PyAV reads it)."""
    choice = recorded(path, stream)
    if choice is None:
        info = probe(path, streams=(stream,))  # (which remembers its choice)
        if (info.audio_backend if stream == "audio" else info.video_backend) is None:
            raise MediaError(path, f"no {stream} stream")
        choice = recorded(path, stream)
    backend, checked = choice
    if checked:
        return backend
    if stream == "video":
        right = seeks_land_exactly(path, backend)
    else:  # (an Ogg file libsndfile reads is read through once: `ogg_peak`)
        right = backend != "soundfile" or sf_info(path).format != "OGG"
    if right:
        remember(path, stream, backend)  # (checked: later reads look it up alone)
        return backend
    info = probe(path, streams=(stream,), verify=True)
    return info.audio_backend if stream == "audio" else info.video_backend
