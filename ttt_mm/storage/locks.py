"""Exclusive file locks that a filesystem without locks does not turn into errors, and a file read,
merged and written again by processes that may run at once (two reruns of a sweep's jobs into its
folder, each rewriting the folder's results): the read and the write are held together under one
lock, so that no process writes over rows another added meanwhile."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
"""What ``flock`` raises on a filesystem that takes no locks (Lustre mounted without ``flock``, some FUSE
and SMB mounts)."""
_said: set[str] = set()


def exclusive(f, where: str | os.PathLike, blocking: bool = True) -> bool:
    """Takes the exclusive lock of the open file ``f`` (a file object or descriptor) of the file ``where``:
    True once held, False where its filesystem takes no locks (said once per folder; the caller goes on
    unlocked, as a process alone would). Without ``blocking``, raises BlockingIOError while another
    process holds it."""
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError as exc:
        if exc.errno not in NO_LOCKS:
            raise
        folder = os.path.dirname(os.path.abspath(where))
        if folder not in _said:
            _said.add(folder)
            log.warning(
                "%s: its filesystem takes no file locks (%s): processes that write there at once are not kept apart",
                folder,
                exc.strerror,
            )
        return False
    return True


@contextlib.contextmanager
def held(path: str | os.PathLike) -> Iterator[None]:
    """Holds the exclusive lock of ``path`` (on a hidden ``.<name>.lock`` beside it, left there for the
    next holder) for the block; where that cannot be made (a folder that takes no files, another user's
    lock file) or taken (a filesystem without locks), the block runs unlocked, as it did alone."""
    path = Path(path)
    name = path.with_name(f".{path.name}.lock")
    read_only = False
    try:
        lock = os.open(name, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError:
        try:
            lock = os.open(name, os.O_RDONLY)  # (another user's: flock takes a file opened to read too)
            read_only = True
        except OSError:
            yield
            return
    try:
        try:
            exclusive(lock, name)
        except OSError:  # (NFS emulates flock with fcntl's locks, which need a file opened to write: EBADF)
            if not read_only:
                raise
        yield
    finally:
        os.close(lock)  # (closing releases the lock)
