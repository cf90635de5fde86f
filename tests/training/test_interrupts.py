"""Which processes of a data-parallel run leave Ctrl-C to the first (the end-to-end run is a slow
test in ``tests/test_train.py``)."""

from __future__ import annotations

import signal

import pytest

from ttt_mm.training.interrupts import is_other_process, leave_ctrl_c_to_the_first_process


@pytest.mark.parametrize(
    ("env", "other"),
    [
        ({}, False),  # a plain run, or the process that starts Lightning's others
        ({"LOCAL_RANK": "0"}, False),
        ({"LOCAL_RANK": "1"}, True),  # Lightning's launcher, torchrun
        ({"SLURM_LOCALID": "3"}, True),
        ({"SLURM_LOCALID": "0", "LOCAL_RANK": ""}, False),
    ],
)
def test_the_other_processes_are_told_by_their_local_rank(monkeypatch, env, other):
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = signal.getsignal(signal.SIGINT)
    try:
        leave_ctrl_c_to_the_first_process()
        assert is_other_process() is other
        assert (signal.getsignal(signal.SIGINT) == signal.SIG_IGN) is other
    finally:
        signal.signal(signal.SIGINT, before)
