"""Embeddings from a trained checkpoint (read by `ttt_mm.checkpoint`): the streaming `Embedder`, the row
clock, running reducers, ``.npy`` + ``.json`` files and the HEAR interface (`ttt_mm.embed.hear`)."""

from ttt_mm.checkpoint import load_parts
from ttt_mm.embed.clock import MIXED, Clock
from ttt_mm.embed.embedder import DEFAULT_WINDOW_TOKENS, EMBEDDING_OPTIONS, Embedder, Embeddings, Stream
from ttt_mm.embed.reducers import POOLS

__all__ = [
    "DEFAULT_WINDOW_TOKENS",
    "EMBEDDING_OPTIONS",
    "MIXED",
    "POOLS",
    "Clock",
    "Embedder",
    "Embeddings",
    "Stream",
    "load_parts",
]
