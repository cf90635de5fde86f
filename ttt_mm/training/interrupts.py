"""Ctrl-C in a data-parallel run: a terminal sends it to every process, and only the first should act.

Lightning starts DDP's other processes by running the training command again. A Ctrl-C while they
were importing printed a long traceback from each, and the first process, waiting for them to join,
was killed by Lightning's watchdog (exit status 137, no resume line). With the others ignoring it,
they join, and the first process's shutdown (Lightning's) stops them and says where to resume, as in
any other part of the run.
"""

from __future__ import annotations

import os
import signal


def is_other_process() -> bool:
    """Whether this is one of a data-parallel run's processes other than a machine's first: what
    Lightning's DDP launcher, torchrun and SLURM set (``LOCAL_RANK``, ``SLURM_LOCALID``) above 0."""
    return any(os.environ.get(key, "0") not in ("", "0") for key in ("LOCAL_RANK", "SLURM_LOCALID"))


def leave_ctrl_c_to_the_first_process() -> None:
    """Ignores Ctrl-C (SIGINT) in `is_other_process`; SIGTERM still ends each process (exit 143)."""
    if is_other_process():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
