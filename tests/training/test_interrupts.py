"""Which processes of a data-parallel run leave Ctrl-C to the first (the end-to-end run is a slow
test in ``tests/test_train.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ttt_mm.training.interrupts import FIRST_PROCESS, first_process_marked, leave_ctrl_c_to_the_first_process


@pytest.mark.parametrize(
    ("mark", "ignored"),
    [
        (None, False),  # a plain run, the first process, or one that torchrun or SLURM started
        ("parent", True),  # started by the first process while it fits (Lightning's launcher)
        ("self", False),  # (the first process itself)
        ("other", False),  # started by another: the mark is inherited further down
    ],
)
def test_only_the_processes_the_first_one_started_ignore_ctrl_c(monkeypatch, mark, ignored):
    monkeypatch.delenv(FIRST_PROCESS, raising=False)
    other = subprocess.Popen([sys.executable, "-c", "pass"])  # (not 1: pytest's parent may be a container's first)
    other.wait()
    pid = {"parent": os.getppid(), "self": os.getpid(), "other": other.pid}.get(mark)
    if pid is not None:
        monkeypatch.setenv(FIRST_PROCESS, str(pid))
    before = signal.getsignal(signal.SIGINT)
    try:
        leave_ctrl_c_to_the_first_process()
        assert (signal.getsignal(signal.SIGINT) == signal.SIG_IGN) is ignored
    finally:
        signal.signal(signal.SIGINT, before)


def test_the_mark_is_there_only_while_the_first_process_fits(monkeypatch):
    monkeypatch.delenv(FIRST_PROCESS, raising=False)
    with first_process_marked():
        assert os.environ[FIRST_PROCESS] == str(os.getpid())
    assert FIRST_PROCESS not in os.environ  # (what it starts afterwards is not its DDP processes)
