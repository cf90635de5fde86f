"""Audio samples by time, mono float32 at any sample rate.

``soundfile`` (libsndfile) reads the formats it opens by seeking, so a 10 s window of a 2 h file
costs 10 s of decoding; other sample rates are resampled with ``torchaudio.functional.resample``
on block-aligned spans with context on both sides, so consecutive windows join into exactly the
one-shot resampled signal. Audio in other containers is decoded whole by PyAV (channels averaged
as above, each frame at its timestamp, on the video's timeline: `_pyav_samples`) or, failing that,
decord (``AudioReader``, mono by FFmpeg's summing mix: asking it for channels corrupts them), and
cached per process (bounded by `AUDIO_CACHE_SAMPLES`): later windows are slices. Extract such audio
to FLAC if many long files are sampled at random.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import NamedTuple

import av
import decord
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from ttt_mm.data.decode import native
from ttt_mm.data.decode.backends import AUDIO_BACKENDS, check_backend
from ttt_mm.data.decode.errors import MediaError, checked_stat, version_key, zeroed_tail_bytes
from ttt_mm.data.decode.guard import LRUCache, native_stderr_silenced
from ttt_mm.data.decode.native import NO_AUDIO_DECODER, av_open, open_timeout, video_stream

log = logging.getLogger(__name__)

AUDIO_CACHE_SAMPLES = 2**26
"""Decoded container-audio samples kept per process (2**26 float32 = 256 MiB, ~70 min at 16 kHz)."""

AUDIO_SHORTFALL_S = 0.1
"""How far (seconds) an audio stream may end before the length its header promises and still be
read as a good file: the missing tail reads as silence. Encoders and muxers get the last packet's
length slightly wrong (a 6.5 min Opus track ending 10 samples short); more is a truncated file."""

_RESAMPLE_WIDTH, _RESAMPLE_ROLLOFF = 6, 0.99  # torchaudio.functional.resample defaults
_GAP_S = 0.01  # a jump in an audio stream's timestamps longer than this is filled with silence
_MAX_GAP_S = 600.0  # ... and one longer than this is a timestamp error: the frames follow on
_RESAMPLE_BLOCK = 2**20  # output samples resampled at once from a decoded track (bounds the filter's memory)

_audio_tracks: LRUCache[tuple[Tensor, Placement]] = LRUCache(max_items=64, max_cost=AUDIO_CACHE_SAMPLES)
_sf_infos: LRUCache[tuple] = LRUCache(max_items=4096)

UNCOMPRESSED = re.compile(r"PCM_.*|FLOAT|DOUBLE")
"""libsndfile's subtypes of uncompressed samples: zero bytes at their end are silence, not a zeroed tail."""


def clear() -> None:
    _audio_tracks.clear()
    _sf_infos.clear()


def sf_info(path: str):
    """libsndfile's view of the file, or None when it cannot read it (cached per file version)."""
    return _sf_entry(path)[0]


def _sf_entry(path: str) -> tuple:
    """``(sf_info, data_end)`` of this version of the file: ``data_end`` is where a zeroed tail
    (`zeroed_tail_bytes`) begins, None for a file without one."""
    st = checked_stat(path)
    key = version_key(path, st)
    cached = _sf_infos.get(key)
    if cached is None:
        zeros = zeroed_tail_bytes(path)
        data_end = st.st_size - zeros if zeros else None
        info = _libsndfile_info(path, data_end)
        if data_end is not None and (info is None or UNCOMPRESSED.fullmatch(info.subtype or "")):
            data_end, info = None, _libsndfile_info(path, None)  # (its zeros are samples: silence)
        cached = (info, data_end)
        _sf_infos.put(key, cached)
    return cached


def _libsndfile_info(path: str, data_end: int | None):
    try:
        with native_stderr_silenced(), _data_of(path, data_end) as source:  # (libmpg123 prints "Note: ...")
            return sf.info(source)
    except (sf.LibsndfileError, RuntimeError, TypeError, UnicodeError):  # (soundfile encodes names as UTF-8)
        return None


class _DataOnly:
    """A file's bytes up to ``end``, as libsndfile reads a file object. Asked an Ogg file's length,
    libsndfile scans back from the file's end for the last page, through all of a zeroed tail (an
    unfinished download's), at every open: 0.8 s for each window of a file that ends in 2 GB of zeros."""

    def __init__(self, f, end: int) -> None:
        self._f, self._end, self.name = f, end, f.name

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._f.tell(), os.SEEK_END: self._end}[whence]
        return self._f.seek(base + offset)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, size: int = -1) -> bytes:
        left = max(0, self._end - self._f.tell())
        return self._f.read(left if size < 0 else min(size, left))


@contextmanager
def _data_of(path: str, data_end: int | None):
    """What libsndfile opens for ``path``: the path, or its bytes before a zeroed tail (`_DataOnly`)."""
    if data_end is None:
        yield path
        return
    with open(path, "rb") as f:
        yield _DataOnly(f, data_end)


@contextmanager
def _sound_file(path: str):
    """``sf.SoundFile`` of this file's data (a zeroed tail left out: `_DataOnly`)."""
    with _data_of(path, _sf_entry(path)[1]) as source, sf.SoundFile(source) as f:
        yield f


def _check_finite(path: str, samples: Tensor, start: float, sample_rate: int) -> Tensor:
    bad = ~torch.isfinite(samples)
    if bad.any():
        first = start + int(bad.nonzero()[0, 0]) / sample_rate
        raise MediaError(path, f"{int(bad.sum())} NaN/Inf audio samples, the first at {first:.3f} s")
    return samples


def _sf_read(path: str, info, first: int, last: int) -> Tensor:
    """Native-rate mono samples ``[first, last)``; zeros outside the file.

    A file may hold fewer samples than its header says (a muxer that got the last packet's length
    wrong). libsndfile's FLAC reader then fills what it has and raises. The end is tolerated
    (silence) within `AUDIO_SHORTFALL_S` of the header's; anywhere else a read that raises is an error.
    """
    out = torch.zeros(max(0, last - first), dtype=torch.float32)
    lo, hi = max(first, 0), min(last, info.frames)
    if hi <= lo:
        return out
    data, got, exc = _sf_rows(path, lo, hi - lo, info)
    near_end = info.frames - (lo + got) <= AUDIO_SHORTFALL_S * info.samplerate
    if (exc is not None or got < hi - lo) and not near_end:
        if got == hi - lo:
            raise MediaError(path, f"cannot read samples {lo}-{hi} (truncated or corrupt?): {exc}")
        if got == 0 and exc is not None:
            raise MediaError(path, f"cannot read audio from sample {lo} (of {info.frames}): {exc}")
        raise MediaError(path, f"file ends at sample {lo + got} but its header promises {info.frames}")
    if got < hi - lo:
        log.debug(
            "%s: audio ends at sample %d, before its header says (%d); read as silence", path, lo + got, info.frames
        )
        data[got:] = 0.0
    mono = data @ np.full(data.shape[1], 1.0 / data.shape[1], dtype=np.float32)  # a BLAS call beats mean(axis=1)
    out[lo - first : hi - first] = torch.from_numpy(mono)
    return out


OGG_SEEK_LEAD_S = 1.0
"""libsndfile's seeks into the last Ogg page of a file (the last 0.15-0.65 s of the Vorbis files
tried) return samples up to 1% of full scale off those a read from the start gives; an Ogg read
seeks this much earlier and drops the lead-in, so that every window reads the same samples."""


def _sf_rows(path: str, lo: int, count: int, info) -> tuple[np.ndarray, int, Exception | None]:
    """``count`` rows from sample ``lo``, how many were read, and the libsndfile error that stopped the
    read, if any (then the first all-NaN row marks where; past a file's real end its seek fails).

    In a damaged Ogg stream libsndfile's seek can land elsewhere, and a read passes over the damaged
    pages, both without an error; its position then differs from the samples read, which is an
    error here (the samples are not those asked for; PyAV reads such a file with the gap in place)."""
    data = np.full((count, info.channels), np.nan, dtype=np.float32)
    lead = min(lo, round(OGG_SEEK_LEAD_S * info.samplerate)) if info.format == "OGG" else 0
    try:
        quiet = native_stderr_silenced() if info.format == "MP3" else nullcontext()
        with quiet, _sound_file(path) as f:  # (libmpg123 prints "Note: ..." on damage)
            if (landed := f.seek(lo - lead)) != lo - lead:
                raise RuntimeError(f"a seek to sample {lo - lead} landed at {landed} (a damaged stream?)")
            if lead:
                f.read(lead, dtype="float32", always_2d=True)
                if f.tell() < lo:  # (a file cut or rewritten since its length was taken)
                    raise RuntimeError(f"the stream ends at sample {f.tell()}, before it (cut short, or damaged?)")
            got = len(f.read(count, dtype="float32", always_2d=True, out=data))
            if f.tell() != lo + got:
                data[:] = np.nan
                raise RuntimeError(
                    f"reading samples {lo}-{lo + got} passed over {f.tell() - lo - got} of them (a damaged stream?)"
                )
            return data, got, None
    except (sf.LibsndfileError, RuntimeError) as exc:
        stopped = np.isnan(data).all(axis=1)
        return data, int(stopped.argmax()) if stopped.any() else count, exc


OGG_PASS_ROWS = 4096
"""Rows per read of `ogg_peak`'s pass. Whether libsndfile's reads across damage come out short depends
on their size: in reads of 2**18 rows, over half of 30 Vorbis files with 0.1-5% of their bytes zeroed
or overwritten read their full count (a window across the damage then held other samples than
PyAV's, or its read failed); in reads of 4096 rows none of 69 did, and 1851 undamaged Ogg files
read whole."""


def ogg_peak(path: str, info) -> float:
    """The peak of an Ogg file's samples, read from its start to its end in one pass, as libsndfile
    decodes them. libsndfile passes over a damaged stretch of an Ogg stream without an error and
    without a jump in its position: every later sample of a read across it comes early, while its
    seeks (by the pages' granule positions) land right. The one pass (in reads of `OGG_PASS_ROWS`)
    then reads fewer samples than the stream's length, which is an error here (PyAV reads such a file
    with the gap in place)."""
    read, peak = 0, 0.0
    try:
        with _sound_file(path) as f:
            mix = np.full(info.channels, 1.0 / info.channels, dtype=np.float32)  # (as `_sf_read` mixes)
            while len(block := f.read(OGG_PASS_ROWS, dtype="float32", always_2d=True)):  # (Vorbis, Opus: finite)
                peak, read = max(peak, float(np.abs(block @ mix).max())), read + len(block)
    except sf.LibsndfileError as exc:
        raise MediaError(path, f"cannot read audio from sample {read} (of {info.frames}): {exc}") from None
    if read != info.frames:
        raise MediaError(
            path,
            f"libsndfile passes over {abs(info.frames - read) / info.samplerate:.2f} s of this Ogg stream "
            f"(reads {read} of its {info.frames} samples from start to end: a damaged stream?)",
        )
    return peak


def _sf_window(path: str, info, first: int, count: int, sample_rate: int) -> Tensor:
    """Output-rate samples ``[first, first + count)`` of the (resampled) file, zeros before 0."""
    return _resampled_window(partial(_sf_read, path, info), info.samplerate, first, count, sample_rate)


def _resampled_window(read, rate: int, first: int, count: int, sample_rate: int) -> Tensor:
    """Samples ``[first, first + count)`` at ``sample_rate`` of the signal ``read(lo, hi)`` gives at
    ``rate`` (zeros outside it): resampled on whole blocks with context on both sides, so that
    consecutive windows join into the one-shot resampled signal (to float rounding: a few 1e-8, at
    most 2e-7 on the files tried, as the filter's sums run in another order)."""
    if rate == sample_rate:
        return read(first, first + count)
    g = math.gcd(rate, sample_rate)
    down, up = rate // g, sample_rate // g  # one block: `down` input -> `up` output samples
    width = math.ceil(_RESAMPLE_WIDTH * down / (min(down, up) * _RESAMPLE_ROLLOFF))
    context = math.ceil(width / down) + 1  # whole blocks of context on each side
    b0, b1 = first // up - context, -(-(first + count) // up) + context
    x = read(b0 * down, b1 * down)
    y = AF.resample(x, rate, sample_rate)[first - b0 * up : first - b0 * up + count]
    if first < 0:
        y[: min(-first, count)] = 0.0  # the filter rings before the first sample; the file has nothing there
    return y


class Placement(NamedTuple):
    """How a container's audio track was laid on the file's timeline (`_pyav_samples`)."""

    gaps: float  # seconds of silence put where the decoder dropped a stretch or no packets were sent
    moved: float  # seconds the track was moved later to start with the video (< 0: sound before the picture, cut)


def _decord_samples(path: str, sample_rate: int) -> tuple[np.ndarray, Placement]:
    """decord's track, as it comes (it mixes channels as FFmpeg does, summed, and knows no timeline:
    the last resort)."""
    samples = np.asarray(decord.AudioReader(path, sample_rate=sample_rate, mono=True)._array)  # [1, n]
    # decord's own slicing builds an index per sample: take the array (a copy: decord owns its memory)
    return samples.reshape(-1).astype(np.float32, copy=True), Placement(0.0, 0.0)


def _pyav_samples(path: str, sample_rate: int) -> tuple[np.ndarray, Placement]:
    """The first audio track at ``sample_rate`` and where it was placed (`Placement`): the mean
    of its channels (as soundfile files are mixed; FFmpeg's own mono mix sums them, up to 3.4x louder
    for 5.1), each frame at its timestamp (a stretch the decoder drops is silence, not a shift of all
    that follows) on the file's timeline (`_video_start`), then resampled as soundfile audio is (no
    resampler delay: sample k is at k / sample_rate) in blocks, so that a long track needs no more
    memory than its own size."""
    with av_open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # (a codec FFmpeg does not know: an AttributeError below)
            raise MediaError(path, NO_AUDIO_DECODER)
        rate = stream.codec_context.sample_rate
        packed = av.AudioResampler(format="flt")  # channels interleaved, layout and rate as stored
        blocks, times = [], []  # each decoded frame's mono samples, and its time (None: no timestamp)
        for frame in _readable_frames(_demuxed(container, stream)):
            try:
                outs = packed.resample(frame)
            except ValueError:  # another layout or rate than the frames before (damaged data, read as another format)
                if frame.sample_rate != rate:
                    continue  # not of this track's timeline: its stretch is a gap
                packed = av.AudioResampler(format="flt")
                outs = packed.resample(frame)
            blocks += [_channel_mean(out) for out in outs]
            times += [None if frame.pts is None else float(frame.pts * frame.time_base)] * (len(blocks) - len(times))
        blocks += [_channel_mean(out) for out in packed.resample(None)]
        times += [None] * (len(blocks) - len(times))
        origin = _video_start(container)
        stated = None if container.duration is None else container.duration / av.time_base
    samples, filled, shift = _placed(blocks, times, rate, stated, origin)
    placement = Placement(filled / rate, shift / rate) if rate else Placement(0.0, 0.0)
    if not rate or rate == sample_rate:
        return samples, placement
    return _resampled_track(samples, rate, sample_rate), placement


PRE_ROLL = 0.08
"""Seconds of audio a decoder needs after a jump before its output is the file's sound again: Opus's
pre-roll (RFC 7845), the longest of the common codecs (Vorbis, MP3 and AAC need one packet)."""


def _demuxed(container, stream):
    """The track's packets, each with whether its audio is to be heard. Where the demuxer stops on
    data it cannot parse (a damaged stretch of the container, which it does not pass over as a decoder
    passes over a bad packet: a zeroed stretch of an Ogg file longer than a page), it goes on from the
    first place after it that reads (`_resumed`), so that the rest of the track is read, the stretch a
    gap: the decoder starts afresh there, and the first `PRE_ROLL` seconds it decodes, which mix in
    what it had before or have not settled yet, are part of the gap. Where no place reads, the track
    ends at the damage (read as far as it goes). An error before the first packet is raised."""
    packets, last, heard_from, fresh = container.demux(stream), None, -math.inf, False
    while packets is not None:
        try:
            for packet in packets:
                at = _packet_time(packet)
                if heard_from > -math.inf and at is not None and at <= last:
                    continue  # (read before the damage already)
                last = at if at is not None else last
                if fresh:  # the first packet after the damage
                    stream.codec_context.flush_buffers()
                    heard_from, fresh = last + PRE_ROLL, False
                yield packet, last is None or last >= heard_from
            return
        except av.error.FFmpegError:
            if last is None:
                raise
            packets, fresh = _resumed(container, stream, last), True


def _resumed(container, stream, after: float):
    """Packets from the earliest place found after time ``after`` where demuxing works again, to
    within a second: seeks 1, 2, 4, ... s on (the last try at the track's end, so that damage ending
    in the last doubling does not cost the readable tail), then back by halves. None where nothing
    after it reads."""
    end = after + 86400.0 if container.duration is None else container.duration / av.time_base

    def attempt(t: float):  # packets from a seek to t, when the first timed one is after ``after``
        try:
            container.seek(int(t / stream.time_base), stream=stream)
            packets = container.demux(stream)
            for first in packets:
                if (at := _packet_time(first)) is not None:
                    return itertools.chain([first], packets) if at > after else None
        except av.error.FFmpegError:
            pass
        return None

    if stream.time_base is None:
        return None
    span, lo, hi = end - after, 0.0, 1.0  # (lo failed, or is the place of the damage)
    while attempt(after + hi) is None:
        if hi >= span:  # (on offsets, not times: after + (end - after) can fall an ulp short of end)
            return None
        lo, hi = hi, min(2 * hi, span)
    while hi - lo > 1.0:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if attempt(after + mid) is not None else (mid, hi)
    return attempt(after + hi)


def _packet_time(packet) -> float | None:
    return None if packet.pts is None or packet.time_base is None else float(packet.pts * packet.time_base)


def _readable_frames(packets):
    """The frames of ``packets`` (`_demuxed`'s: those of a packet not to be heard are decoded and
    dropped), passing over a packet the decoder refuses (cut short by a truncated file, or damaged):
    the frames after it keep their timestamps, so its stretch is a gap, not a shift, and a cut file is
    read as far as it goes. Only a track of which no packet decodes is an error (FFmpeg's reason for
    its first packet)."""
    first_error, decoded = None, False
    for packet, heard in packets:
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:  # (InvalidDataError for a cut packet; others for damaged data)
            first_error = first_error or exc
            continue
        decoded = decoded or bool(frames)
        if heard:
            yield from frames
    if first_error is not None and not decoded:
        raise first_error


def _placed(
    blocks: list, times: list, rate: int, stated: float | None, origin: float | None
) -> tuple[np.ndarray, int, int]:
    """The decoded frames ``blocks`` laid out on the file's timeline (`_frame_offsets`, shifted by
    where the audio starts against the video's start ``origin``), how many samples of silence were
    put in between them there (not counting what lies before the timeline's start, nor a jump clearly
    shorter than the frame before it: no lost packet fits there, so it is an encoder's priming or the
    muxer's rounding, placed but not said to be missing), and the shift in samples (< 0: that many
    samples before the video's start were cut)."""
    lengths = [len(b) for b in blocks]
    offsets = _frame_offsets(times, lengths, rate, stated)
    if offsets is None:  # timestamps unusable: the frames follow each other, from time 0
        offsets, shift = np.cumsum([0, *lengths[:-1]]).tolist(), 0
    else:
        shift = 0 if origin is None else round((times[0] - origin) * rate)
    end = offsets[-1] + lengths[-1] if blocks else 0
    heard = sum(max(0, min(at + n, end) - max(at, -shift)) for at, n in zip(offsets, lengths))
    filled = max(0, end - max(0, -shift)) - heard
    slack = _stamp_slack(rate)  # (a lost frame's jump, its timestamps rounded to ms: a little short of its length)
    filled -= sum(
        max(0, b - max(a + n, -shift)) for a, n, b in zip(offsets, lengths, offsets[1:]) if 0 < b - a - n < n - slack
    )
    lead = max(0, shift)  # silence before sound that starts after the picture
    samples = np.zeros(lead + end, np.float32)
    for block, at in zip(blocks, offsets):
        samples[lead + at : lead + at + len(block)] = block
    blocks.clear()  # (the frames' memory goes before the caller resamples)
    return (samples[-shift:] if shift < 0 else samples), filled, shift


def _resampled_track(samples: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """A whole track resampled as soundfile audio is, in blocks of `_RESAMPLE_BLOCK` output samples
    (the same samples as one call: `_resampled_window`), so the filter needs no memory beyond them."""
    track = torch.from_numpy(samples)
    total = math.ceil(len(samples) * sample_rate / rate)
    out = np.empty(total, np.float32)
    for k in range(0, total, _RESAMPLE_BLOCK):
        n = min(_RESAMPLE_BLOCK, total - k)
        out[k : k + n] = _resampled_window(partial(_slice, track), rate, k, n, sample_rate).numpy()
    return out


def _channel_mean(frame) -> np.ndarray:
    """A packed float frame's samples averaged over its channels (PyAV's planar arrays break at 8
    channels: it counts 9 planes and crashes)."""
    return frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1)


def _stamp_slack(rate: int) -> int:
    """Samples (2 ms) by which a frame's timestamp may miss where the frames before it end: rounding to
    the container's unit (Matroska's milliseconds) and muxers' jitter, not sound missing or doubled."""
    return max(1, rate // 500)


def _frame_offsets(times: list, lengths: list[int], rate: int, stated: float | None = None) -> list[int] | None:
    """Where each decoded frame's samples start (from the first frame's), by its timestamp: a
    stretch the decoder dropped, or packets never sent (a lossy call recording, Opus's silence
    suppression), leaves a gap there. A gap is kept only where the next frame does not start before
    this one ends (one timestamp far ahead of the rest moves nothing) and it is shorter than
    `_MAX_GAP_S` (a jump of hours is an error, not silence to allocate); a frame without a
    timestamp follows the one before.
    None (the frames then follow each other) when the first frame has none, when many frames start
    before the one before ended, or when the timestamps span far more than the container's stated
    length ``stated`` (seconds: timestamps in another unit, as some AVI muxers write them)."""
    if not lengths or times[0] is None or not rate:
        return None
    stamps = [None if t is None else round((t - times[0]) * rate) for t in times]
    slack = _stamp_slack(rate)
    steps = [b - a - n for a, b, n in zip(stamps, stamps[1:], lengths) if a is not None and b is not None]
    if steps and sum(step < -slack for step in steps) > 0.1 * len(steps):
        return None
    last = max((t for t in stamps if t is not None), default=0) + lengths[-1]
    if stated and last > (1.5 * stated + 1.0) * rate:
        return None
    offsets, placed = [], 0
    for i, (stamp, n) in enumerate(zip(stamps, lengths)):
        after = stamps[i + 1] if i + 1 < len(stamps) else None
        if stamp is not None and rate * _GAP_S < stamp - placed <= rate * _MAX_GAP_S:
            if after is None or after >= stamp + n - slack:  # (an overlap or jitter is read on, in order)
                placed = stamp
        offsets.append(placed)
        placed += n
    return offsets


def _video_start(container) -> float | None:
    """Where the file's timeline starts, in the container's seconds: its video's start (as the video
    is read, `ttt_mm.data.decode.video`), so that sound and picture stay together when the audio
    starts later or earlier (a recording whose sound begins 2 s in); None for an audio-only file,
    whose audio starts at its first sample."""
    video = video_stream(container)
    if video is None or video.start_time is None:
        return None
    return float(video.start_time * video.time_base)


def _slice(x: Tensor, lo: int, hi: int) -> Tensor:
    """``x[lo:hi]`` with zeros outside ``x``."""
    out = torch.zeros(max(0, hi - lo), dtype=x.dtype)
    a, b = max(lo, 0), min(hi, len(x))
    if b > a:
        out[a - lo : b - lo] = x[a:b]
    return out


def container_track(path: str, sample_rate: int, backend: str) -> Tensor:
    """A whole audio track decoded by decord or PyAV at ``sample_rate``, mono (cached per process)."""
    return placed_track(path, sample_rate, backend)[0]


def placed_track(path: str, sample_rate: int, backend: str) -> tuple[Tensor, Placement]:
    """`container_track`, and where it was placed on the file's timeline (gaps, shift)."""
    st = checked_stat(path)
    key = (*version_key(path, st), sample_rate, backend)
    cached = _audio_tracks.get(key)
    if cached is None:
        decode = _decord_samples if backend == "decord" else _pyav_samples
        timeout = open_timeout(st) + st.st_size / 1e5
        samples, placement = native.call(path, "decoding the audio track", lambda: decode(path, sample_rate), timeout)
        track = torch.from_numpy(samples.astype(np.float32, copy=False))
        cached = _audio_tracks.put(key, (track, placement), cost=track.numel())
    return cached


def read_samples(path: str, start: float, duration: float | None, sample_rate: int, backend: str) -> Tensor:
    """Mono float32 samples of ``[start, start + duration)`` at ``sample_rate``: ``[n]``.

    ``n = round(duration * sample_rate)``, cut at the end of the track; ``duration`` None: to its end
    (a resampled track holds ``ceil(frames * sample_rate / native rate)`` samples, which can be one more
    than its duration in seconds times ``sample_rate``, rounded). Samples before time 0 are
    zeros, so callers may read left context at the start of a file with a negative ``start``.
    ``backend`` is one of `AUDIO_BACKENDS`.
    """
    checked_stat(path)
    backend = check_backend(backend, AUDIO_BACKENDS)
    first = round(start * sample_rate)
    if backend == "soundfile":
        info = sf_info(path)
        if info is None:
            raise MediaError(path, "libsndfile cannot open this file")
        total = math.ceil(info.frames * sample_rate / info.samplerate)
        count = total - first if duration is None else round(duration * sample_rate)
        count = max(0, min(count, total - first))
        samples = _sf_window(path, info, first, count, sample_rate)
    else:
        track = container_track(path, sample_rate, backend)
        count = len(track) - first if duration is None else round(duration * sample_rate)
        count = max(0, min(count, len(track) - first))
        samples = _slice(track, first, first + count)
    return _check_finite(path, samples, start, sample_rate)
