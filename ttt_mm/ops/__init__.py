"""Pure functions: no ``nn.Module``, no config. ``ttt_linear``, ``ttt_mlp`` and ``lact_swiglu`` are the fast paths."""

from .lact import LaCTState, lact_swiglu
from .ttt import TTTState, ttt_linear, ttt_mlp

__all__ = ["LaCTState", "TTTState", "lact_swiglu", "ttt_linear", "ttt_mlp"]
