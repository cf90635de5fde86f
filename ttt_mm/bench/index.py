"""Cost of the dataset index per file, cold and cached: ``python -m ttt_mm.bench index [--real DIR]``.

Generated sources (written with PyAV and soundfile into a temporary folder: H.264 + AAC in MP4,
MPEG-4 + AC3 in AVI, FLAC, Ogg Vorbis, WAV; ``--seconds`` long each) or, with ``--real``, the media
files under a folder (``--limit`` of them). Each set is indexed twice into a fresh cache: cold
(every file probed and verified in worker processes) and cached (each file only stat'ed and looked
up). Cold means the index's cache: the files are in the page cache (the generated ones were just
written), so reading them from a disk is not counted. Prints files, megabytes, and wall time per
file for both; the one-off start of the worker processes (a forkserver that imports the decoders,
paid once per process) is timed apart.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from ttt_mm.bench.media import media_files, write_ramp_video
from ttt_mm.data.index import default_jobs, index_files

from .arguments import positive_float, positive_int


def generate(folder: Path, count: int, seconds: float) -> list[Path]:
    """``count`` files cycling through five formats."""
    t = np.arange(round(seconds * 44100)) / 44100
    music = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    paths = []
    for i in range(count):
        kind = i % 5
        path = folder / f"{i:03d}.{('mp4', 'avi', 'flac', 'ogg', 'wav')[kind]}"
        if kind == 0:
            write_ramp_video(path, seconds)
        elif kind == 1:
            write_ramp_video(path, seconds, vcodec="mpeg4", acodec="ac3", sample_rate=48000)
        else:
            sf.write(path, music * (1 + i / count), 44100)
        paths.append(path)
    return paths


def measure(paths: list[Path], jobs: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        started = time.monotonic()
        records, _ = index_files(paths, cache, jobs)
        cold = time.monotonic() - started
        started = time.monotonic()
        _, run = index_files(paths, cache, jobs)
        cached = time.monotonic() - started
    if run.probed:
        raise RuntimeError(f"the cached pass probed {run.probed} files again")
    return {
        "files": len(paths),
        "mb": sum(p.stat().st_size for p in paths) / 1e6,
        "bad": sum(1 for r in records.values() if r.get("error")),
        "cold": cold,
        "cached": cached,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttt_mm.bench index", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=positive_int, default=40, help="generated files")
    parser.add_argument("--seconds", type=positive_float, default=10.0, help="length of each generated file")
    parser.add_argument("--real", help="a folder of media files (e.g. from fetch-real-media.sh)")
    parser.add_argument("--limit", type=positive_int, default=100, help="real files to take (sorted by path)")
    parser.add_argument("--jobs", type=positive_int, default=default_jobs())
    args = parser.parse_args(argv)
    real = []
    if args.real:
        real = media_files(Path(args.real))
        if not real:
            print(f"no media files under {args.real}", file=sys.stderr)
            return 2
    rows = []
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as cache:
        warm = Path(folder) / "warm-up.wav"
        sf.write(warm, np.zeros(1600, np.float32), 16000)
        started = time.monotonic()
        index_files([warm], cache, args.jobs)
        startup = time.monotonic() - started
        warm.unlink()
        generated = generate(Path(folder), args.count, args.seconds)
        rows.append((f"generated, {args.seconds:g} s each", measure(generated, args.jobs)))
    if real:
        rows.append((f"real media under {args.real}", measure(real[: args.limit], args.jobs)))
    print(f"{args.jobs} probe processes; starting them took {startup:.1f} s (once per process); cold: the index's")
    print("cache, not the page cache (the files are read from memory)")
    print("| files | n | MB | bad | cold s | cold ms/file | cached ms | cached ms/file |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, m in rows:
        n = m["files"]
        print(
            f"| {name} | {n} | {m['mb']:.1f} | {m['bad']} | {m['cold']:.1f} | {1000 * m['cold'] / n:.0f} "
            f"| {1000 * m['cached']:.1f} | {1000 * m['cached'] / n:.2f} |"
        )
    return 0
