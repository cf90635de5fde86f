"""Fused CPU loops for the elementwise chains inside the TTT scans and the LaCT layer, compiled on first use.

On a CPU the scans' sequential loops run a few dozen small kernels per mini-batch of 16 tokens, and
each PyTorch kernel is a dispatch plus a pass over memory: ``gelu_tanh`` and its slope are a dozen of
them, the inner loss's LayerNorm gradient three. Here each chain is one C loop over the values
(`ttt.c`, built by `build`), split across PyTorch's threads (``torch.get_num_threads()``; PyTorch
itself runs tensors this small on one). They apply to CPU float32/float64 tensors that autograd does
not track (inference, and the hand-written forward and backward of the scans), writing into given
outputs where the scans keep stacks; each function returns None where they do not apply or the
library is unavailable, and the caller runs its PyTorch ops. The TTT loops are in `ttt` (`ttt.c`),
the LaCT layer's in `lact` (`lact.c`); this module holds what both call them through.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import build

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def kernel(name: str, *tensors: Tensor):
    """The kernel for the tensors' dtype, or None: not all on the CPU in one float dtype, or tracked by autograd."""
    x = tensors[0]
    if not x.is_cpu or x.dtype not in _SUFFIX:
        return None
    if any(not t.is_cpu or t.dtype != x.dtype for t in tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    lib = build.library()
    return None if lib is None else getattr(lib, f"{name}_{_SUFFIX[x.dtype]}")


def blocks(x: Tensor) -> tuple[int, int, int] | None:
    """``(outer, inner, stride)``: ``x`` as blocks of contiguous values (all of it, or rows ``[:, :n]``
    of a contiguous ``[B, N, D]``), or None."""
    if x.is_contiguous():
        return 1, x.numel(), x.numel()
    if x.dim() == 3 and x.stride(2) == 1 and x.stride(1) == x.shape[2]:
        return x.shape[0], x.shape[1] * x.shape[2], x.stride(0)
    return None


def outputs(like: Tensor, out, count: int, shapes=None) -> tuple[Tensor, ...] | None:
    """``out`` if given and each is contiguous, of ``like``'s dtype and of its shape (or ``shapes``), else new
    tensors; None where ``out`` does not fit."""
    shapes = shapes or [like.shape] * count
    if out is None:
        return tuple(like.new_empty(shape) for shape in shapes)
    fits = all(t.is_contiguous() and t.dtype == like.dtype and t.shape == shape for t, shape in zip(out, shapes))
    return tuple(out) if fits and len(out) == count else None


def elementwise(name: str, x: Tensor, count: int, slots: int, out=None) -> tuple[Tensor, ...] | None:
    """An elementwise kernel over ``x`` into ``count`` tensors shaped like it (``out`` or new ones; the kernel
    takes ``slots`` output pointers, those past ``count`` NULL); None where the kernels do not apply."""
    fn, parts = kernel(name, x), blocks(x)
    if fn is None or parts is None:
        return None
    outs = outputs(x, out, count)
    if outs is None:
        return None
    fn(x.data_ptr(), *parts, *(t.data_ptr() for t in outs), *[None] * (slots - count), torch.get_num_threads())
    return outs
