"""Lightning callbacks the training configs add (``conf/callbacks``)."""

from .best_checkpoint import BestCheckpoint
from .last_checkpoint import LastCheckpoint
from .progress_bar import ProgressBar
from .throughput import Throughput

__all__ = ["BestCheckpoint", "LastCheckpoint", "ProgressBar", "Throughput"]
