"""``python -m ttt_mm.tasks.probe <folder|file> [-o manifest.jsonl]``: index media files and list them.

Every media file (found recursively by extension) is probed in a worker process, as training does
before it opens any file (see `ttt_mm.data.index`): its streams, the decoder that reads each,
durations, rates and size, or for a file that cannot be used ``"error": "<reason>"`` (a decoder that
crashed or hung on it included). Results are cached, so a second run probes only new or changed
files. The records are written as JSONL to ``-o`` (the paths of files under its folder relative to
it, others absolute: a manifest that ``data=manifest`` reads; the index checks its ``error`` rows
again and lists those still bad with their reasons) or to stdout; a summary with the bad files
counted by reason goes to stderr. Exit status 0 for a folder, whatever its files hold; for a single
file, 1 and the reason if the file is unusable (a broken symbolic link included); 2 if the path is
empty or does not exist, is a manifest or a folder without media files, or where ``-o`` cannot be
written (checked before any probe) or the index cache's folder cannot be made or read (an index
that cannot be saved is a warning: the listing goes on); 1 where writing ``-o`` fails after the
probes (a full disk); 130 when interrupted (Ctrl-C; 143 for SIGTERM), with one line saying what the
index cache kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from ttt_mm.data.datasets import ReadSpec
from ttt_mm.data.index import PROBE_TIMEOUT, IndexCacheError, IndexInterrupted, default_jobs, index_files, usable
from ttt_mm.data.skiplist import count_reasons
from ttt_mm.data.sources import JSON_LINES_SUFFIXES, MANIFEST_SUFFIXES, MEDIA_EXTENSIONS, FolderSource, relative_to
from ttt_mm.messages import why_no_folder
from ttt_mm.processes.termination import forget_termination, sigterm_as_ctrl_c, terminated
from ttt_mm.storage.atomic import temporary_path, write_text
from ttt_mm.tasks.starting import started
from ttt_mm.tokenizers import default_step_seconds


def _seconds(text: str) -> float:
    """A time limit: a finite number > 0 (0 or less called every file hung)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0; got {text!r}")
    return value


def _count(text: str) -> int:
    """A number of processes: a whole number > 0."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number > 0; got {text!r}")
    return int(text)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ttt_mm.tasks.probe", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a folder (searched recursively) or one media file")
    parser.add_argument(
        "-o",
        "--output",
        help="JSONL file to write (default: stdout); paths of files under its folder are written relative to it, "
        "others absolute",
    )
    parser.add_argument("--extensions", nargs="+", default=list(MEDIA_EXTENSIONS), help="file extensions to include")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="read headers only (faster)")
    parser.add_argument("--jobs", type=_count, default=default_jobs(), help="probe in this many processes")
    parser.add_argument(
        "--timeout", type=_seconds, default=PROBE_TIMEOUT, help="seconds per file (+1 s per 20 MB) before hung"
    )
    parser.add_argument("--index-cache", help="folder of the index cache (default: ~/.cache/ttt-mm/index)")
    parser.add_argument("--refresh", action="store_true", help="probe every file again, ignoring the cache")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started()  # (its work begins: `ttt_mm.tasks.starting`)
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        with sigterm_as_ctrl_c():
            return index_and_list(args)
    except IndexInterrupted:
        return _stopped()  # the index has logged what it kept
    except IndexCacheError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        written = f"{args.output} was not written; " if args.output else ""
        how = "terminated (SIGTERM)" if terminated() else "interrupted"
        print(f"{how}: {written}every file probed before stays in the index cache", file=sys.stderr)
        return _stopped()


def _stopped() -> int:
    """The exit status of a run that Ctrl-C (130) or SIGTERM (143) stopped."""
    status = 143 if terminated() else 130
    forget_termination()
    return status


def index_and_list(args: argparse.Namespace) -> int:
    if not args.path.strip():  # (read as the current folder: an unset shell variable probed all below it)
        print(
            "error: the path is empty (an unset shell variable?): name it, or . for the current folder", file=sys.stderr
        )
        return 2
    target = Path(args.path)
    if not target.exists() and not target.is_symlink():
        key, _, meant = args.path.partition("=")
        hint = f" (give the path without {key}=: {meant})" if meant and Path(meant).exists() else ""
        print(f"error: {target}: no such file or directory{hint}", file=sys.stderr)
        return 2
    if args.output and Path(args.output).is_dir():
        print(
            f"error: -o {args.output} is a folder; -o names the file to write, e.g. -o manifest.jsonl", file=sys.stderr
        )
        return 2
    if args.output and Path(args.output).suffix.lower() not in JSON_LINES_SUFFIXES:
        print(
            f"error: -o {args.output}: the records are JSON lines, and data=manifest reads a file by its "
            f"suffix; name it {Path(args.output).with_suffix('.jsonl').name}",
            file=sys.stderr,
        )
        return 2
    if target.suffix.lower() in MANIFEST_SUFFIXES and target.is_file():
        print(
            f"error: {target} is a manifest (by its name): probe takes a folder or one media file; the files a "
            "manifest lists are probed when a command reads it (data=manifest data.root=<it>, or embed's input=)",
            file=sys.stderr,
        )
        return 2
    single = not target.is_dir()  # a file, or a broken link to one
    files = [str(target)] if single else [c.name for c in FolderSource(str(target), args.extensions).clips()]
    if not files:  # (a script would take an empty manifest for a folder that holds nothing usable)
        chosen = (
            "" if args.extensions == list(MEDIA_EXTENSIONS) else f" with the extensions {' '.join(args.extensions)}"
        )
        print(f"error: no media files under {target}{chosen}", file=sys.stderr)
        return 2
    if args.output and (why := _unwritable(Path(args.output))):  # (before the probing, which may take hours)
        print(f"error: -o {args.output}: {why}", file=sys.stderr)
        return 2
    records, run = index_files(
        files, args.index_cache, args.jobs, args.timeout, verify=args.verify, refresh=args.refresh
    )
    base = str(Path(args.output).parent) if args.output else None
    lines = [json.dumps(r | {"path": relative_to(r["path"], base)} if base else r) + "\n" for r in records.values()]
    if args.output:
        try:
            write_text(Path(args.output), "".join(lines))
        except OSError as exc:  # (the disk filled, say, while the files were probed)
            print(f"error: -o {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    else:
        sys.stdout.writelines(lines)
    bad = [r for r in records.values() if r.get("error")]
    if single and bad:
        print(f"error: {target}: {bad[0]['error']}", file=sys.stderr)
        return 1
    partly = _stream_errors(records.values())
    status = 0
    if single:
        (record,) = records.values()
        trained = usable(record, "video") or (usable(record, "audio") and not record.get("silent"))
        usable_for = "usable" if trained else "usable by embed only (training and evaluation leave it out)"
        least = default_step_seconds()
        if not any(usable(record, s) and _stream_seconds(record, s) >= step for s, step in least.items()):
            steps = ", ".join(f"{step:g} s of {s}" for s, step in least.items())
            usable_for = f"too short for the default models, which read nothing shorter than one token step ({steps})"
            status = 1  # (as for a file the default models cannot read: embed refuses it with them too)
        summary = f"{target}: {usable_for}" + (f" ({partly})" if partly else "")
    else:
        files = f"{len(records)} file{'s' if len(records) != 1 else ''}"
        summary = f"{files} under {target}: {len(records) - len(bad)} usable"
        if partly:
            summary += f" ({partly})"
        summary += f", {len(bad)} not"
        if bad:
            summary += f" ({count_reasons(r['error'] for r in bad)})"
    where = f"; wrote {args.output}" if args.output else ""
    print(
        f"{summary}. {run.probed} probed, {run.cached} from the index cache {run.cache}, in {run.seconds:.1f} s{where}",
        file=sys.stderr,
    )
    return status


def _stream_seconds(record: dict, stream: str) -> float:
    """The seconds of a stream of a record (inf where no length is recorded)."""
    length = record.get(f"{stream}_duration")
    return math.inf if length is None else length


def _longest_stream(record: dict) -> float:
    """The seconds of a record's longest readable stream (inf where no length is recorded)."""
    lengths = [record.get(f"{s}_duration") for s in ("audio", "video") if usable(record, s)]
    return max((x for x in lengths if x is not None), default=math.inf)


def _unwritable(output: Path) -> str | None:
    """Why the manifest cannot be written to ``output`` (its folder made where missing), or None."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot make its folder: {why_no_folder(output.parent, exc)}"
    trial = temporary_path(output)  # (tried, not asked: root passes os.access where no file can be made)
    try:
        trial.write_bytes(b"")
        trial.unlink()
    except OSError as exc:
        return f"cannot write in {output.parent}: {exc.strerror or exc}"
    return None


def _stream_errors(records) -> str:
    """What the summary says of the usable files besides their count: those with a stream that is not
    (counted by stream and reason: such a file serves only configs that read its other stream), and
    those read otherwise than plainly (silent, short of their stated length, with gaps, ending in zeros)."""
    counts = []
    records = list(records)
    one = len(records) == 1  # (a single file's summary says "its ...")
    for stream in ("video", "audio"):
        reasons = [r[f"{stream}_error"] for r in records if not r.get("error") and r.get(f"{stream}_error")]
        if reasons and one:
            counts.append(f"its {stream} stream is not usable: {reasons[0]}")
        elif reasons:
            counts.append(f"{len(reasons)} without a usable {stream} stream [{count_reasons(reasons)}]")
    silent = sum(1 for r in records if not r.get("error") and not r.get("audio_error") and r.get("silent"))
    if silent:  # (training and evaluation leave them out when they read only audio)
        counts.append("its audio is digital silence" if one else f"{silent} whose audio is digital silence")
    for stream in ("video", "audio"):  # (read as far as they go, with a warning: `selection.index_clips`)
        short = [r for r in records if usable(r, stream) and r.get(f"{stream}_stated")]
        if len(short) == 1 and one:
            said = f"{short[0][f'{stream}_duration']:.3f} s of the {short[0][f'{stream}_stated']:.3f} s the file states"
            counts.append(f"its {stream} decodes to {said}: truncated or corrupt, it is read as far as it goes")
        elif short:
            counts.append(f"{len(short)} whose {stream} decodes well short of the length the file states")
    least = ReadSpec.min_seconds  # (a run's data.min_seconds by default)
    brief = [r for r in records if not r.get("error") and _longest_stream(r) < least]
    if len(brief) == 1 and one:
        said = f"{_longest_stream(brief[0]):.3f} s long, under data.min_seconds={least:g}"
        counts.append(f"it is {said}: training and evaluation leave it out unless that is lowered")
    elif brief:
        counts.append(f"{len(brief)} shorter than data.min_seconds={least:g}, which training and evaluation leave out")
    zeroed = [r for r in records if not r.get("error") and r.get("zeroed_tail")]
    if len(zeroed) == 1 and one:
        counts.append(f"its last {zeroed[0]['zeroed_tail']} bytes are zeros: an unfinished download or copy?")
    elif zeroed:
        counts.append(f"{len(zeroed)} ending in zero bytes: unfinished downloads or copies?")
    for stream, filled in GAPS_FILLED.items():  # (read with their gaps filled, with a warning: `say_how_read`)
        gapped = [r for r in records if usable(r, stream) and r.get(f"{stream}_gaps")]
        if len(gapped) == 1 and one:
            counts.append(f"{gapped[0][f'{stream}_gaps']:.3f} s inside its {stream} is missing: {filled}")
        elif gapped:
            counts.append(f"{len(gapped)} with stretches missing inside their {stream}, {filled}")
    return "; ".join(counts)


GAPS_FILLED = {"video": "the picture before each shows through it", "audio": "read as silence in place"}
"""How a stream's gaps (`MediaInfo.video_gaps`, ``audio_gaps``) are read."""


if __name__ == "__main__":
    sys.exit(main())
