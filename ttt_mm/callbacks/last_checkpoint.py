"""``last.ckpt``, what ``ckpt_path=`` resumes from: saved every ``every_n_train_steps`` optimizer steps
and after every validation.

Lightning's ``ModelCheckpoint(save_last=True, every_n_train_steps=n)`` saves before a validation that
falls on the same step, so ``last.ckpt`` would carry the best-checkpoint callback's bookkeeping from
before that validation: a resumed run would then name a best checkpoint that no longer exists. This
callback is a `Checkpoint`, so Lightning runs it after the best-checkpoint callback, and it saves
again once a validation has run; a validation that falls inside a group of accumulated batches is
followed by a save once that group's optimizer step is taken (a checkpoint mid-group would lose the
group's gradients and resume one batch off).

It is written whole (`save_whole`): an interrupted save must not truncate the only resume point.
"""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn

from ttt_mm.callbacks.saving import save_whole

FILE_NAME = "last.ckpt"


class LastCheckpoint(Checkpoint):
    """Writes ``<dirpath>/last.ckpt`` whole every ``every_n_train_steps`` steps, after every validation
    and at the end of training."""

    def __init__(self, dirpath: str | os.PathLike, every_n_train_steps: int = 50) -> None:
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1; got {every_n_train_steps}")
        self.path = os.path.join(os.fspath(dirpath), FILE_NAME)
        self.every_n_train_steps = every_n_train_steps
        self._saved_step: int | None = None
        self._step_seen: int | None = None  # global_step at the last batch end
        self._mid_group = False  # that batch took no optimizer step: gradients are accumulating
        self._pending = False  # a validation ended mid-group: save once the group's step is taken

    @property
    def last_model_path(self) -> str:
        """Where the last checkpoint is (an empty string until one is written), as ``ModelCheckpoint`` says it."""
        return self.path if self._saved_step is not None else ""

    @property
    def saved_step(self) -> int | None:
        """The optimizer step the last checkpoint was written at (None until one is written)."""
        return self._saved_step

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        save_whole(trainer, self.path)  # the whole training state
        self._saved_step, self._pending = trainer.global_step, False

    def on_train_start(self, trainer, pl_module) -> None:
        self._step_seen = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        self._mid_group, self._step_seen = step == self._step_seen, step
        if self._mid_group:
            return
        if self._pending or (step % self.every_n_train_steps == 0 and step != self._saved_step):
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._mid_group:
            self._pending = True
        else:
            self._save(trainer)  # even at a step saved just before: the best checkpoint may have changed

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._saved_step:
            self._save(trainer)
