"""The TTT core: one folder per op, the reference (``naive``) beside the fast path (``dual``)."""

from .dual import ttt_linear, ttt_mlp
from .state import TTTState

__all__ = ["TTTState", "ttt_linear", "ttt_mlp"]
