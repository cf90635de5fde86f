"""Which file each DataLoader worker is reading, kept where the training process finds it when a
decoder kills the worker: a native crash runs no ``except`` or ``finally``, and PyTorch's error
names the worker's pid, never the file.

A worker writes a note before each read and removes it after (`reading`); the note of a worker that
died is read back by its parent (`left_by`). Notes live in this machine's temporary folder, named by
the pid namespace, the parent's pid and the worker's, so that runs on one machine (containers sharing
the folder too), or the nodes of one run sharing a run folder, never read each other's. A worker that
its loader's shutdown stops mid-read leaves its note: notes whose parent is gone are removed when a
data module sets up (`clear_stale`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator

from torch.utils.data import get_worker_info

from ttt_mm.processes.alive import remove_left_by_gone, scoped

_PREFIX = scoped("ttt-mm-reading")


def _note(parent: int, worker: int | str) -> str:
    return os.path.join(tempfile.gettempdir(), f"{_PREFIX}-{parent}-{worker}")


@contextlib.contextmanager
def reading(name: str) -> Iterator[None]:
    """Note ``name`` while this DataLoader worker reads it (nothing outside a worker: a crash there
    ends the training process itself)."""
    note = None if get_worker_info() is None else _note(os.getppid(), os.getpid())
    if note is not None:
        try:
            with open(note, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(name)
        except OSError:
            note = None  # (no temporary folder to write: the read goes on without its note)
    try:
        yield
    finally:
        if note is not None:
            with contextlib.suppress(OSError):
                os.unlink(note)


def _read(note: str) -> str | None:
    try:
        with open(note, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None


def peek(worker: int) -> str | None:
    """The file this process's worker ``worker`` is reading, or was when it died; the note stays."""
    return _read(_note(os.getpid(), worker)) or None


def left_by(worker: int | None) -> str | None:
    """The file this process's worker ``worker`` was reading when it died (its note, then removed);
    ``None`` for the worker: the one note its workers left, if there is exactly one."""
    if worker is None:
        notes = glob.glob(_note(os.getpid(), "*"))
        if len(notes) != 1:
            return None
        note = notes[0]
    else:
        note = _note(os.getpid(), worker)
    name = _read(note)
    if name is None:
        return None
    try:
        os.unlink(note)
    except OSError:
        return None
    return name or None


def clear_stale() -> None:
    """Remove the notes of runs that are over (their parent process is gone)."""
    remove_left_by_gone(_PREFIX)
