"""Checkpoints written whole: through a temporary name beside the final one, renamed into place.

Lightning's own save renames from ``$TMPDIR``, which is a copy, not a rename, when that is another
filesystem (a tmpfs ``/tmp``, node-local scratch): an interrupted save would leave a truncated file
under a name that resuming or evaluating trusts. The trainer's `MappedCheckpointIO` writes beside the
file itself, inside the save; with any other, this renames after it, and holds the other processes
until the file has its name.
"""

from __future__ import annotations

import os

import lightning as L

from ttt_mm.storage.atomic import replaced
from ttt_mm.training.checkpoint_io import MappedCheckpointIO


def save_whole(trainer: L.Trainer, path: str | os.PathLike, weights_only: bool = False) -> None:
    """``trainer.save_checkpoint(path)``, written whole by the process that writes it."""
    if isinstance(trainer.strategy.checkpoint_io, MappedCheckpointIO):  # (renamed before the save's own barrier)
        trainer.save_checkpoint(path, weights_only=weights_only)
        return
    if trainer.is_global_zero:
        with replaced(path) as partial:
            trainer.save_checkpoint(partial, weights_only=weights_only)
    else:  # every process takes part in gathering the state; only the first writes it
        trainer.save_checkpoint(path, weights_only=weights_only)
    trainer.strategy.barrier("save_whole")  # (the save's own barrier came before the rename)
