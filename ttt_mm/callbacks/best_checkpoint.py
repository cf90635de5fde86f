"""The best checkpoint by a validation metric: Lightning's ``ModelCheckpoint``, made to follow its run
folder when that folder was copied or moved, and to rank nothing after a validation that scored no
token (the module warns of it; Lightning ended the fit over the missing metric, or ranked the save by
an earlier validation's score), and to write each file whole (`save_whole`).

A resumed run continues in the folder of the checkpoint it resumes from. ``ModelCheckpoint`` records
its folder, and when the folder it is given differs from the one recorded, it drops the ranking
(scores, the top k) and keeps only the old ``best_model_path``. A run resumed from a copy of its folder
then named the original's best file, and its next validation was saved as best whatever its score,
since nothing was ranked. Where every ranked file is in the new folder under the same name, this
callback reads the ranking as the new folder's.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from ttt_mm.callbacks.saving import save_whole

PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose saved ranking follows the run folder to where it was copied or moved."""

    @property
    def state_key(self) -> str:
        # the key ModelCheckpoint saves under, so that checkpoints written before this class resume it
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(without_missing(followed(state_dict, self.dirpath), self.mode))

    def _save_topk_checkpoint(self, trainer, monitor_candidates: dict[str, Any]) -> None:
        # a validation whose windows held no scored token: nothing to rank it by (the metric is missing, or
        # still an earlier validation's: Lightning keeps the last value logged)
        unscored = tuple(f"{split}/" for split in getattr(trainer.lightning_module, "unscored", ()))
        if self.monitor is not None and self.monitor.startswith(unscored):
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(_SavingWhole(trainer), filepath)  # Lightning's bookkeeping, our write


class _SavingWhole:
    """The trainer, its checkpoints written whole (`save_whole`)."""

    def __init__(self, trainer) -> None:
        self._trainer = trainer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainer, name)

    def save_checkpoint(self, filepath: str, weights_only: bool = False) -> None:
        save_whole(self._trainer, filepath, weights_only)


def followed(state: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """``state`` with its folder's files named in ``dirpath``, where it was saved in another folder and
    each of its ranked files is in ``dirpath`` under the same name; otherwise ``state`` as it is."""
    old = state.get("dirpath")
    if not old or not dirpath or old == dirpath:
        return state
    paths = [p for p in (*(state.get(k) for k in PATH_KEYS), *state.get("best_k_models", {})) if p]

    def moved(path: str) -> str:
        return os.path.join(dirpath, os.path.basename(path))

    if not paths or any(os.path.dirname(p) != old or not os.path.isfile(moved(p)) for p in paths):
        return state
    return state | {
        "dirpath": dirpath,
        **{k: moved(state[k]) if state.get(k) else state.get(k) for k in PATH_KEYS if k in state},
        "best_k_models": {moved(p): score for p, score in state.get("best_k_models", {}).items()},
    }


def without_missing(state: dict[str, Any], mode: str) -> dict[str, Any]:
    """``state``'s ranking without the files that are gone, its best and k-th drawn from the rest. A
    run killed after a validation saved a new best (removing the one before) and before ``last.ckpt``
    recorded it resumes from a ranking that names the removed file: the summary then had no best, a
    test scored the last weights, and a worse file later ranked against the lost score."""
    ranked = state.get("best_k_models") or {}
    kept = {path: score for path, score in ranked.items() if os.path.isfile(path)}
    best = state.get("best_model_path")
    if len(kept) == len(ranked) and (not best or os.path.isfile(best)):
        return state
    order = sorted(kept, key=lambda path: float(kept[path]), reverse=mode == "max")  # (best first)
    worst = torch.tensor(math.inf if mode == "min" else -math.inf)
    return state | {
        "best_k_models": kept,
        "best_model_path": order[0] if order else "",
        "best_model_score": kept[order[0]] if order else None,
        "kth_best_model_path": order[-1] if order else "",
        "kth_value": kept[order[-1]] if order else worst,
    }
