"""Each job's log file and the console: what goes to the file only, Lightning's loggers joined to
it, Lightning's notices that say nothing about a run left out, and a module's logger by its import
name."""

from __future__ import annotations

import logging
import warnings


def module_logger(name: str, spec) -> logging.Logger:
    """A module's logger under its import name (``ttt_mm.tasks.embed``), also when it runs as
    ``python -m``, where ``__name__`` is ``__main__``: call with ``__name__, __spec__``."""
    return logging.getLogger(spec.name if spec is not None else name)


def log_files() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def lightning_logs_to_file() -> None:
    """Lightning's loggers print to the console on their own (they do not propagate to the root
    logger, whose handlers Hydra sets up per job): give them this job's log file too."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(handler)  # an earlier sweep job's file
        if not logger.propagate:  # (a propagating one reaches the file through the root already)
            for handler in log_files():
                logger.addHandler(handler)


LIGHTNING_NOTICES = (
    # what a Lightning release prints with PyTorch's newer pytree API: about Lightning's own code
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # by design: the module attaches each batch's place in the stream before it is moved to the device
    r"You have overridden `on_before_batch_transfer` in `LightningModule` but have passed in a `LightningDataModule`",
)


RESUMED_NOTICE = r"Checkpoint directory .* exists and is not empty"
"""What every resumed run would print: it goes on in its own run folder, whose checkpoints are its own."""


class _DropsTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")  # (Lightning's advertisement for its cloud logger)


def quiet_lightning(resuming: bool) -> None:
    """Leaves out Lightning's notices that say nothing about this run (each run printed them all)."""
    for message in LIGHTNING_NOTICES + ((RESUMED_NOTICE,) if resuming else ()):
        warnings.filterwarnings("ignore", message=message)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropsTips) for f in logger.filters):
        logger.addFilter(_DropsTips())


def to_log_file(text: str, level: int = logging.INFO) -> None:
    """Write ``text`` to the job's log file only (what the command also prints, such as its summary)."""
    record = logging.LogRecord("ttt_mm", level, __file__, 0, text, None, None)
    for handler in log_files():
        handler.handle(record)
