"""Say a thing once per run, however many of its processes come upon it: a DataLoader starts new worker
processes for every pass over its data (every validation too), and each would say it again.

A run is its main process: the parent of a worker that `multiprocessing` started, the process itself
otherwise. What was said is marked by an empty file in this machine's temporary folder, named by that
process's pid and a digest of the words, made atomically, so that of two workers only one says it.
A run's marks go when it exits (`_forget_own`) or when its process starts another (`new_run`: a
sweep's next job); those of runs killed before are removed when a data module sets up (`clear_stale`).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import hashlib
import multiprocessing
import os
import tempfile

from ttt_mm.processes.alive import remove_left_by_gone, scoped

_PREFIX = scoped("ttt-mm-said")


def _mark(run: int | str, what: str) -> str:
    digest = "*" if what == "*" else hashlib.sha1(what.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"{_PREFIX}-{run}-{digest}")


def _run() -> int:
    parent = multiprocessing.parent_process()
    return os.getpid() if parent is None else parent.pid


def first_time(what: str) -> bool:
    """Whether this run has not said ``what`` yet; from now on, it has."""
    try:
        os.close(os.open(_mark(_run(), what), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:  # (no temporary folder to mark: it is said again next time)
        return True
    return True


def _forget_own() -> None:
    for mark in glob.glob(_mark(os.getpid(), "*")):
        with contextlib.suppress(OSError):
            os.unlink(mark)


atexit.register(_forget_own)  # (a multiprocessing child ends without exit handlers: its marks are its run's)


def new_run() -> None:
    """This process starts a run afresh: a sweep's jobs run one after another in one process, and each
    job's log says again what an earlier job said."""
    _forget_own()


def clear_stale() -> None:
    """Remove the marks of runs that are over (their main process is gone)."""
    remove_left_by_gone(_PREFIX)
