"""A file read, merged and written again by processes that may run at once (two reruns of a sweep's
jobs into its folder, each rewriting the folder's results): the read and the write are held together
under an exclusive lock, so that no process writes over rows another added meanwhile."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def held(path: str | os.PathLike) -> Iterator[None]:
    """Holds the exclusive lock of ``path`` (on a hidden ``.<name>.lock`` beside it, left there for the
    next holder) for the block; where that cannot be made (a folder that takes no files), the block
    runs unlocked, as it did alone."""
    path = Path(path)
    try:
        lock = os.open(path.with_name(f".{path.name}.lock"), os.O_CREAT | os.O_RDWR, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)  # (closing releases the lock)
