"""``last.ckpt``, what ``ckpt_path=`` resumes from: saved every ``every_n_train_steps`` optimizer steps
and after every validation.

Lightning's ``ModelCheckpoint(save_last=True, every_n_train_steps=n)`` saves before a validation that
falls on the same step, so ``last.ckpt`` would carry the best-checkpoint callback's bookkeeping from
before that validation: a resumed run would then name a best checkpoint that no longer exists. This
callback is a `Checkpoint`, so Lightning runs it after the best-checkpoint callback, and it saves
again once a validation has run.
"""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn


class LastCheckpoint(Checkpoint):
    """Writes ``<dirpath>/last.ckpt`` every ``every_n_train_steps`` steps, after every validation and at
    the end of training (Lightning writes it whole: a temporary file, then a rename)."""

    def __init__(self, dirpath: str | os.PathLike, every_n_train_steps: int = 50) -> None:
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1; got {every_n_train_steps}")
        self.path = os.path.join(os.fspath(dirpath), "last.ckpt")
        self.every_n_train_steps = every_n_train_steps
        self._saved_step: int | None = None

    @property
    def last_model_path(self) -> str:
        """Where the last checkpoint is (an empty string until one is written), as ``ModelCheckpoint`` says it."""
        return self.path if self._saved_step is not None else ""

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole training state
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_train_steps == 0 and step != self._saved_step:
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._save(trainer)  # even at a step saved just before: the best checkpoint may have changed

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._saved_step:
            self._save(trainer)
