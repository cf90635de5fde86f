"""The dataset index: what every media file holds, probed once in a subprocess and cached on disk.

`index_files` describes files with `ttt_mm.data.decode.probe` (verified: the last frame and all of the
audio decoded) in an `IsolatedPool`, so a file that crashes or hangs a decoder is recorded as bad
("decoder crashed: SIGABRT", "decoder hung: no answer in 60 s") and is never opened by the process
that trains, embeds or evaluates. The records are cached as JSONL, one line per file keyed by its
real path (links resolved where decoders read both names alike, `_index_path`: a file is probed once,
whichever link reaches it), size and modification time, under ``<cache dir>/<folder name>-<hash of the
folder>.jsonl`` for the folder that holds the files by those paths (for a folder of links, the one that
holds their targets); a second run probes only new or changed files, and files that hung under a
shorter probe timeout than this run's. A file this folder's cache lacks is looked up in the caches of
the folders around it (a subfolder of a dataset indexed whole, the folders a manifest draws on), so it
is probed once whichever way it is reached. The file is rewritten whole under a temporary name and
renamed, under a lock (ranks of one job share it): at the end, every few minutes while
probing and when interrupted, so that an interrupted first indexing of a large folder keeps its work.

A record (plain JSON)::

    {"path": "/data/a.avi", "bytes": 74946, "mtime_ns": 1700000000000000000, "version": 2, "verified": true,
     "has_video": true, "video_backend": "decord", "video_duration": 2.0, "fps": 25.0, "n_frames": 50,
     "width": 160, "height": 120,
     "has_audio": true, "audio_backend": "pyav", "audio_duration": 2.0, "sample_rate": 48000, "channels": 2,
     "silent": false}

``has_<stream>`` says the stream is present; ``<stream>_error`` (when set) why it cannot be read;
``error`` (when set) why the file is of no use at all. `ttt_mm.data.selection` then keeps the clips a
reader can use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ttt_mm import moved_names
from ttt_mm.data import decode
from ttt_mm.data.decode import MediaError, MediaInfo, stat_reason
from ttt_mm.data.decode.errors import CANNOT_OPEN, open_reason
from ttt_mm.data.decode.isolation import Failure, IsolatedPool, refuse_in_a_worker
from ttt_mm.storage.atomic import signals_held, write_text
from ttt_mm.storage.cache import user_cache_dir
from ttt_mm.storage.locks import exclusive

log = logging.getLogger(__name__)
__getattr__ = moved_names(__name__, dict.fromkeys(("select", "Selection", "index_clips"), "ttt_mm.data.selection"))

VERSION = 26
"""Bump when what a probe finds changes (a new backend, a new check): older records are probed again."""

STREAMS = ("audio", "video")
LOCK_QUIET_SECONDS = 1.0
"""How long a run waits for another's hold on the index before it says that it waits."""
PROGRESS_SECONDS = 10.0
"""Seconds between the lines that say how far a long indexing is."""

RECORD_FIELDS = (
    "error",
    "bytes",
    "mtime_ns",
    "version",
    "verified",
    "hung_timeout",
    "probe_again",
    "has_audio",
    "audio_backend",
    "audio_duration",
    "audio_error",
    "sample_rate",
    "channels",
    "silent",
    "audio_stated",
    "audio_gaps",
    "audio_late",
    "audio_streams",
    "has_video",
    "video_backend",
    "video_duration",
    "video_stated",
    "video_gaps",
    "video_error",
    "fps",
    "n_frames",
    "width",
    "height",
    "zeroed_tail",
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
        video_gaps=record.get("video_gaps") if video else None,
        silent=record.get("silent") if audio else None,
        audio_stated=record.get("audio_stated") if audio else None,
        audio_gaps=record.get("audio_gaps") if audio else None,
        audio_late=record.get("audio_late") if audio else None,
        audio_streams=record.get("audio_streams") if audio else None,
        zeroed_tail=record.get("zeroed_tail"),
        mtime_ns=record.get("mtime_ns"),
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
            "audio_late": info.audio_late,
            "audio_streams": info.audio_streams,
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
            "video_gaps": info.video_gaps,
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
            if info.zeroed_tail:  # (of the file: the same in each stream's probe)
                record["zeroed_tail"] = info.zeroed_tail
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
        except ValueError:
            record = None
        if _well_formed(record):
            records[record["path"]] = record
        else:
            log.warning("%s: line %d is not an index record; that file will be probed again", path, number)
    return records


_FIELD_TYPES = {"path": str, "bytes": int, "mtime_ns": int, "version": int, "hung_timeout": (int, float)}
"""The types of the record fields the cache itself reads (the rest are `describe`'s, read by `MediaInfo`)."""


def _well_formed(record) -> bool:
    """Whether a cache line's record can be looked up and compared (a damaged line that still parses,
    ``{"path": null}``, failed the run at the cache's next save)."""
    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        return False
    return all(
        isinstance(record[k], kind) and not isinstance(record[k], bool)
        for k, kind in _FIELD_TYPES.items()
        if k in record
    )


def _save(path: Path, records: dict[str, dict]) -> None:
    write_text(path, "".join(json.dumps(record) + "\n" for record in records.values()))


def _probe_again(record: dict | None, st: os.stat_result) -> bool:
    """Whether ``record`` is of a probe of this version of the file that died of something other than the
    file (`Failure.files_doing`): tried again once."""
    return bool(record and record.get("probe_again")) and (record.get("bytes"), record.get("mtime_ns")) == (
        st.st_size,
        st.st_mtime_ns,
    )


def _current(record: dict | None, st: os.stat_result, verify: bool, timeout: float) -> bool:
    """Whether a cached record still describes this version of the file (a probe that hung under a
    shorter timeout than ``timeout`` is tried again, and so are a file that could not be opened and one
    whose probe died of something other than the file: `Failure.files_doing`)."""
    return (
        record is not None
        and not str(record.get("error", "")).startswith(CANNOT_OPEN)
        and not record.get("probe_again")
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
    asked = list(dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths))
    # a file is indexed under its real path (`_index_path`): reached through links (a folder of them) or
    # directly, it is one record, probed once; a link whose target is gone is named as the link
    out: dict[str, dict] = {}
    real: dict[str, str] = {}
    stats: dict[str, os.stat_result] = {}
    folders: dict[str, str] = {}  # each folder's real path, resolved once
    for path in asked:
        try:
            st = os.stat(path)
        except OSError as exc:
            out[path] = {"path": path, "error": stat_reason(path, exc)}
            continue
        real[path] = _index_path(path, folders)
        stats[real[path]] = st
    files = list(stats)
    task = task or partial(describe, verify=verify)
    run = IndexRun(cache_file(files or asked, cache_dir))
    if not files:
        return {p: out[p] for p in asked}, run
    started = time.monotonic()
    with _lock_file(run.cache) as lock:
        _wait_for(lock)  # another rank or run indexing the same folder: wait, then reuse
        cached = _load(run.cache)

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
        unsaved = False  # a save failed (a full disk): said once; the run goes on with its records in memory

        def save() -> bool:
            """Whether the cache now holds every record of the run (it is an optimisation: a cache that
            cannot be written costs the next run its probes, never this run its work). A Ctrl-C or
            SIGTERM meanwhile takes effect when it is done: one during the save after an interrupt (a
            second signal: `timeout` and `srun` signal the whole process group) lost the run's probes."""
            nonlocal others, unsaved
            try:
                with signals_held():
                    if others is None:  # (once, and only when something is saved: each is a stat)
                        others = {p: r for p, r in cached.items() if p not in out and _exists(r)}
                    _save(run.cache, others | {p: r for p, r in (out | probed).items() if "bytes" in r})
            except OSError as exc:
                if not unsaved:
                    log.warning(
                        "%s: the index cache cannot be saved (%s); this run goes on; a re-run probes its files again",
                        run.cache,
                        exc.strerror or exc,
                    )
                unsaved = True
                return False
            return True

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
                progressed = _probe(
                    {p: stats[p] for p in todo}, task, jobs or default_jobs(), timeout, run, probed, save, cached
                )
            except BaseException as exc:
                saved = save()  # what was probed survives an interrupt or a failure
                if not isinstance(exc, KeyboardInterrupt):
                    raise
                if not saved:
                    message = (
                        f"interrupted: the index cache {run.cache} could not be saved; a re-run probes again what "
                        "this run probed since it was last saved"
                    )
                elif probed:
                    message = (
                        f"interrupted: kept {len(probed)} of {len(todo)} probe results in the index cache {run.cache}; "
                        f"a re-run probes only the other {len(todo) - len(probed)}"
                    )
                else:
                    message = f"interrupted before the first of {len(todo)} probes ended: a re-run probes them all"
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
    return {p: out[p] if p not in real else _as_asked(out[real[p]], p) for p in asked}, run


def _index_path(path: str, folders: dict[str, str]) -> str:
    """The path a file is indexed under: its real path, where decoders read that name as they read the
    link's (the same extension, both UTF-8: decord cannot open a name that is not, and a probe of the
    target would choose it), else the link's own. ``folders``: the real paths of the folders resolved so
    far (`os.path.realpath` takes a system call per part of a path: once per folder, not per file)."""
    folder, name = os.path.split(path)
    if (real_folder := folders.get(folder)) is None:
        real_folder = folders[folder] = os.path.realpath(folder)
    target = os.path.join(real_folder, name)
    if os.path.islink(target):
        target = os.path.realpath(target)
    if target == path or os.path.splitext(target)[1].lower() != os.path.splitext(path)[1].lower():
        return path
    try:
        path.encode(), target.encode()
    except UnicodeEncodeError:  # (a name that is not UTF-8, held with surrogates)
        return path
    return target


def _as_asked(record: dict, path: str) -> dict:
    """A record of a file's real path, under the path it was asked for (a link to it)."""
    return record if record["path"] == path else {**record, "path": path}


def _wait_for(lock) -> None:
    """Take the index's lock, saying so where another process holds it longer than `LOCK_QUIET_SECONDS`
    (one that reads a current cache holds it a moment): a run that waited on another's indexing of the
    same files (the cache is shared by the folder they lie in) said nothing for minutes."""
    quiet_until = time.monotonic() + LOCK_QUIET_SECONDS
    while True:
        try:
            exclusive(lock, lock.name, blocking=False)
            return
        except BlockingIOError:
            if time.monotonic() > quiet_until:
                break
            time.sleep(0.05)
        except OSError:  # (NFS locks only files opened to write, EBADF: a read-only index is read unlocked)
            if lock.mode != "r":
                raise
            return
    log.info("waiting for another process indexing these files (it holds %s)", lock.name)
    exclusive(lock, lock.name)


def _lock_file(cache: Path):
    """The index's lock file, opened for writing (its folder made if needed); where it cannot be and
    the index exists (one shared read-only), the lock or the index opened to read (``flock`` takes
    either): the index is read, and whatever a run probes anew is not saved (`index_files` says so)."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        return open(cache.with_suffix(".lock"), "w")
    except OSError as err:
        for readable in (cache.with_suffix(".lock"), cache):
            with contextlib.suppress(OSError):
                return open(readable)
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
    paths: dict[str, os.stat_result],
    task: Callable,
    jobs: int,
    timeout: float,
    run: IndexRun,
    out: dict[str, dict],
    save: Callable[[], None],
    before: dict[str, dict],
) -> bool:
    """Probe ``paths`` (each with its stat before the probe) into ``out`` as results come, calling
    ``save`` every `SAVE_SECONDS` (a killed run keeps what it had probed); True when it logged how far it
    was (a slow indexing). ``before``: the cache's records, where a probe that died of something other
    than the file once is tried again."""
    last_log = last_save = time.monotonic()
    progressed = False
    for path, result in IsolatedPool(task, jobs=jobs, timeout=timeout).map(list(paths)):
        if isinstance(result, Failure):
            run.failures[path] = result.reason
            st = paths[path]  # (the version the probe read: a file that changed meanwhile is probed again)
            record = {"path": path, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "version": VERSION}
            record |= {"verified": True, "error": result.reason}
            if result.hung:  # remembered only until a run allows a probe more time
                record["error"] += " (a longer probe timeout tries it again)"
                record["hung_timeout"] = timeout
            elif not result.files_doing:  # (a process's error, a kill from outside)
                if _probe_again(before.get(path), st):  # (the same again: the file's doing after all)
                    record["error"] += " (the second run in a row: remembered until the file changes)"
                else:
                    record["error"] += " (the next run probes it again)"
                    record["probe_again"] = True
            result = record
        out[path] = result
        if time.monotonic() - last_log > PROGRESS_SECONDS and len(out) < len(paths):  # the last file: the caller logs
            log.info("probed %d of %d new or changed files so far", len(out), len(paths))
            last_log, progressed = time.monotonic(), True
        if time.monotonic() - last_save > SAVE_SECONDS:
            save()
            last_save = time.monotonic()
    return progressed
