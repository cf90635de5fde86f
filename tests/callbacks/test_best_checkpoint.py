"""`BestCheckpoint`: its ranking follows a copied or moved run folder, and only a whole one."""

from pathlib import Path
from types import SimpleNamespace

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ttt_mm.callbacks import BestCheckpoint
from ttt_mm.callbacks.best_checkpoint import followed


def saved_state(folder, names=("step000010.ckpt", "step000020.ckpt")) -> dict:
    paths = [str(folder / n) for n in names]
    return {
        "monitor": "val/loss",
        "best_model_score": 0.5,
        "best_model_path": paths[0],
        "dirpath": str(folder),
        "best_k_models": dict(zip(paths, (0.5, 0.7), strict=True)),
        "kth_best_model_path": paths[-1],
        "kth_value": 0.7,
        "last_model_path": "",
    }


def test_a_copied_folder_keeps_its_ranking_under_the_new_folder(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    new.mkdir()
    for name in ("step000010.ckpt", "step000020.ckpt"):
        (new / name).write_text("")
    cb = BestCheckpoint(dirpath=new, monitor="val/loss", save_top_k=2)
    cb.load_state_dict(saved_state(old))
    assert cb.best_model_path == str(new / "step000010.ckpt") and cb.best_model_score == 0.5
    assert cb.best_k_models == {str(new / "step000010.ckpt"): 0.5, str(new / "step000020.ckpt"): 0.7}
    assert cb.kth_best_model_path == str(new / "step000020.ckpt") and cb.last_model_path == ""


def test_a_folder_that_lacks_a_ranked_file_is_not_taken_for_a_copy(tmp_path):
    """(A resume into another run's folder, or a copy made without every checkpoint.)"""
    old, new = tmp_path / "old", tmp_path / "new"
    new.mkdir()
    (new / "step000010.ckpt").write_text("")
    state = saved_state(old)
    assert followed(state, str(new)) is state
    assert followed(state, str(old)) is state
    cb = BestCheckpoint(dirpath=new, monitor="val/loss")
    cb.load_state_dict(state)  # as ModelCheckpoint does: only the best path is kept, where it is there
    assert cb.best_model_path == "" and cb.best_k_models == {}
    old.mkdir()
    (old / "step000010.ckpt").write_text("")
    cb.load_state_dict(state)
    assert cb.best_model_path == state["best_model_path"] and cb.best_k_models == {}


def test_a_ranked_file_that_is_gone_leaves_the_ranking_drawn_from_the_rest(tmp_path):
    """Killed after a validation saved a new best (removing the one before) and before last.ckpt said so,
    the run resumed naming the removed best: no best in its summary, a test of its last weights, and a
    worse file later ranked against the lost score."""
    (tmp_path / "step000020.ckpt").write_text("")  # (step000010.ckpt, the best, was removed)
    for mode, top in (("min", 2), ("max", 2), ("min", 1)):
        cb = BestCheckpoint(dirpath=tmp_path, monitor="val/loss", mode=mode, save_top_k=top)
        cb.load_state_dict(saved_state(tmp_path))
        kept = str(tmp_path / "step000020.ckpt")
        assert (cb.best_model_path, cb.best_model_score, cb.kth_best_model_path) == (kept, 0.7, kept)
        assert cb.best_k_models == {kept: 0.7} and cb.kth_value == 0.7
    (tmp_path / "step000020.ckpt").unlink()
    cb = BestCheckpoint(dirpath=tmp_path, monitor="val/loss", mode="min")
    cb.load_state_dict(saved_state(tmp_path))  # (none left: the next validation is the best so far)
    assert (cb.best_model_path, cb.best_model_score, cb.best_k_models) == ("", None, {})
    assert cb.kth_value.item() == float("inf") and cb.check_monitor_top_k(None, torch.tensor(9.0))


def test_its_state_is_saved_under_model_checkpoints_key():
    """Checkpoints written while the config named ModelCheckpoint resume this callback's ranking."""
    args = {"monitor": "val/loss", "mode": "min", "dirpath": "x"}
    assert BestCheckpoint(**args).state_key == ModelCheckpoint(**args).state_key


def test_a_best_checkpoint_is_written_beside_its_final_name_and_renamed_into_place(tmp_path):
    written = []

    class Trainer:
        is_global_zero, global_step, loggers = True, 7, []
        strategy = SimpleNamespace(checkpoint_io=TorchCheckpointIO(), barrier=lambda name=None: None)

        def save_checkpoint(self, path, weights_only=False):
            Path(path).write_text("state")
            written.append(Path(path))

    cb = BestCheckpoint(dirpath=tmp_path, monitor="val/loss")
    cb._save_checkpoint(Trainer(), str(tmp_path / "step000007.ckpt"))
    (partial,) = written
    assert partial.parent == tmp_path and partial.name != "step000007.ckpt"  # same folder: a rename, never a copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step000007.ckpt"]
    assert cb._last_global_step_saved == 7  # Lightning's bookkeeping still done
