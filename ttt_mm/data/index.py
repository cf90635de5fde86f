"""The dataset index: what every media file holds, probed once in a subprocess and cached on disk.

`index_files` describes files with `ttt_mm.data.decode.probe` (verified: the last frame and all of the
audio decoded) in an `IsolatedPool`, so a file that crashes or hangs a decoder is recorded as bad
("decoder crashed: SIGABRT", "decoder hung: no answer in 60 s") and is never opened by the process
that trains, embeds or evaluates. The records are cached as JSONL, one line per file keyed by its
absolute path, size and modification time, under ``<cache dir>/<folder name>-<hash of the folder>.jsonl``
for the folder that holds the files; a second run probes only new or changed files, and files that
hung under a shorter probe timeout than this run's. A file this folder's cache lacks is looked up in
the caches of the folders around it (a subfolder of a dataset indexed whole, the folders a manifest
draws on), so it is probed once whichever way it is reached. The file is rewritten whole under a temporary
name and renamed, under a lock (ranks of one job share it): at the end, every few minutes while
probing and when interrupted, so that an interrupted first indexing of a large folder keeps its work.

A record (plain JSON)::

    {"path": "/data/a.avi", "bytes": 74946, "mtime_ns": 1700000000000000000, "version": 2, "verified": true,
     "has_video": true, "video_backend": "decord", "video_duration": 2.0, "fps": 25.0, "n_frames": 50,
     "width": 160, "height": 120,
     "has_audio": true, "audio_backend": "pyav", "audio_duration": 2.0, "sample_rate": 48000, "channels": 2,
     "silent": false}

``has_<stream>`` says the stream is present; ``<stream>_error`` (when set) why it cannot be read;
``error`` (when set) why the file is of no use at all. `select` then keeps the clips a reader can
use: the streams the config reads (a video config takes files with a video stream, an audio config
files with an audio stream), `ReadSpec.missing_audio` for videos without sound, and ``min_seconds``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from ttt_mm.data import decode
from ttt_mm.data.datasets import ReadSpec, clip_span
from ttt_mm.data.decode import MediaError, MediaInfo, stat_reason
from ttt_mm.data.decode.audio import AUDIO_CACHE_SAMPLES
from ttt_mm.data.decode.errors import CANNOT_OPEN, open_reason
from ttt_mm.data.decode.isolation import Failure, IsolatedPool, refuse_in_a_worker
from ttt_mm.data.sources import ClipInfo, one_line
from ttt_mm.data.synthetic import SyntheticClip
from ttt_mm.storage.atomic import write_text
from ttt_mm.storage.cache import user_cache_dir

log = logging.getLogger(__name__)

VERSION = 13
"""Bump when what a probe finds changes (a new backend, a new check): older records are probed again."""

STREAMS = ("audio", "video")
PROGRESS_SECONDS = 10.0
"""Seconds between the lines that say how far a long indexing is."""
UNEVEN_END_S = 1.0
"""How far apart a file's audio and video may end, when both are read, without a warning: the
clip is cut where the first one ends."""
PAST_END_SLACK_S = 0.5
"""How far a clip's stated end may lie past its file's end without a warning (a length rounded up,
streams that end a frame apart)."""

RECORD_FIELDS = (
    "error",
    "bytes",
    "mtime_ns",
    "version",
    "verified",
    "hung_timeout",
    "has_audio",
    "audio_backend",
    "audio_duration",
    "audio_error",
    "sample_rate",
    "channels",
    "silent",
    "audio_stated",
    "audio_gaps",
    "has_video",
    "video_backend",
    "video_duration",
    "video_stated",
    "video_error",
    "fps",
    "n_frames",
    "width",
    "height",
)
"""Every field a record may hold besides ``path`` (the probe command writes them, and a manifest read
from its output knows them)."""

SAVE_SECONDS = 300.0
"""While probing, the index is saved this often, so a run that is killed keeps most of its work."""
PROBE_TIMEOUT = 60.0
"""Seconds a file's probe may take (plus 1 s per 20 MB) before it counts as hung."""


class IndexCacheError(ValueError):
    """The index cache's folder cannot be made or written: a setting to change, not a file to skip."""


class IndexInterrupted(KeyboardInterrupt):
    """Ctrl-C while probing; the message says what the index cache kept."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ttt-mm/index`` (``~/.cache/ttt-mm/index``)."""
    return user_cache_dir("index")


def default_jobs() -> int:
    return min(4, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------ one file


def usable(record: dict, stream: str) -> bool:
    """Whether a record's stream is present and readable."""
    return bool(record.get(f"has_{stream}")) and not record.get(f"{stream}_error") and not record.get("error")


def media_info(record: dict) -> MediaInfo:
    """The `MediaInfo` of a record's readable streams (a present but unreadable stream counts as absent)."""
    audio, video = usable(record, "audio"), usable(record, "video")
    width, height = record.get("width"), record.get("height")
    return MediaInfo(
        path=record["path"],
        num_bytes=record["bytes"],
        has_audio=audio,
        has_video=video,
        audio_duration=record.get("audio_duration") if audio else None,
        sample_rate=record.get("sample_rate") if audio else None,
        channels=record.get("channels") if audio else None,
        audio_backend=record.get("audio_backend") if audio else None,
        video_duration=record.get("video_duration") if video else None,
        fps=record.get("fps") if video else None,
        n_frames=record.get("n_frames") if video else None,
        size=(width, height) if video and width and height else None,
        video_backend=record.get("video_backend") if video else None,
        video_stated=record.get("video_stated") if video else None,
        silent=record.get("silent") if audio else None,
        audio_stated=record.get("audio_stated") if audio else None,
        audio_gaps=record.get("audio_gaps") if audio else None,
    )


def _stream_fields(info: MediaInfo, stream: str) -> dict:
    if stream == "audio":
        fields = {
            "audio_backend": info.audio_backend,
            "audio_duration": info.audio_duration,
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "silent": info.silent,
            "audio_stated": info.audio_stated,
            "audio_gaps": info.audio_gaps,
        }
    else:
        width, height = info.size or (None, None)
        fields = {
            "video_backend": info.video_backend,
            "video_duration": info.video_duration,
            "fps": info.fps,
            "n_frames": info.n_frames,
            "width": width,
            "height": height,
            "video_stated": info.video_stated,
        }
    return {k: v for k, v in fields.items() if v is not None}


def describe(path: str, verify: bool = True) -> dict:
    """The index record of one file (a bad file gets an ``error``). Run in a worker (`IsolatedPool`):
    this opens the file with every decoder it needs."""
    record: dict = {"path": path, "version": VERSION, "verified": verify}
    try:
        st = os.stat(path)
    except OSError as exc:
        return record | {"error": stat_reason(path, exc)}
    record |= {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    errors = {}
    for stream in STREAMS:
        try:
            info = decode.probe(path, (stream,), verify)
        except MediaError as exc:
            record[f"has_{stream}"] = exc.reason != f"no {stream} stream"
            if record[f"has_{stream}"]:
                errors[stream] = exc.reason
        else:
            record |= {f"has_{stream}": True} | _stream_fields(info, stream)
    decode.clear_caches()  # each file is probed once: keep the worker small
    if len(errors) == 2 and len(set(errors.values())) == 1:  # the file itself (empty, not a container, ...)
        return {k: v for k, v in record.items() if not k.startswith("has_")} | {"error": errors["audio"]}
    if not errors:
        try:
            decode.check_audio_covers_video(media_info(record))
        except MediaError as exc:
            errors["audio"] = exc.reason
    record |= {f"{stream}_error": reason for stream, reason in errors.items()}
    if not any(usable(record, s) for s in STREAMS):
        record["error"] = "; ".join(f"{s}: {r}" for s, r in errors.items()) or "no audio or video stream"
        if len(errors) == 1:
            record["error"] = next(iter(errors.values()))
    return record


# ---------------------------------------------------------------------------------------- index


def cache_file(paths: Sequence[str], cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the index of these files is cached: one file per folder that holds them all."""
    root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else "/"
    return _folder_cache(root, cache_dir)


def _folder_cache(folder: str, cache_dir: str | os.PathLike | None) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(folder) or "root")[:40]
    digest = hashlib.sha1(os.fsencode(folder)).hexdigest()[:12]
    return Path(cache_dir or default_cache_dir()) / f"{name}-{digest}.jsonl"


def _records_nearby(
    wanted: dict[str, os.stat_result], own: Path, cache_dir: str | os.PathLike | None, current: Callable
) -> dict[str, dict]:
    """Records of the files in ``wanted`` (by their stat) that are ``current(record, stat)`` in the
    caches of the folders around them, ``own`` aside: a run over a whole dataset indexed a subfolder's
    files in the dataset folder's cache, and a run over each subfolder the files a manifest of the
    dataset lists. (Read without their locks: a cache is only ever replaced whole; one that cannot be
    read is passed over.)"""
    folders: set[str] = set()
    for path in wanted:
        folder = os.path.dirname(path)
        while folder not in folders:
            folders.add(folder)
            folder = os.path.dirname(folder)
    found = {}
    for cache in sorted({_folder_cache(f, cache_dir) for f in folders} - {own}):
        try:
            records = _load(cache)
        except OSError:
            continue
        found |= {p: r for p, r in records.items() if p in wanted and current(r, wanted[p])}
    return found


def _load(path: Path) -> dict[str, dict]:
    records = {}
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")  # a damaged line costs that line only
    except FileNotFoundError:
        return records
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
            records[record["path"]] = record
        except (ValueError, KeyError, TypeError):
            log.warning("%s: line %d is not an index record; that file will be probed again", path, number)
    return records


def _save(path: Path, records: dict[str, dict]) -> None:
    write_text(path, "".join(json.dumps(record) + "\n" for record in records.values()))


def _current(record: dict | None, st: os.stat_result, verify: bool, timeout: float) -> bool:
    """Whether a cached record still describes this version of the file (a probe that hung under a
    shorter timeout than ``timeout`` is tried again, and so is a file that could not be opened)."""
    return (
        record is not None
        and not str(record.get("error", "")).startswith(CANNOT_OPEN)
        and record.get("bytes") == st.st_size
        and record.get("mtime_ns") == st.st_mtime_ns
        and record.get("version") == VERSION
        and (record.get("verified") or not verify)
        and record.get("hung_timeout", timeout) >= timeout
    )


@dataclass
class IndexRun:
    """What one `index_files` call did (for logs and benchmarks)."""

    cache: Path
    probed: int = 0
    cached: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  # path -> crash/hang reason


def index_files(
    paths: Iterable[str | os.PathLike],
    cache_dir: str | os.PathLike | None = None,
    jobs: int | None = None,
    timeout: float = PROBE_TIMEOUT,
    verify: bool = True,
    refresh: bool = False,
    task: Callable[[str], dict] | None = None,
) -> tuple[dict[str, dict], IndexRun]:
    """Index records of ``paths`` (absolute path -> record), probing only files the cache does not
    describe. ``timeout``: seconds a probe may take before its worker is killed (plus 1 s per 20 MB);
    a file recorded as hung is probed again under a longer one. ``refresh`` probes every file again.
    ``task`` replaces `describe` (tests inject faults with it). What was probed is saved every
    `SAVE_SECONDS` and when probing stops early; Ctrl-C then raises `IndexInterrupted`, saying so."""
    refuse_in_a_worker()  # before the lock, which the caller of an unguarded script's worker holds
    files = list(dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths))
    task = task or partial(describe, verify=verify)
    run = IndexRun(cache_file(files, cache_dir))
    if not files:
        return {}, run
    started = time.monotonic()
    with _lock_file(run.cache) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another rank or run indexing the same folder: wait, then reuse
        cached = _load(run.cache)
        out, stats = {}, {}
        for path in files:
            try:
                stats[path] = os.stat(path)
            except OSError as exc:
                out[path] = {"path": path, "error": stat_reason(path, exc)}

        def current(record: dict | None, st: os.stat_result) -> bool:
            return not refresh and _current(record, st, verify, timeout)

        stale = {p: st for p, st in stats.items() if not current(cached.get(p), st)}
        adopted = _records_nearby(stale, run.cache, cache_dir, current) if stale and not refresh else {}
        cached |= adopted
        todo = []
        for path, st in stats.items():
            if current(cached.get(path), st):
                # (a chmod keeps size and mtime: a file read well before may no longer open)
                why = open_reason(path) if "error" not in cached[path] else None
                out[path] = cached[path] if why is None else {"path": path, "error": why}
                run.cached += 1
            else:
                todo.append(path)
        others: dict[str, dict] | None = None  # the cache's records of files not asked for, still there
        probed: dict[str, dict] = {}

        def save() -> None:
            nonlocal others
            if others is None:  # (once, and only when something is saved: each is a stat)
                others = {p: r for p, r in cached.items() if p not in out and _exists(r)}
            _save(run.cache, others | {p: r for p, r in (out | probed).items() if "bytes" in r})

        if adopted and not todo:
            save()  # (records from the caches around it: this folder's own has them next time)
        if todo:
            level = logging.INFO if len(todo) >= 10 else logging.DEBUG  # a few files are quick: no line for them
            log.log(
                level,
                "indexing %d new or changed files (%d from the index cache) into %s",
                len(todo),
                run.cached,
                run.cache,
            )
            try:
                progressed = _probe(todo, task, jobs or default_jobs(), timeout, run, probed, save)
            except BaseException as exc:
                save()  # what was probed survives an interrupt or a failure
                if not isinstance(exc, KeyboardInterrupt):
                    raise
                message = (
                    f"interrupted: kept {len(probed)} of {len(todo)} probe results in the index cache {run.cache}; "
                    f"a re-run probes only the other {len(todo) - len(probed)}"
                )
                log.warning("%s", message)
                raise IndexInterrupted(message) from None
            save()
            out |= probed
            log.log(
                logging.INFO if progressed else level,  # (progress was logged: so is its end)
                "probed %d new or changed files in %.0f s: %d of them cannot be read",
                len(todo),
                time.monotonic() - started,
                sum(1 for r in probed.values() if r.get("error")),
            )
        run.probed = len(todo)
    run.seconds = time.monotonic() - started
    return {p: out[p] for p in files}, run


def _lock_file(cache: Path):
    """The index's lock file, opened for writing (its folder made if needed)."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        return open(cache.with_suffix(".lock"), "w")
    except OSError as err:
        raise IndexCacheError(
            f"the dataset index cannot be kept in {cache.parent} ({err.strerror or err}): set the index cache "
            "to a folder you can write (index_cache=; data.index_cache= for train and evaluate; probe's --index-cache)"
        ) from None


def _exists(record: dict) -> bool:
    try:
        st = os.stat(record["path"])
    except OSError:
        return False
    return st.st_size == record.get("bytes") and st.st_mtime_ns == record.get("mtime_ns")


def _probe(
    paths: list[str],
    task: Callable,
    jobs: int,
    timeout: float,
    run: IndexRun,
    out: dict[str, dict],
    save: Callable[[], None],
) -> bool:
    """Probe ``paths`` into ``out`` as results come, calling ``save`` every `SAVE_SECONDS` (a killed
    run keeps what it had probed); True when it logged how far it was (a slow indexing)."""
    last_log = last_save = time.monotonic()
    progressed = False
    for path, result in IsolatedPool(task, jobs=jobs, timeout=timeout).map(paths):
        if isinstance(result, Failure):
            run.failures[path] = result.reason
            try:
                st = os.stat(path)
            except OSError as exc:
                result = {"path": path, "error": stat_reason(path, exc)}
            else:
                record = {"path": path, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "version": VERSION}
                record |= {"verified": True, "error": result.reason}
                if result.hung:  # remembered only until a run allows a probe more time
                    record["error"] += " (a longer probe timeout tries it again)"
                    record["hung_timeout"] = timeout
                result = record
        out[path] = result
        if time.monotonic() - last_log > PROGRESS_SECONDS and len(out) < len(paths):  # the last file: the caller logs
            log.info("probed %d of %d new or changed files so far", len(out), len(paths))
            last_log, progressed = time.monotonic(), True
        if time.monotonic() - last_save > SAVE_SECONDS:
            save()
            last_save = time.monotonic()
    return progressed


# ------------------------------------------------------------------------------------ selection


@dataclass
class Selection:
    """Clips a reader can use (each with its file's `MediaInfo`), and the rest with their reasons."""

    clips: list[ClipInfo]
    rejected: dict[str, str]  # clip name (a span's own trouble: its `ClipInfo.segment`) -> reason
    silent: dict[str, str]  # videos read with a silent track -> why (no audio stream, or its audio's trouble)

    def reason_of(self, clip: ClipInfo) -> str | None:
        """Why ``clip`` (one of those selected from) was left out, by its span or its whole file; None if kept."""
        return self.rejected.get(clip.segment) or self.rejected.get(clip.name)


# Why training and evaluation (`ReadSpec.skip_silent`), when they read only audio, leave out a file
# whose audio is all zeros (often a placeholder track): it holds nothing to model, and copying the
# last step predicts it perfectly, so every ratio to that baseline is meaningless. Runs that read
# audio and video treat such a track as no sound (`ReadSpec.missing_audio`: left out, or read as
# the silence it is), and embedding keeps it (silence has an embedding).
SILENT_AUDIO = "the audio is digital silence (nothing to model or score when only audio is read)"
SILENT_TRACK = "the audio is digital silence"


def select(clips: Sequence[ClipInfo], records: dict[str, dict], spec: ReadSpec) -> Selection:
    """The clips whose files have the streams ``spec`` reads (see `ReadSpec.missing_audio`); with
    ``spec.skip_silent``, a file whose audio is digital silence is left out of audio-only reads
    (`SILENT_AUDIO`), and read with video it counts as a video without sound (`SILENT_TRACK`)."""
    kept, rejected, silent = [], {}, {}
    past_end = []  # (segment, where its file ends): a manifest's end beyond the file (a typo, or another file)
    reads = " and ".join(spec.modalities)
    for clip in clips:
        if isinstance(clip.media, SyntheticClip):
            kept.append(clip)
            continue
        record = records[os.path.abspath(clip.media)]
        if record.get("error"):
            rejected[clip.name] = record["error"]
            continue
        mute = spec.skip_silent and "audio" in spec.modalities and usable(record, "audio") and record.get("silent")
        if mute and spec.modalities == ("audio",):
            rejected[clip.name] = SILENT_AUDIO
            continue
        if mute and usable(record, "video"):  # read with video: a video without sound (a broken video says so)
            record = record | {"audio_error": SILENT_TRACK}
        missing = [s for s in spec.modalities if not usable(record, s)]
        if missing == ["audio"] and spec.missing_audio == "silence" and "video" in spec.modalities:
            silent[clip.name] = record.get("audio_error") or "no audio stream"
        elif missing:
            stream = missing[0]
            hint = f"the model reads {reads}"
            if stream == "audio" and "video" in spec.modalities:
                hint += f"; data.missing_audio={spec.missing_audio}"
            rejected[clip.name] = f"{record.get(f'{stream}_error') or f'no {stream} stream'} ({hint})"
            continue
        clip = replace(clip, info=media_info(record))
        try:
            _, end = clip_span(clip, spec)
        except MediaError as exc:  # this span of the file is too short: its other spans may not be
            rejected[clip.segment] = exc.reason
            continue
        if clip.end is not None and clip.end > end + PAST_END_SLACK_S:
            past_end.append((clip.segment, end))
        kept.append(clip)
    if past_end:
        (name, end), n = past_end[0], len(past_end)
        log.warning(
            "clips that end past their file's end, read to it: %d (the first: %s; the file ends at %.3f s)",
            n,
            name,
            end,
        )
    return Selection(kept, rejected, silent)


def _warn_uneven_ends(clips: Sequence[ClipInfo]) -> None:
    """One warning per file whose audio and video end more than `UNEVEN_END_S` apart: what is read of
    it stops where the first stream ends (`clip_span`), which a user reading a whole file should know."""
    both = [c for c in clips if c.info is not None and c.info.has_audio and c.info.has_video]
    cut = {c.name: c.info for c in both if c.end is None or c.end > min(c.info.audio_duration, c.info.video_duration)}
    for name, info in cut.items():
        gap = info.video_duration - info.audio_duration
        if abs(gap) > UNEVEN_END_S:
            first, other = ("audio", "video") if gap > 0 else ("video", "audio")
            log.warning(
                "%s: the %s ends %.3f s before the %s (at %.3f s of %.3f s): read to where both streams go",
                one_line(name),
                first,
                abs(gap),
                other,
                min(info.audio_duration, info.video_duration),
                max(info.audio_duration, info.video_duration),
            )


def _decoded_whole_past_the_cache(info: MediaInfo | None, sample_rate: int) -> bool:
    """Whether a file's audio is decoded whole (not a libsndfile format) to more samples than
    `decode.audio.AUDIO_CACHE_SAMPLES`, so that reading another file's audio between two of its
    windows decodes it all again."""
    if info is None or not info.has_audio or info.audio_backend == "soundfile" or not info.audio_duration:
        return False
    return info.audio_duration * sample_rate > AUDIO_CACHE_SAMPLES


def index_clips(
    clips: Sequence[ClipInfo],
    spec: ReadSpec,
    cache_dir: str | os.PathLike | None = None,
    jobs: int | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> Selection:
    """Index the clips' files (probing new ones in subprocesses) and keep those a reader can use.

    Logs one line per video read with a silent track, saying why: a warning when the file has sound
    that cannot be read (the model hears silence where there was sound); and a warning per file whose
    audio or video decodes well short of the length the file states (truncated, or a corrupt middle that
    ends the decoder's reading): it is read as far as it goes; a warning per file whose audio has gaps read
    as silence, and per file read with both streams that end over `UNEVEN_END_S` apart (what is read
    stops where the first ends). This is what training, embedding and
    evaluation call before they open any file.
    """
    files = [c.media for c in clips if not isinstance(c.media, SyntheticClip)]
    records, _ = index_files(files, cache_dir, jobs, timeout)
    selection = select(clips, records, spec)
    for name, why in selection.silent.items():
        level = logging.INFO if why in ("no audio stream", SILENT_TRACK) else logging.WARNING
        log.log(level, "%s: %s: read with a silent track", one_line(name), why)  # (data.missing_audio=silence)
    for stream in spec.modalities:
        short = {c.name: c.info for c in selection.clips if c.info is not None and getattr(c.info, f"{stream}_stated")}
        for name, info in short.items():
            log.warning(
                "%s: the %s decodes to %.3f s of the %.3f s the file states (truncated or corrupt): read as far as "
                "it goes",
                one_line(name),
                stream,
                getattr(info, f"{stream}_duration"),
                getattr(info, f"{stream}_stated"),
            )
    if "audio" in spec.modalities:
        whole = {c.name: c.info for c in selection.clips if _decoded_whole_past_the_cache(c.info, spec.sample_rate)}
        if whole:
            (name, info), n = next(iter(whole.items())), len(whole)
            log.warning(
                "files whose compressed audio is longer than the decoded track a process keeps, so that it is "
                "decoded whole again whenever another file's audio was read in between: %d (the first: %s, "
                "%.0f min); extract such audio to FLAC (ffmpeg -i in -vn out.flac), which is read by seeking",
                n,
                one_line(name),
                info.audio_duration / 60,
            )
        if "video" in spec.modalities:
            _warn_uneven_ends(selection.clips)
        gapped = {c.name: c.info for c in selection.clips if c.info is not None and c.info.audio_gaps}
        for name, info in gapped.items():  # (once per file, however many of its spans are used)
            log.warning(
                "%s: %.3f s inside the audio is missing (packets the decoder could not read, or a gap in its "
                "timestamps): read as silence in place",
                one_line(name),
                info.audio_gaps,
            )
    return selection
