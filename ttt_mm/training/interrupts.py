"""Ctrl-C in a data-parallel run that Lightning starts itself (``trainer=ddp`` on one machine): a
terminal sends it to every process, and only the first should act.

Lightning starts DDP's other processes by running the training command again. A Ctrl-C while they
were importing printed a long traceback from each, and the first process, waiting for them to join,
was killed by Lightning's watchdog (exit status 137, no resume line). With the others ignoring it,
they join, and the first process's shutdown (Lightning's) stops them and says where to resume, as in
any other part of the run. Processes that torchrun or SLURM start are left alone: no process of the
run would stop them (their launcher stops them on its own).

Lightning's shutdown covers Ctrl-C inside ``fit`` and ``test``; between the two, the first process
stops them itself (`others_stopped_on_ctrl_c`): they would wait for it in ``test`` until the
collective timeout.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ttt_mm.processes.environment import environment

if TYPE_CHECKING:  # (train.py imports this module before the slow imports)
    import lightning as L

FIRST_PROCESS = "TTT_MM_FIRST_PROCESS"
"""The first process's id, in the environment of the processes it starts while it fits."""


def leave_ctrl_c_to_the_first_process() -> None:
    """Ignores Ctrl-C (SIGINT) in a process that the run's first process started (`first_process_marked`);
    SIGTERM still ends each process (exit 143)."""
    if os.environ.get(FIRST_PROCESS) == str(os.getppid()):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def first_process_marked() -> Iterator[None]:
    """Marks this process, for the processes it starts meanwhile (Lightning's DDP launcher starts them
    in ``fit``), as the one that answers Ctrl-C."""
    with environment({FIRST_PROCESS: str(os.getpid())}):
        yield


@contextmanager
def others_stopped_on_ctrl_c(trainer: L.Trainer) -> Iterator[None]:
    """Stops the processes Lightning's launcher started when Ctrl-C reaches this process outside
    ``fit`` and ``test`` (inside them Lightning does, as here), then lets it go on up."""
    try:
        yield
    except KeyboardInterrupt:
        launcher = trainer.strategy.launcher
        if launcher is not None:  # (under torchrun it started none: nothing to stop)
            launcher.kill(signal.SIGKILL)
        raise
