"""Lightning callbacks the training configs add (``conf/callbacks``)."""

from .last_checkpoint import LastCheckpoint
from .throughput import Throughput

__all__ = ["LastCheckpoint", "Throughput"]
