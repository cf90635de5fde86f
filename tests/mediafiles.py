"""Small real media files for the data tests, written with PyAV and soundfile.

Video frame ``i`` is a flat gray of `gray(i, n)` (so a decoded frame tells which source frame it
was), with an optional red/green/blue vertical band layout to check the crop. Audio is a tone.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf


def gray(i: int, n: int) -> float:
    """Brightness of source frame ``i`` of ``n``: distinct, increasing, away from 0 and 255."""
    return 20.0 + 200.0 * i / max(n - 1, 1)


def tone(seconds: float, rate: int, hz: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _audio_frame(chunk: np.ndarray, stereo: bool, fmt: str, rate: int, pts: int) -> av.AudioFrame:
    """A frame of ``chunk`` (float mono) in the encoder's sample format."""
    planes = np.stack([chunk, chunk]) if stereo else chunk[None]
    if not fmt.endswith("p"):  # packed: channels interleaved in one plane
        planes = planes.T.reshape(1, -1)
    if fmt.startswith("s16"):
        planes = (planes * 32767).astype(np.int16)
    elif fmt.startswith("u8"):
        planes = ((planes + 1.0) * 127.5).astype(np.uint8)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes), format=fmt, layout="stereo" if stereo else "mono")
    frame.sample_rate, frame.pts = rate, pts
    return frame


def write_video(
    path: Path,
    seconds: float = 2.0,
    fps: int = 30,
    width: int = 160,
    height: int = 120,
    audio_rate: int | None = 16000,
    stereo: bool = False,
    bands: bool = False,
    faststart: bool = False,
    times_ms: list[int] | None = None,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    audio_delay: float = 0.0,
    muxer_options: dict | None = None,
    b_frames: bool = False,
    audio_first: bool = False,
    audio_seconds: float | None = None,
    gop: int | None = None,
    audio_streams: int = 1,
) -> Path:
    """H.264 (+ AAC) file by default. ``times_ms`` gives explicit frame times (variable frame rate, mkv).

    Other codecs make files only one backend reads: ``video_codec="libsvtav1"`` (AV1, which decord's
    FFmpeg cannot decode), ``audio_codec="dfpwm"`` in ``.avi`` (likewise for audio). ``audio_delay``
    starts the sound that many seconds after the first frame (its timestamps, as a recorder writes
    them; the samples are the same), or, when negative, the picture that many seconds after the
    sound. ``muxer_options`` go to FFmpeg's muxer (e.g. a fragmented MP4); ``b_frames`` encodes
    H.264 with reordered frames, as cameras and most encoders do;
    ``audio_first`` lists the audio stream before the video; ``audio_seconds`` ends the sound early;
    ``gop`` puts a key frame every that many frames (H.264), and only there; ``audio_streams`` lists
    the sound that many times (a film's dubs).
    """
    options = ({"movflags": "faststart"} if faststart else {}) | (muxer_options or {})
    out = av.open(str(path), "w", options=options)
    audio = out.add_stream(audio_codec, rate=audio_rate, layout="stereo" if stereo else "mono") if audio_first else None
    video = out.add_stream(video_codec, rate=fps)
    video.width, video.height = width, height
    video.pix_fmt = "yuvj420p" if video_codec == "mjpeg" else "yuv420p"
    video.options = {"libx264": {"preset": "ultrafast"}, "libsvtav1": {"preset": "12"}}.get(video_codec, {})
    if b_frames:
        video.options = {"preset": "medium", "bf": "2"}
    if gop:
        video.options = video.options | {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
    if times_ms is not None:
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
    n = len(times_ms) if times_ms is not None else round(seconds * fps)
    if audio_rate:
        audio = audio or out.add_stream(audio_codec, rate=audio_rate, layout="stereo" if stereo else "mono")
        dubs = [
            out.add_stream(audio_codec, rate=audio_rate, layout=audio.layout.name) for _ in range(audio_streams - 1)
        ]
        block, fmt = audio.codec_context.frame_size or 1024, audio.codec_context.format.name
        wave = tone(seconds if audio_seconds is None else audio_seconds, audio_rate)
        wave = np.pad(wave, (0, -len(wave) % block))  # whole frames: some encoders take no short last frame
        samples = 0
    for i in range(n):
        img = np.full((height, width, 3), round(gray(i, n)), np.uint8)
        if bands:
            third = width // 3
            img[:, :third] = (200, 20, 20)
            img[:, third : 2 * third] = (20, 200, 20)
            img[:, 2 * third :] = (20, 20, 200)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if times_ms is not None:
            frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
        elif audio_delay < 0:
            frame.pts, frame.time_base = i + round(-audio_delay * fps), Fraction(1, fps)
        for packet in video.encode(frame):
            out.mux(packet)
        while audio is not None and samples < min(len(wave), (i + 1) * len(wave) // n):
            chunk = wave[samples : samples + block]
            pts = samples + round(max(0.0, audio_delay) * audio_rate)
            for stream in (audio, *dubs):
                for packet in stream.encode(_audio_frame(chunk, stereo, fmt, audio_rate, pts)):
                    out.mux(packet)
            samples += len(chunk)
    for stream in (video, audio, *(dubs if audio_rate else ())):
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    out.close()
    return path


DISPLAY_MATRICES = {  # (a, b, c, d) of an MP4 display matrix, 16.16 fixed point
    "turn": (0, 1, -1, 0),  # a quarter turn clockwise, as phones store portrait video (frames kept landscape)
    "hflip": (-1, 0, 0, 1),  # mirrored left to right
    "vflip": (1, 0, 0, -1),  # mirrored top to bottom
}


def rotate_display(path: Path, kind: str = "turn") -> Path:
    """The MP4 with a display matrix (`DISPLAY_MATRICES`) that shows its video turned or mirrored; the
    pictures themselves are left as they are."""
    a, b, c, d = (v << 16 for v in DISPLAY_MATRICES[kind])
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    while at >= 0:
        fields = at + 8 + (32 if data[at + 4] == 1 else 20)  # version 1 headers hold 64-bit times
        matrix = fields + 16  # after 8 reserved bytes, layer, alternate group, volume, 2 reserved
        width = struct.unpack(">I", data[matrix + 36 : matrix + 40])[0] >> 16
        if width:  # a video track (audio tracks have no size)
            height = struct.unpack(">I", data[matrix + 40 : matrix + 44])[0] >> 16
            data[matrix : matrix + 36] = struct.pack(">9i", a, b, 0, c, d, 0, height << 16, 0, 1 << 30)
        at = data.find(b"tkhd", at + 1)
    path.write_bytes(bytes(data))
    return path


def trim_by_edit_list(path: Path, start: float, end: float) -> Path:
    """The single-track MP4 (written with ``muxer_options={"use_editlist": "1"}``) with its edit list
    showing only ``start .. end`` seconds, as a stream-copy cut (``ffmpeg -ss -t -c copy``) leaves it:
    every packet kept, those outside hidden, the picture before ``start`` decoded but not shown."""
    data = bytearray(path.read_bytes())
    movie_scale = struct.unpack(">I", data[data.find(b"mvhd") + 16 : data.find(b"mvhd") + 20])[0]  # version 0
    media_scale = struct.unpack(">I", data[data.find(b"mdhd") + 16 : data.find(b"mdhd") + 20])[0]
    at = data.find(b"elst")
    assert at > 0 and data[at + 4] == 0 and struct.unpack(">I", data[at + 8 : at + 12])[0] == 1, "one version-0 entry"
    data[at + 12 : at + 20] = struct.pack(">Ii", round((end - start) * movie_scale), round(start * media_scale))
    path.write_bytes(bytes(data))
    return path


def write_lying_frame_count(path: Path, real: int = 30, fake: int = 30) -> Path:
    """An mp4 whose index lists ``real + fake`` frames but whose last ``fake`` hold no picture.

    The extra packets carry only an access-unit delimiter, so the container (and decord's
    ``len``) claims twice the frames that can be decoded: the "header frame count lies" case.
    """
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=30)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    video.options = {"preset": "ultrafast", "tune": "zerolatency"}
    last = None
    for i in range(real):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i % 256, np.uint8), format="rgb24")
        frame.pts = i
        for packet in video.encode(frame):
            out.mux(packet)
            last = packet
    for packet in video.encode():
        out.mux(packet)
        last = packet
    step = last.duration or 1
    delimiter = b"\x09\xf0"
    for k in range(fake):
        packet = av.Packet(struct.pack(">I", len(delimiter)) + delimiter)
        packet.stream, packet.time_base = video, last.time_base
        packet.pts = packet.dts = last.pts + (k + 1) * step
        packet.duration = step
        out.mux(packet)
    out.close()
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int, subtype: str | None = None) -> Path:
    sf.write(str(path), samples, rate, subtype=subtype)
    return path


def write_short_flac(path: Path, seconds: float, missing: float, rate: int = 16000) -> Path:
    """A FLAC whose header (STREAMINFO) promises ``missing`` seconds more than it holds, as a muxer
    that got the last packet's length wrong writes them."""
    write_wav(path, tone(seconds, rate), rate)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    field = 8 + 13  # STREAMINFO bytes 13-17: 4 bits of bits-per-sample, then 36 bits of total samples
    value = int.from_bytes(data[field : field + 5], "big")
    total = (value & (2**36 - 1)) + round(missing * rate)
    data[field : field + 5] = ((value & ~(2**36 - 1)) | total).to_bytes(5, "big")
    path.write_bytes(bytes(data))
    return path


def middle_packet(path: Path, kind: str) -> tuple[int, int, int]:
    """``(offset, size, count)`` in the file of the middle packet of its first ``kind`` ("audio" or
    "video") stream, in decoding order, and how many packets that stream has: where to cut or damage it."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(getattr(container.streams, kind)[0]) if p.size]
    return (*packets[len(packets) // 2], len(packets))


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def without_audio_decoder(path: Path) -> Path:
    """The file with its audio format tag set to one no decoder knows (0x1234): a WAV, or an AVI of PCM."""
    data = bytearray(path.read_bytes())
    at = data.find(b"fmt ") + 8 if path.suffix == ".wav" else data.find(b"strf", data.find(b"auds")) + 8
    data[at : at + 2] = (0x1234).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


def write_false_key_frames(path: Path, frames: int = 90, gop: int = 30, false_keys: tuple[int, ...] = (40, 50)) -> Path:
    """An mp4 whose packets ``false_keys`` are flagged as key frames but are predicted frames: a seek
    to one starts decoding without its references (a cut or damaged stream), so the pictures from
    there differ from those that decoding in order gives. Frames show moving noise, so they differ."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (48, 64 + frames, 3), dtype=np.uint8)
    packets = []
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 48, "yuv420p"
    encoder.framerate, encoder.time_base = Fraction(25), Fraction(1, 25)
    encoder.gop_size = gop
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency"}
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[:, i : i + 64]), format="rgb24")
        frame.pts = i
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=25)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    video.codec_context.extradata = encoder.extradata
    for k, packet in enumerate(packets):
        packet.stream, packet.time_base = video, Fraction(1, 25)
        packet.is_keyframe = packet.is_keyframe or k in false_keys
        out.mux(packet)
    out.close()
    return path


def write_reordered_video(
    path: Path, codec: str, options: dict | None = None, gop: int = 15, b_frames: int = 2
) -> Path:
    """120 frames of moving noise (every frame differs) with B-frames, so that decoding reorders
    them: how decord's and PyAV's seeks land is told apart by the pictures."""
    rng = np.random.default_rng(1)
    texture = rng.integers(0, 256, (48, 64 + 120, 3), dtype=np.uint8)
    out = av.open(str(path), "w")
    video = out.add_stream(codec, rate=25)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    video.codec_context.gop_size, video.codec_context.max_b_frames = gop, b_frames
    video.options = options or {}
    for i in range(120):
        for packet in video.encode(
            av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[:, i : i + 64]), format="rgb24")
        ):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    out.close()
    return path
