"""Pure functions: no ``nn.Module``, no config. ``ttt_linear`` and ``ttt_mlp`` are the fast paths."""

from .ttt import TTTState, ttt_linear, ttt_mlp

__all__ = ["TTTState", "ttt_linear", "ttt_mlp"]
