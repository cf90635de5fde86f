"""Pure functions: no ``nn.Module``, no config. ``ttt_linear``, ``ttt_mlp`` and ``lact_swiglu`` are the fast paths.

Under ``torch.compile`` the sequence ops (the two cores, LaCT's window attention and fused features)
run as they are (`eager.eager_under_compile`) and the code around them is compiled: they are
hand-written kernels (C loops on the CPU, Triton on GPUs) driven by Python loops whose trip counts
depend on the length and the state, which tracing would specialise into a graph per call.
"""

from .lact import LaCTState, lact_swiglu
from .ttt import TTTState, ttt_linear, ttt_mlp

__all__ = ["LaCTState", "TTTState", "lact_swiglu", "ttt_linear", "ttt_mlp"]
