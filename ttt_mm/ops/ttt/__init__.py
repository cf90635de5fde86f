"""The TTT core: one folder per op, the reference (``naive``) beside the fast paths (``dual`` with its
hand-written ``backward``, and the Triton kernels in ``fused``), driven by ``core``."""

from .core import ttt_linear, ttt_mlp
from .state import TTTState

__all__ = ["TTTState", "ttt_linear", "ttt_mlp"]
