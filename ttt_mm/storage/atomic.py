"""Files written whole or not at all: every output goes to a hidden temporary name beside its final
one and is renamed into place (atomic within a folder), so a killed or failed run never leaves a
half-written file under a name that a reader trusts."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import math
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NAME_MAX = 255
"""Bytes in one file name on the usual filesystems (ext4, xfs, btrfs, tmpfs)."""
STALE_SECONDS = 3600.0
"""A temporary file left untouched this long belongs to a killed run: writers add to theirs as they go."""
_TEMPORARY = re.compile(r"\..+\.ttt-mm-\d+(-[0-9a-f]{8})?\.tmp")
"""`temporary_path`'s names, tagged so that the sweep (`remove_stale_temporaries`) takes no one else's
(without the random part: those of earlier versions)."""


def temporary_path(final: str | os.PathLike) -> Path:
    """A hidden name beside ``final``, new at each call: the process's id and a random part (two threads
    of a process, or processes of one id in two containers sharing a folder, must not write one file).
    It ends in ``.tmp``, never in the final suffix; a name too long to take the additions is replaced by
    its hash."""
    final = Path(final)
    tag = f"ttt-mm-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    name = f".{final.name}.{tag}"
    if len(os.fsencode(name)) > NAME_MAX:  # (fsencode: a name that is not UTF-8 keeps its bytes)
        name = f".{hashlib.sha1(os.fsencode(final.name)).hexdigest()[:20]}.{tag}"
    return final.with_name(name)


@contextmanager
def replaced(path: str | os.PathLike) -> Iterator[Path]:
    """Yields the temporary path to write; it replaces ``path`` when the block ends (its data on disk
    first, so that a power cut cannot leave an empty file under the final name), and is removed
    instead if the block raises."""
    tmp = temporary_path(path)
    try:
        yield tmp
        flush_to_disk(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def replaced_with_sidecar(path: str | os.PathLike, sidecar: str | os.PathLike) -> Iterator[tuple[Path, dict]]:
    """As `replaced`, for a file and the JSON sidecar that describes it: the block writes the temporary
    path and fills the dict with the sidecar's data. Both are written to temporary names and reach the
    disk first (a sidecar that cannot be written fails there, the old pair untouched); then the old
    sidecar goes, so that it never describes the new file, and the two are renamed into place, a Ctrl-C
    or SIGTERM meanwhile waiting for them: an interrupted run keeps the old pair or the new one (a rename that fails,
    which the disk's writes passed first make all but impossible, can leave the file without a sidecar:
    not done, for readers that count an output by its sidecar)."""
    tmp, data, side_tmp = temporary_path(path), {}, temporary_path(sidecar)
    try:
        yield tmp, data
        flush_to_disk(tmp)
        side_tmp.write_text(_json_text(data), encoding="utf-8", errors="surrogateescape")
        flush_to_disk(side_tmp)
        with signals_held():
            Path(sidecar).unlink(missing_ok=True)
            os.replace(tmp, path)
            os.replace(side_tmp, sidecar)
    finally:
        tmp.unlink(missing_ok=True)
        side_tmp.unlink(missing_ok=True)


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM during the block takes effect when it ends (in the main thread, where
    Python takes signals), whether it ended well or raised: each as the handler before it would have taken
    it, a default SIGTERM ending the process (an error the block raised yields to the signal's, which
    keeps it as its context). A signal whose handler Python cannot restore (one set from C) is not held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple] = []
    previous = {s: h for s in (signal.SIGINT, signal.SIGTERM) if (h := signal.getsignal(s)) is not None}
    for s in previous:
        signal.signal(s, lambda *received: caught.append(received))
    try:
        yield
    finally:  # (also where the block raised: a caller that goes on after a failed write must not lose a Ctrl-C)
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum, frame in caught:
            if callable(handler := previous[signum]):
                handler(signum, frame)  # (Python's own SIGINT handler raises KeyboardInterrupt)
            elif handler == signal.SIG_DFL and signum == signal.SIGINT:
                raise KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)  # (a default SIGTERM: the process ends, its files whole)


def flush_to_disk(path: str | os.PathLike) -> None:
    """``path``'s data on disk (where its filesystem can say so: some FUSE mounts cannot)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems (FUSE mounts, pipes) cannot: the rename still keeps readers safe
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike, older_than: float = STALE_SECONDS) -> int:
    """Removes the temporary files (`temporary_path`) under ``folder`` that no one has written to for
    ``older_than`` seconds, which killed runs left behind; returns how many."""
    removed, cutoff = 0, time.time() - older_than
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                if _TEMPORARY.fullmatch(name) and os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
                    removed += 1
            except OSError:  # gone meanwhile, or not ours to remove
                continue
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` as UTF-8, written whole; file names that are not UTF-8 keep their bytes (as the skip list's)."""
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def plain(value):
    """``value`` with NaN and infinities as None (JSON has no NaN) and numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, data: dict) -> None:
    """``data`` as standard JSON (`plain`), written whole."""
    write_text(path, _json_text(data))


def _json_text(data: dict) -> str:
    return json.dumps(plain(data), indent=1) + "\n"


def write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
    """A CSV table with these columns (keys beyond them ignored; None and NaN as empty cells), written
    whole, as UTF-8 (`write_text`)."""
    with replaced(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in plain(row).items()})
