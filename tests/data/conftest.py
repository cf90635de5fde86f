"""Media written once per session into a temporary folder (PyAV and soundfile; no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mediafiles import tone, truncate, write_lying_frame_count, write_video, write_wav

from ttt_mm.data import decode


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    files = {
        "av": write_video(root / "av.mp4", seconds=3.0, audio_rate=16000),
        "av44k": write_video(root / "av44k.mkv", seconds=3.0, audio_rate=44100, stereo=True),
        "video_only": write_video(root / "video_only.mp4", seconds=2.0, audio_rate=None),
        "bands": write_video(root / "bands.mp4", seconds=0.5, width=320, height=240, audio_rate=None, bands=True),
        "one_frame": write_video(root / "one_frame.mp4", seconds=1 / 30, audio_rate=None),
        "faststart": write_video(root / "faststart.mp4", seconds=2.0, faststart=True),
        "lying": write_lying_frame_count(root / "lying.mp4"),
        "wav16k": write_wav(root / "tone16k.wav", tone(2.5, 16000), 16000),
        "wav44k": write_wav(root / "tone44k.wav", np.stack([tone(2.5, 44100), tone(2.5, 44100, 660)], 1), 44100),
        "flac16k": write_wav(
            root / "noise16k.flac", np.random.default_rng(0).uniform(-0.5, 0.5, 40000).astype(np.float32), 16000
        ),
        "silence": write_wav(root / "silence.wav", np.zeros(16000, np.float32), 16000),
    }
    nan = tone(1.0, 16000)
    nan[4000:4010] = np.nan
    files["nan"] = write_wav(root / "nan.wav", nan, 16000, subtype="FLOAT")
    files["zero"] = root / "zero.mp4"
    files["zero"].write_bytes(b"")
    files["truncated"] = truncate(files["av"], root / "truncated.mp4")  # index (moov) at the end: lost
    files["truncated_faststart"] = truncate(files["faststart"], root / "truncated_faststart.mp4")
    files["header_only"] = root / "header_only.mp4"  # cut inside its index, before the first stream's entry
    files["header_only"].write_bytes(files["faststart"].read_bytes()[:64])
    files["corrupt"] = root / "corrupt.mkv"
    files["corrupt"].write_bytes(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    files["wav_as_mp4"] = root / "wav_named.mp4"
    files["wav_as_mp4"].write_bytes(files["wav16k"].read_bytes())
    files["mp4_as_wav"] = root / "mp4_named.wav"
    files["mp4_as_wav"].write_bytes(files["av"].read_bytes())
    return files


@pytest.fixture(autouse=True)
def _fresh_decoders():
    """Each test opens its own readers (and sees its own decode errors)."""
    decode.clear_caches()
    yield
    decode.clear_caches()
