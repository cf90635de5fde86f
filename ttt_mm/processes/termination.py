"""SIGTERM taken as Ctrl-C by the commands that write their outputs one by one (embed, evaluate,
linear_probe, probe): a scheduler stopping the job, or ``kill``, ended them without a word, a
temporary file left beside the outputs. Taken as Ctrl-C, such a command stops the way it does then
(it says how far it got, nothing is left half-written) and exits with 143, as shells report SIGTERM.
Python takes a signal between two bytecodes of the main thread: inside one long native call (a
decoder's read, a large product) the command stops when that call returns. A second SIGTERM ends
the process at once, as one did before. Training leaves SIGTERM to Lightning, which stops the fit
after the step (every process of a data-parallel one after the same step:
`ttt_mm.training.terminated_together`); the run then says how to resume (`ttt_mm.tasks.train`)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_received = threading.Event()
_handlers: set = set()  # the handlers `sigterm_as_ctrl_c` set


def _default_in_child() -> None:
    """A process forked (by Python) while SIGTERM is taken as Ctrl-C gets the default back at once."""
    if signal.getsignal(signal.SIGTERM) in _handlers:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_in_child)


def terminated() -> bool:
    """Whether a SIGTERM stopped this command (`sigterm_as_ctrl_c`), until `forget_termination`."""
    return _received.is_set()


def forget_termination() -> None:
    """Said: a later Ctrl-C in this process (a notebook's, a sweep's next job) is a Ctrl-C again."""
    _received.clear()


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """For the block, SIGTERM raises KeyboardInterrupt in this process (the main thread), and
    `terminated` says it was that. A process forked meanwhile (a data loader's worker) still ends on
    it. Left alone where SIGTERM already has a handler, or off the main thread."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    ours = os.getpid()

    def stop(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (a second one, or one in a forked process: the end)
        if os.getpid() != ours:  # (forked from native code, which runs no fork hook)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        _received.set()
        raise KeyboardInterrupt

    forget_termination()
    _handlers.add(stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _handlers.discard(stop)
