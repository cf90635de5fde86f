"""The LaCT core: the reference (``naive``) beside the fast chunked path (``chunk``)."""

from .chunk import lact_swiglu
from .state import LaCTState

__all__ = ["LaCTState", "lact_swiglu"]
