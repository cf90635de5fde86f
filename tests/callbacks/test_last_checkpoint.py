"""`LastCheckpoint`: written whole beside its final name, and never in the middle of accumulated batches."""

from pathlib import Path
from types import SimpleNamespace

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from ttt_mm.callbacks import LastCheckpoint
from ttt_mm.training.checkpoint_io import MappedCheckpointIO


class Trainer:
    """What the callback reads of a Lightning trainer; each save writes the step it was made at."""

    def __init__(self):
        self.global_step, self.written = 0, []
        self.fast_dev_run = self.sanity_checking = False
        self.is_global_zero = True
        self.state = SimpleNamespace(fn=TrainerFn.FITTING)
        self.strategy = SimpleNamespace(checkpoint_io=TorchCheckpointIO(), barrier=self.barrier)
        self.passed: list[list[str]] = []  # the folder's files at each barrier

    def save_checkpoint(self, path, weights_only=False):
        if isinstance(self.strategy.checkpoint_io, MappedCheckpointIO):
            self.strategy.checkpoint_io.save_checkpoint({"step": self.global_step}, path)
        else:
            Path(path).write_text(str(self.global_step))
        self.written.append(Path(path))

    def barrier(self, name=None):
        self.passed.append(sorted(p.name for p in self.written[-1].parent.iterdir()))


def test_the_checkpoint_is_written_beside_its_final_name_and_renamed_into_place(tmp_path):
    trainer, cb = Trainer(), LastCheckpoint(tmp_path, every_n_train_steps=1)
    cb.on_train_start(trainer, None)
    trainer.global_step = 1
    cb.on_train_batch_end(trainer, None, None, None, 0)
    (partial,) = trainer.written
    assert partial.parent == tmp_path and partial.name != "last.ckpt"  # same folder: a rename, never a copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"] and cb.last_model_path == str(
        tmp_path / "last.ckpt"
    )
    assert trainer.passed == [["last.ckpt"]]  # (the other processes went on before the rename)


def test_a_checkpoint_io_that_writes_whole_itself_is_not_renamed_twice(tmp_path):
    """The trainer's `MappedCheckpointIO` renames into place inside the save: a second rename after it came
    once the save's barrier had let the other processes go on, with the file not yet under its name."""
    trainer, cb = Trainer(), LastCheckpoint(tmp_path, every_n_train_steps=1)
    trainer.strategy.checkpoint_io = MappedCheckpointIO()
    cb.on_train_start(trainer, None)
    trainer.global_step = 1
    cb.on_train_batch_end(trainer, None, None, None, 0)
    assert trainer.written == [tmp_path / "last.ckpt"] and torch.load(tmp_path / "last.ckpt") == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_validation_inside_an_accumulation_group_is_saved_after_the_groups_step(tmp_path):
    trainer, cb = Trainer(), LastCheckpoint(tmp_path, every_n_train_steps=100)
    cb.on_train_start(trainer, None)
    for batch, step in enumerate(
        [0, 1, 1]
    ):  # two batches per step: batch 0 accumulates, batch 1 steps, batch 2 accumulates
        trainer.global_step = step
        cb.on_train_batch_end(trainer, None, None, None, batch)
    cb.on_validation_end(trainer, None)  # after batch 2: its gradients are not in any checkpoint
    assert trainer.written == []
    trainer.global_step = 2
    cb.on_train_batch_end(trainer, None, None, None, 3)  # the group's step: now the save
    assert len(trainer.written) == 1 and (tmp_path / "last.ckpt").read_text() == "2"
    cb.on_validation_end(trainer, None)  # a validation right after a step saves at once
    assert len(trainer.written) == 2
