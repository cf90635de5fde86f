"""The media files the benchmarks decode: for the data and index benchmarks, colour ramps that drift
every frame (so no codec can skip them) with a 440 Hz stereo tone, 320 x 240, in any codec PyAV can
write; for the embed benchmark, long recordings of the synthetic clips (FLAC, and H.264 + AAC); and the
media files of a folder, for the benchmarks that read real ones (`media_files`)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from ttt_mm.data.sources import MEDIA_EXTENSIONS
from ttt_mm.data.synthetic import SyntheticClip
from ttt_mm.storage.atomic import replaced


def write_ramp_video(
    path: Path,
    seconds: float,
    fps: int = 25,
    vcodec: str = "libx264",
    acodec: str = "aac",
    sample_rate: int = 44100,
    moving_square: bool = False,
    x264_options: dict[str, str] | None = None,
) -> Path:
    """``seconds`` of ramps at ``fps``, with a white square crossing the frame when ``moving_square``,
    and the tone in frames of the audio codec's own size (``x264_options``: e.g. a preset)."""
    out = av.open(str(path), "w")
    video = out.add_stream(vcodec, rate=fps)
    video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
    if x264_options:
        video.options = x264_options
    audio = out.add_stream(acodec, rate=sample_rate, layout="stereo")
    size, fmt = audio.codec_context.frame_size or 1024, audio.codec_context.format.name
    yy, xx = np.mgrid[0:240, 0:320]
    done = 0
    for i in range(round(seconds * fps)):
        img = np.stack([(xx + 3 * i) % 256, (2 * yy + i) % 256, (xx * yy // 64 + 5 * i) % 256], -1).astype(np.uint8)
        if moving_square:
            x = (4 * i) % 280
            img[100:140, x : x + 40] = 255
        for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(packet)
        while done < (i + 1) * sample_rate / fps:
            tone = (0.2 * np.sin(2 * np.pi * 440 * (done + np.arange(size)) / sample_rate)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format=fmt, layout="stereo")
            frame.sample_rate, frame.pts = sample_rate, done
            for packet in audio.encode(frame):
                out.mux(packet)
            done += size
    for stream in (video, audio):
        for packet in stream.encode():
            out.mux(packet)
    out.close()
    return path


def write_synthetic_flac(path: Path, minutes: float, sample_rate: int = 16000) -> Path:
    """Synthetic tones and noise, written a minute at a time (under a temporary name: a run stopped
    meanwhile leaves no short file that ``--keep`` would take for whole)."""
    seconds = minutes * 60
    clip = SyntheticClip(0, 0, seconds)
    with replaced(path) as tmp, sf.SoundFile(tmp, "w", sample_rate, 1, format="FLAC", subtype="PCM_16") as f:
        for start in np.arange(0, seconds, 60.0):
            f.write(clip.audio(float(start), min(60.0, seconds - start), sample_rate).numpy().clip(-1, 1))
    return path


def write_synthetic_video(path: Path, minutes: float, fps: int = 24, size: int = 256, sample_rate: int = 16000) -> Path:
    """Synthetic moving squares with their sounds: H.264 (veryfast) + AAC, 10 s at a time (under a
    temporary name, as `write_synthetic_flac`)."""
    with replaced(path) as tmp:
        _write_video(tmp, minutes * 60, fps, size, sample_rate)
    return path


def _write_video(path: Path, seconds: float, fps: int, size: int, sample_rate: int) -> None:
    clip = SyntheticClip(0, 1, seconds)
    out = av.open(str(path), "w", format="mp4")
    video = out.add_stream("libx264", rate=fps)
    video.width = video.height = size
    video.pix_fmt, video.options = "yuv420p", {"preset": "veryfast", "crf": "23"}
    audio = out.add_stream("aac", rate=sample_rate, layout="mono")
    samples = 0
    for start in np.arange(0, seconds, 10.0):
        length = min(10.0, seconds - start)
        frames = clip.video(float(start), length, fps, size).permute(0, 2, 3, 1).numpy()
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        wave = clip.audio(float(start), length, sample_rate).numpy()
        for i in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(wave[None, i : i + 1024]), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = sample_rate, samples
            samples += chunk.samples
            for packet in audio.encode(chunk):
                out.mux(packet)
    for stream in (video, audio):
        for packet in stream.encode():
            out.mux(packet)
    out.close()


def media_files(folder: Path, outside: Path | None = None) -> list[Path]:
    """The media files under ``folder`` (not a folder named like one), sorted by path, each once: the index
    checks a file reached through links once, and counting every path divided its cost by them (one file
    and three links: 4 files). Those under ``outside`` are left out (a benchmark's own output folder)."""
    found, seen = [], set()
    skip = None if outside is None else os.path.realpath(outside)
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in MEDIA_EXTENSIONS and p.is_file()):
        real = os.path.realpath(path)
        if skip is not None and (real == skip or real.startswith(skip + os.sep)):
            continue
        if real not in seen:
            seen.add(real)
            found.append(path)
    return found
