"""Sequence mixers and channel mixers, each a plain ``nn.Module`` with typed arguments."""

from .attention import AttentionLayer, KVCache
from .conv import CausalDepthwiseConv
from .lact import LaCTLayer, LaCTLayerState
from .mixer import Mixer, MixerFactory, RestartUnit
from .mlp import SwiGLU
from .ttt import TTTLayer, TTTLayerState

__all__ = [
    "AttentionLayer",
    "CausalDepthwiseConv",
    "KVCache",
    "LaCTLayer",
    "LaCTLayerState",
    "Mixer",
    "MixerFactory",
    "RestartUnit",
    "SwiGLU",
    "TTTLayer",
    "TTTLayerState",
]
