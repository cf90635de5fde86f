"""Ctrl-C while a command starts: its imports (PyTorch, Lightning, Hydra) and the composing of its
config take seconds, and a Ctrl-C then printed a traceback of import machinery, dozens of lines that
say nothing to a user. In a process started as a command (``python -m ttt_mm.tasks.<name>``,
``python train.py``), until the command's own work begins (`started`, called by ``hydra_command``
and the probe command), an interrupt that ends the process is said in one line; the exit status
stays Python's (130). SIGTERM then (a scheduler stopping the job) is said in one line too, with 143.
From then on each command says where it stopped itself, and an interrupt it does not catch shows its
traceback again (where a hang was). A script or notebook that imports the tasks keeps Python's own."""

from __future__ import annotations

import os
import signal
import sys
import threading

STARTING = "interrupted while the command was starting: nothing was run"
TERMINATED_STARTING = "terminated (SIGTERM) while the command was starting: nothing was run"

_before = None  # the hook that was in place before `say_ctrl_c_while_starting`


def _one_line(exc_type, exc, traceback) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        print(STARTING, file=sys.stderr)
    else:
        (_before or sys.__excepthook__)(exc_type, exc, traceback)


TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "train.py")
"""The repository's ``train.py`` (another script of that name is not the command)."""


def a_command() -> bool:
    """Whether this process was started as a command: ``python -m ttt_mm.tasks.<name>`` (or the old
    ``ttt_mm.data.probe``) or the repository's ``python train.py``."""
    argv = sys.orig_argv
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    script = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return module.startswith(("ttt_mm.tasks.", "ttt_mm.data.probe")) or script == os.path.realpath(TRAIN_SCRIPT)


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (a second one ends the process at once)
    print(TERMINATED_STARTING, file=sys.stderr)
    sys.exit(128 + signal.SIGTERM)  # (as shells report a SIGTERM)


def say_ctrl_c_while_starting() -> None:
    """In a command's process (`a_command`), until `started`, an uncaught KeyboardInterrupt ends the
    process with `STARTING`, and SIGTERM (a scheduler's, which ended it without a word) with
    `TERMINATED_STARTING`."""
    global _before
    if a_command() and sys.excepthook is not _one_line:
        _before, sys.excepthook = sys.excepthook, _one_line
    if a_command() and threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminated)


def started() -> None:
    """The command's own work begins: uncaught exceptions are shown as before, and SIGTERM is its
    default again (each command takes it its own way: `ttt_mm.processes.termination`)."""
    if sys.excepthook is _one_line:
        sys.excepthook = _before or sys.__excepthook__
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
