"""How the data loaders' worker processes start, take signals and end.

A scheduler's SIGTERM (SLURM's at a time limit, ``timeout``'s, ``kill`` of a process group) reaches
every process of the job, the loader workers too. A worker killed by it ended the run as a crash ("a
data loader worker died reading <file>", an innocent file blamed) before the training process, which
Lightning stops cleanly at the next step, could say where to resume. So a worker ignores SIGTERM and
ends with the process it reads for: that process shuts it down (its loader's shutdown), or it ends
when that process does (`ttt_mm.processes.alive.end_with`). A worker still running when the Python that
started it exits (a loader never shut down) is killed first: multiprocessing's exit would send it
SIGTERM and wait for it for good.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import signal
import sys

from ttt_mm.processes.alive import end_with


def worker_options(workers: int) -> dict:
    """A `DataLoader`'s keys for ``workers`` worker processes: how they start (`worker_start`) and what
    each does first (`leave_sigterm_to_the_reader`)."""
    if workers > 0:
        _killed_at_exit()
    return {"multiprocessing_context": worker_start(workers), "worker_init_fn": leave_sigterm_to_the_reader}


def worker_start(workers: int) -> str | None:
    """How loader workers start on Linux: forked, as the reading notes (named by the worker's parent
    process, `reading_notes`) and the decoders' fork-safe caches expect, whatever Python's default (3.14
    made it ``forkserver``: a crashed decoder's file would go unnamed and end the run). Elsewhere the
    platform's default (macOS spawns: a worker's parent is the training process too)."""
    return "fork" if workers > 0 and sys.platform.startswith("linux") else None


def leave_sigterm_to_the_reader(_: int) -> None:
    """A loader worker's start (``worker_init_fn``): SIGTERM ignored, and an end with its reader."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    end_with(os.getppid(), "ttt-mm-loader-watch")


@functools.cache
def _killed_at_exit() -> None:
    """Registers, once, the kill at exit of the worker processes still running (registered after
    multiprocessing's own exit handler, it runs before it)."""

    def kill() -> None:
        for process in multiprocessing.active_children():
            if process.daemon:  # (what multiprocessing's exit terminates: loader and decoder workers)
                process.kill()

    atexit.register(kill)
