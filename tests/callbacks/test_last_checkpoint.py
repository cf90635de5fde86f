"""`LastCheckpoint`: written whole beside its final name, and never in the middle of accumulated batches."""

from pathlib import Path
from types import SimpleNamespace

from lightning.pytorch.trainer.states import TrainerFn

from ttt_mm.callbacks import LastCheckpoint


class Trainer:
    """What the callback reads of a Lightning trainer; each save writes the step it was made at."""

    def __init__(self):
        self.global_step, self.written = 0, []
        self.fast_dev_run = self.sanity_checking = False
        self.is_global_zero = True
        self.state = SimpleNamespace(fn=TrainerFn.FITTING)

    def save_checkpoint(self, path, weights_only=False):
        Path(path).write_text(str(self.global_step))
        self.written.append(Path(path))


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
