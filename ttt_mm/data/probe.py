"""Probe a folder once and write a JSONL manifest: ``python -m ttt_mm.data.probe <folder> -o manifest.jsonl``.

One line per media file (found recursively by extension): its streams, durations, rates and size,
or, for a file that cannot be used, ``{"path": ..., "error": "<reason>"}``. `ManifestSource` reads
the result and leaves out the ``error`` rows. With ``--verify`` (the default) every file is decoded
where it matters: the last video frame (containers that claim frames they do not hold), all of the
audio (NaN/Inf samples, digital silence). Given a single file, the command exits with status 1 and
the reason if the file is unusable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from ttt_mm.data.io import MediaError, probe
from ttt_mm.data.sources import MEDIA_EXTENSIONS, FolderSource, relative_to


def describe(path: str, verify: bool = True) -> dict:
    """The manifest record of one file (never raises for a bad file: it gets an ``error``)."""
    try:
        info = probe(path, verify=verify)
    except MediaError as exc:
        return {"path": path, "error": exc.reason}
    record = {
        "path": path,
        "duration": round(info.duration, 6),
        "has_audio": info.has_audio,
        "has_video": info.has_video,
        "audio_duration": info.audio_duration,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "video_duration": info.video_duration,
        "fps": info.fps,
        "n_frames": info.n_frames,
        "width": info.size[0] if info.size else None,
        "height": info.size[1] if info.size else None,
        "bytes": info.num_bytes,
        "silent": info.silent,
    }
    return {k: v for k, v in record.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttt_mm.data.probe", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a folder (searched recursively) or one media file")
    parser.add_argument("-o", "--output", required=True, help="JSONL manifest to write")
    parser.add_argument("--extensions", nargs="+", default=list(MEDIA_EXTENSIONS), help="file extensions to include")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="read headers only (faster)")
    parser.add_argument("--jobs", type=int, default=1, help="probe in this many processes")
    args = parser.parse_args(argv)

    target = Path(args.path)
    if not target.exists():
        print(f"error: {target}: no such file or directory", file=sys.stderr)
        return 2
    if target.is_file():
        files = [str(target)]
    else:
        files = [c.name for c in FolderSource(str(target), tuple(args.extensions)).clips()]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            records = list(pool.map(describe, files, [args.verify] * len(files), chunksize=4))
    else:
        records = [describe(f, args.verify) for f in files]

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    base = str(output.parent)
    with open(output, "w") as f:
        for record in records:
            f.write(json.dumps(record | {"path": relative_to(record["path"], base)}) + "\n")
    bad = [r for r in records if "error" in r]
    if target.is_file() and bad:
        print(f"error: {target}: {bad[0]['error']}", file=sys.stderr)
        return 1
    print(
        f"probed {len(records)} files under {target}: {len(records) - len(bad)} readable, {len(bad)} unreadable"
        + (f" (listed with their reason in {output})" if bad else "")
        + f"; wrote {os.fspath(output)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
