"""The synthetic video files that the data and index benchmarks decode: colour ramps that drift every
frame (so no codec can skip them) with a 440 Hz stereo tone, 320 x 240, in any codec PyAV can write."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


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
