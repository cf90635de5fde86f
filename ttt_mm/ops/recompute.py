"""Recompute in the backward what a cheap op gave, instead of keeping it from the forward.

Inside `recomputed`, every tensor that autograd saves for the backward and that lives in the
storage of ``output`` is saved as its place in that storage; the first backward to need one
runs ``recompute`` (which must rebuild ``output``'s storage exactly, e.g. the same op on the same
inputs) and reads every such tensor from there. The rebuilt storage is freed with the last of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


class _Place:
    """Where a saved tensor lies in the storage that `_Rebuilt` rebuilds."""

    def __init__(self, rebuilt: _Rebuilt, t: Tensor):
        self.rebuilt, self.size, self.stride, self.offset = rebuilt, t.shape, t.stride(), t.storage_offset()


class _Rebuilt:
    def __init__(self, recompute: Callable[[], Tensor], nbytes: int):
        self.recompute, self.nbytes, self.tensor = recompute, nbytes, None

    def get(self) -> Tensor:
        if self.tensor is None:
            with torch.no_grad():
                self.tensor = self.recompute()
            if self.tensor.untyped_storage().nbytes() != self.nbytes:
                raise RuntimeError("recompute did not rebuild the storage it stands for")
        return self.tensor


@contextmanager
def recomputed(output: Tensor, recompute: Callable[[], Tensor]) -> Iterator[None]:
    """Save tensors in ``output``'s storage as places in it, rebuilt by ``recompute()`` when needed."""
    storage = output.untyped_storage()
    ptr, rebuilt = storage.data_ptr(), _Rebuilt(recompute, storage.nbytes())

    def pack(t: Tensor):
        # Any other tensor is kept as it is, detached: an op's output kept with its autograd node would
        # hold that node, which holds it, and the cycle would keep the whole graph after the backward.
        return _Place(rebuilt, t) if t.untyped_storage().data_ptr() == ptr else t.detach()

    def unpack(saved):
        if not isinstance(saved, _Place):
            return saved
        return saved.rebuilt.get().as_strided(saved.size, saved.stride, saved.offset)

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield
