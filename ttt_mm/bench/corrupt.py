"""Corrupted copies of media files, and how the probe command copes with a folder of them.

``python -m ttt_mm.bench corrupt SRC [SRC ...] --out DIR [--count 200] [--seed 0]``.

Variant ``i`` is source ``i % len(sources)`` damaged one of four ways (`KINDS`, in turn), with a
generator seeded by ``(seed, i)``, so the same arguments always give the same bytes:

- ``bitflip``: 1 to 64 random bits flipped anywhere in the file;
- ``truncate``: cut at 5% to 95% of its length;
- ``zero``: a span of 16 bytes to 10% of the file set to zero;
- ``splice``: a chunk (up to 10%) of another source inserted at a random offset.

The command writes the variants to ``--out``, then runs ``python -m ttt_mm.tasks.probe`` on that
folder in a fresh index cache, as a user would, and prints its exit status, wall time, and the
files it listed as usable or not, counted by reason. ``tests/data/test_fuzz.py`` uses the same
variants of small generated files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ttt_mm.data.skiplist import reason_kind

from .arguments import positive_int
from .media import media_files

KINDS = ("bitflip", "truncate", "zero", "splice")


def corrupt(data: bytes, kind: str, rng: np.random.Generator, donor: bytes) -> bytes:
    """``data`` damaged one way (see the module docstring); ``donor`` supplies spliced chunks."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    for _ in range(100):  # a span that was zero already, or a bit flipped twice, changes nothing: draw again
        damaged = _damage(bytearray(data), kind, rng, donor)
        if damaged != data:
            return damaged
    raise ValueError(f"could not {kind} a {len(data)}-byte file into something different")


def _damage(buf: bytearray, kind: str, rng: np.random.Generator, donor: bytes) -> bytes:
    n = len(buf)
    if kind == "bitflip":
        for position in rng.integers(0, n, int(rng.integers(1, 65))):
            buf[position] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        del buf[int(n * rng.uniform(0.05, 0.95)) :]
    elif kind == "zero":
        length = int(rng.integers(16, max(17, n // 10)))
        start = int(rng.integers(0, max(1, n - length)))
        buf[start : start + length] = bytes(min(length, n - start))
    else:  # splice
        length = int(rng.integers(16, max(17, len(donor) // 10)))
        start = int(rng.integers(0, max(1, len(donor) - length)))
        at = int(rng.integers(0, n))
        buf[at:at] = donor[start : start + length]
    return bytes(buf)


def write_variants(sources: Sequence[Path], out: Path, count: int, seed: int = 0) -> list[Path]:
    """Write ``count`` corrupted variants of ``sources`` into ``out``; returns their paths."""
    if not sources:
        raise ValueError("no source files to corrupt")
    out.mkdir(parents=True, exist_ok=True)
    contents = [Path(s).read_bytes() for s in sources]
    paths = []
    for i in range(count):
        k, j = i % len(sources), i // len(sources)  # the j-th variant of source k
        kind = KINDS[(j + k) % len(KINDS)]  # every source through every kind, whatever their counts
        rng = np.random.default_rng([seed, i])
        donor = contents[(k + 1) % len(contents)]
        path = out / f"{i:04d}_{kind}_{Path(sources[k]).name}"
        path.write_bytes(corrupt(contents[k], kind, rng, donor))
        paths.append(path)
    return paths


def _media(paths: Sequence[str], out: Path) -> list[Path]:
    """The files to corrupt: those given, and the media files of the folders given, but those under ``out``
    (a rerun would corrupt the last run's variants again)."""
    found = []
    for p in map(Path, paths):
        found += media_files(p, outside=out) if p.is_dir() else [p]
    if empty := [p for p in found if p.stat().st_size == 0]:  # (nothing to damage: no variant differs)
        some = "an empty file" if len(empty) == 1 else f"{len(empty)} empty files, e.g."
        print(f"left out {some} {empty[0]}: nothing to corrupt")
    return [p for p in found if p not in empty]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttt_mm.bench corrupt", description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="media files or folders to corrupt copies of")
    parser.add_argument("--out", required=True, help="folder for the variants (and the probe's probe.jsonl)")
    parser.add_argument(
        "--count", type=positive_int, default=200, help="variants in all, the sources taken in turn (default 200)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the same seed and arguments give the same bytes")
    parser.add_argument("--jobs", type=positive_int, default=2, help="probe processes")
    args = parser.parse_args(argv)
    if missing := [s for s in args.sources if not Path(s).exists()]:
        parser.error(f"{missing[0]} does not exist")
    if not (sources := _media(args.sources, Path(args.out))):
        parser.error(f"no media files under {' '.join(args.sources)}")
    out = Path(args.out)
    paths = write_variants(sources, out, args.count, args.seed)
    print(f"wrote {len(paths)} variants of {len(sources)} files to {out}")
    manifest = out / "probe.jsonl"
    manifest.unlink(missing_ok=True)  # (a probe that fails before writing must not report an earlier run's)
    with tempfile.TemporaryDirectory() as cache:
        command = [sys.executable, "-m", "ttt_mm.tasks.probe", str(out), "-o", str(manifest)]
        command += ["--index-cache", cache, "--jobs", str(args.jobs)]
        started = time.monotonic()
        proc = subprocess.run(command, capture_output=True, text=True)
        seconds = time.monotonic() - started
    records = [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.is_file() else []
    probed = len(records)  # (with what earlier runs left in `out`, probed again in the fresh cache: their time too)
    written = {p.resolve() for p in paths}
    records = [r for r in records if (out / r["path"]).resolve() in written]  # not what earlier runs left in `out`
    listed = {(out / r["path"]).resolve() for r in records}
    bad = Counter(reason_kind(r["error"]) for r in records if r.get("error"))
    rows = [
        ("exit status", proc.returncode),
        ("wall time (s)", f"{seconds:.1f}"),
        ("wall time / files probed (s), startup included", f"{seconds / max(1, probed or len(paths)):.3f}"),
        ("files listed / written", f"{len(listed & {p.resolve() for p in paths})} / {len(paths)}"),
        ("usable", sum(1 for r in records if not r.get("error"))),
        ("decoder crashed (a worker died)", sum(n for kind, n in bad.items() if kind.startswith("decoder crashed"))),
        ("decoder hung (a worker was killed)", sum(n for kind, n in bad.items() if kind.startswith("decoder hung"))),
        *((f"bad: {kind}", n) for kind, n in bad.most_common()),
    ]
    print("| measure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
