"""SIGTERM taken as Ctrl-C by the commands that write their outputs one by one (embed, evaluate,
linear_probe): a scheduler stopping the job, or ``kill``, ended them without a word, a temporary file
left beside the outputs. Taken as Ctrl-C, such a command stops the way it does then (it says how far
it got, nothing is left half-written) and exits with 143, as shells report SIGTERM. Training leaves
SIGTERM to Lightning, which saves a checkpoint and says how to resume (`ttt_mm.tasks.train`)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_received = threading.Event()


def terminated() -> bool:
    """Whether a SIGTERM stopped this command (`sigterm_as_ctrl_c`)."""
    return _received.is_set()


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """For the block, SIGTERM raises KeyboardInterrupt in this process (the main thread), and
    `terminated` says it was that. A process forked meanwhile (a data loader's worker) still ends on
    it as it did. Left alone where SIGTERM already has a handler, or off the main thread."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    ours = os.getpid()

    def stop(signum, frame) -> None:
        if os.getpid() != ours:  # (a forked process: ends as a SIGTERM ends it by default)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        _received.set()
        raise KeyboardInterrupt

    _received.clear()
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
