"""A scheduler's SIGTERM in a data-parallel fit: it reaches every process, each at its own moment, and
all of them must stop after the same step.

Lightning's own handler runs a collective inside the signal handler and passes the signal on to the
processes it started: a process that got it twice (from the scheduler and from the first process),
or once while the others were mid-step, waited forever in a collective the others never joined (3 of
4 runs of ``trainer=ddp`` on two CPU processes stopped by ``timeout``). Here the handler only notes
the signal; at the start of each training batch, and at the end of each validation, the processes
agree whether any of them noted it, and Lightning then ends the fit after that step (or validation)
in all of them at once, as it does in one process.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class TerminatedTogether(Callback):
    """Stops every process of a data-parallel fit after the same step when SIGTERM reaches any of them
    (a process alone keeps Lightning's handler). Validation batches ask nothing of the others (a rank may
    have fewer of them): a SIGTERM during a validation stops the fit at its end, and one during a test
    lets the test finish (the run is then done)."""

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
        self._agree(trainer)  # (Lightning ends the fit after this step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":  # (every process ends the validation; Lightning ends the fit there)
            self._agree(trainer)

    def _agree(self, trainer: L.Trainer) -> None:
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(self.noted, all=False):
            trainer._signal_connector.received_sigterm = True
