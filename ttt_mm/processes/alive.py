"""Whether a process still runs, by its pid: what tells the notes and marks of a run that is over from
those of one still going (`ttt_mm.data.reading_notes`, `ttt_mm.messages.once`), and ends a worker with
the process it works for (`end_with`)."""

from __future__ import annotations

import contextlib
import glob
import os
import select
import signal
import tempfile
import threading
import time

_STARTED = time.time()
"""When this module was imported: before this process wrote any file named by its pid (each writer of one
imports it), so such a file older than this (by more than `_CLOCK_SLACK`) is a former holder's of the pid.
Pids are reused: a container's run gets the same small pid every time, and its temporary folder may last."""
_CLOCK_SLACK = 1.0
"""Seconds a file's time may lag the clock (filesystems stamp files from a coarser clock)."""


def _pid_namespace() -> str:
    """This process's pid namespace, as the kernel numbers it ('' where there is no ``/proc``)."""
    try:
        link = os.readlink("/proc/self/ns/pid")  # e.g. 'pid:[4026531836]'
    except OSError:
        return ""
    return "".join(c for c in link if c.isdigit())


def scoped(prefix: str) -> str:
    """``prefix`` for the files this process names by pids, tagged with its pid namespace: containers
    that share a temporary folder each number their processes from 1, so their runs' pids collide, and
    one container's processes are never running in another's eyes (`remove_left_by_gone`)."""
    namespace = _pid_namespace()
    return f"{prefix}.ns{namespace}" if namespace else prefix


def running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (another user's process)
        return True
    return True


def end_with(pid: int, name: str) -> None:
    """Kills this process when process ``pid`` ends: a thread (called ``name``) waits on it (a pidfd;
    where there is none, by polling). A process stuck in a native call (a decoder in a bad file) learns
    of the end of the process it works for only when the call returns, if ever, and would keep a core
    busy for good."""

    def watch() -> None:
        try:
            handle = os.pidfd_open(pid)
        except (AttributeError, OSError):  # (not Linux, or a kernel before 5.3)
            while running(pid):
                time.sleep(1.0)
        else:
            select.select([handle], [], [])  # readable once the process has ended
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name=name, daemon=True).start()


def remove_left_by_gone(prefix: str) -> None:
    """Remove the files ``<prefix>-<pid>-...`` in this machine's temporary folder whose process ``pid``
    is gone (runs that are over, killed before they could remove their own), or is this one but was
    another when it wrote them (`_STARTED`)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{prefix}-*-*")):
        pid = os.path.basename(path).removeprefix(f"{prefix}-").partition("-")[0]
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            mine = int(pid) == os.getpid()
            if (mine and os.stat(path).st_mtime < _STARTED - _CLOCK_SLACK) or not (mine or running(int(pid))):
                os.unlink(path)
