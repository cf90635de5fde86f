"""Manifest of the Singularity soundtrack for the long-context music experiment.

    python data/scripts/singularity_music.py --media /tmp/ttt-mm-media --out data/singularity_music/manifest.csv

``--media`` is the folder ``bash ../shared/data/fetch-real-media.sh`` unpacked into; the tracks are
the 16 Vorbis files under ``root/usr/share/games/singularity/music`` (43 s to 6 min, 48 kHz stereo).
One row per whole track (``start`` and ``end`` empty, no label). The split is seeded: a quarter of
the tracks (4 of 16) is held out as ``test`` for evaluation on music never trained on, ``--val``
tracks (default 1) are ``val`` for the validation metric during training, the rest ``train``.
``group`` is the track itself. No media file is opened: the manifest is built from file names.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from ttt_mm.data.manifest import write_manifest
from ttt_mm.data.sources import relative_to

MUSIC = Path("root/usr/share/games/singularity/music")


def splits(tracks: list[str], seed: int, test_fraction: float, val: int) -> dict[str, str]:
    """Track -> split: a seeded shuffle, then ``round(test_fraction * n)`` tracks test, ``val`` val."""
    order = sorted(tracks)
    random.Random(seed).shuffle(order)
    test = round(test_fraction * len(order))
    if test + val >= len(order):
        raise ValueError(f"{len(order)} tracks leave none to train on with {test} test and {val} val tracks")
    return {t: "test" if i < test else "val" if i < test + val else "train" for i, t in enumerate(order)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", required=True, help="the folder fetch-real-media.sh unpacked into")
    parser.add_argument("--out", required=True, help="the CSV manifest to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="fraction of the tracks held out as test")
    parser.add_argument("--val", type=int, default=1, help="tracks in the val split")
    args = parser.parse_args(argv)

    root = Path(args.media) / MUSIC
    files = sorted(root.rglob("*.ogg")) if root.is_dir() else []
    if not files:
        print(f"error: no .ogg tracks under {root} (run ../shared/data/fetch-real-media.sh first)", file=sys.stderr)
        return 2
    keys = [p.relative_to(root).as_posix() for p in files]
    try:
        split = splits(keys, args.seed, args.test_fraction, args.val)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    base = str(out.resolve().parent)
    rows = [
        {"path": relative_to(str(p), base), "split": split[k], "group": k.removesuffix(".ogg")}
        for p, k in zip(files, keys)
    ]
    write_manifest(out, rows)
    counts = ", ".join(f"{sum(r['split'] == s for r in rows)} {s}" for s in ("train", "val", "test"))
    held_out = ", ".join(k for k in keys if split[k] == "test")
    print(f"wrote {out}: {len(rows)} tracks, {counts} (seed {args.seed}); test: {held_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
