"""Lightning callbacks the training configs add (``conf/callbacks``)."""

from .throughput import Throughput

__all__ = ["Throughput"]
