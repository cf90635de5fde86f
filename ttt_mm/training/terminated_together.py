"""A scheduler's SIGTERM in a data-parallel fit: it reaches every process, each at its own moment, and
all of them must stop after the same step.

Lightning's own handler runs a collective inside the signal handler and passes the signal on to the
processes it started: a process that got it twice (from the scheduler and from the first process),
or once while the others were mid-step, waited forever in a collective the others never joined (3 of
4 runs of ``trainer=ddp`` on two CPU processes stopped by ``timeout``). Here the handler only notes
the signal; at the start of each training batch the processes agree whether any of them noted it,
and Lightning then ends the fit after that step in all of them at once, as it does in one process.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class TerminatedTogether(Callback):
    """Stops every process of a data-parallel fit after the same step when SIGTERM reaches any of them
    (a process alone keeps Lightning's handler). Validation and test ask nothing of the others (a rank
    may have fewer of their batches): a SIGTERM during a validation stops the fit after the next training
    step, and one during the test after the fit lets the test finish."""

    def __init__(self) -> None:
        self.noted = False
        self.rank = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:  # (Lightning sets its signal handlers after this hook, from this function)
            self.rank = trainer.global_rank
            trainer._signal_connector._sigterm_notifier_fn = self.note

    def note(self, signum: int, _frame: Any) -> None:
        log.info("[rank: %d] Received SIGTERM: %d (all processes stop after one step)", self.rank, signum)
        self.noted = True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(self.noted, all=False):
            trainer._signal_connector.received_sigterm = True  # (Lightning ends the fit after this step)
