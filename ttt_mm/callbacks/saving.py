"""Checkpoints written whole: through a temporary name beside the final one, renamed into place.

Lightning's own save renames from ``$TMPDIR``, which is a copy, not a rename, when that is another
filesystem (a tmpfs ``/tmp``, node-local scratch): an interrupted save would leave a truncated file
under a name that resuming or evaluating trusts. (The trainer's `MappedCheckpointIO` writes beside the
file too; this keeps saves whole with any other.)
"""

from __future__ import annotations

import os

import lightning as L

from ttt_mm.storage.atomic import replaced


def save_whole(trainer: L.Trainer, path: str | os.PathLike, weights_only: bool = False) -> None:
    """``trainer.save_checkpoint(path)``, written whole by the process that writes it."""
    if trainer.is_global_zero:
        with replaced(path) as partial:
            trainer.save_checkpoint(partial, weights_only=weights_only)
    else:  # every process takes part in gathering the state; only the first writes it
        trainer.save_checkpoint(path, weights_only=weights_only)
