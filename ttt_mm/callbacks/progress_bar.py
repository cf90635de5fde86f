"""Lightning's progress bar, with a total that fits a run counted in steps.

Training draws windows without end, so a run's length is ``trainer.max_steps``. Lightning's bar
counts batches but takes its total from the steps left, so with ``accumulate_grad_batches`` it ran
past its total, and a resumed run, whose epoch counts on from the checkpoint's batches, showed
``350/?``. Here the total is in batches, and a resumed epoch's bar starts where it stood. A run
stopped by Ctrl-C or SIGTERM closes its bars at once, so that its summary is the last thing printed.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` whose training bar reads ``batches done / batches in the run``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._left: int | None = None  # batches this run trains, where it is counted in steps
        self._placed = False  # the bar has been set to where this run's batches start

    def _in_steps(self) -> bool:
        trainer = self.trainer
        return not math.isfinite(trainer.num_training_batches) and trainer.max_epochs == -1 and trainer.max_steps > 0

    @property
    def total_train_batches(self) -> int | float:
        """The batches left in this run: its steps left times the batches of a step (Lightning: the steps)."""
        trainer = self.trainer
        if self._in_steps():
            return (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
        return super().total_train_batches

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._left = self.total_train_batches if self._in_steps() else None
        self._placed = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if not self._placed and bar is not None:
            # A resumed run's first batch is not its epoch's first: Lightning counts on from the checkpoint's
            # batches (and starts no new epoch, nor sets a total, when the checkpoint fell inside one).
            self._placed = True
            if self._left is not None:
                bar.total = batch_idx + self._left
            bar.initial = bar.n = bar.last_print_n = batch_idx  # (the rate counts this run's batches only)
            bar.set_description(f"Epoch {trainer.current_epoch}")
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A stopped run's bars are closed now: closed at exit, they were drawn again after the run's summary."""
        for name in ("_train_progress_bar", "_val_progress_bar", "_test_progress_bar"):  # (None until shown)
            if (bar := getattr(self, name, None)) is not None:
                bar.close()
