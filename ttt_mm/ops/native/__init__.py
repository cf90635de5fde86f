"""Fused CPU loops for the elementwise chains inside the TTT scans, compiled on first use.

On a CPU the scans' sequential loops run a few dozen small kernels per mini-batch of 16 tokens, and
each PyTorch kernel is a dispatch plus a pass over memory: ``gelu_tanh`` and its slope are a dozen of
them, the inner loss's LayerNorm gradient three. Here each chain is one C loop over the values
(`ttt.c`, built by `build`), split across PyTorch's threads (``torch.get_num_threads()``; PyTorch
itself runs tensors this small on one). They apply to CPU float32/float64 tensors that autograd does
not track (inference, and the hand-written forward and backward of the scans), writing into given
outputs where the scans keep stacks; each function returns None where they do not apply or the
library is unavailable, and the caller runs its PyTorch ops. The LaCT layer's maps have theirs in
`lact` (`lact.c`), on the same terms.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import build

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _kernel(name: str, *tensors: Tensor):
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


def _blocks(x: Tensor) -> tuple[int, int, int] | None:
    """``(outer, inner, stride)``: ``x`` as blocks of contiguous values (all of it, or rows ``[:, :n]``
    of a contiguous ``[B, N, D]``), or None."""
    if x.is_contiguous():
        return 1, x.numel(), x.numel()
    if x.dim() == 3 and x.stride(2) == 1 and x.stride(1) == x.shape[2]:
        return x.shape[0], x.shape[1] * x.shape[2], x.stride(0)
    return None


def _outputs(like: Tensor, out, count: int, shapes=None) -> tuple[Tensor, ...] | None:
    """``out`` if given and each is contiguous, of ``like``'s dtype and of its shape (or ``shapes``), else new
    tensors; None where ``out`` does not fit."""
    shapes = shapes or [like.shape] * count
    if out is None:
        return tuple(like.new_empty(shape) for shape in shapes)
    fits = all(t.is_contiguous() and t.dtype == like.dtype and t.shape == shape for t, shape in zip(out, shapes))
    return tuple(out) if fits and len(out) == count else None


def _map(name: str, x: Tensor, count: int, slots: int, out=None) -> tuple[Tensor, ...] | None:
    """An elementwise kernel over ``x`` into ``count`` tensors shaped like it (``out`` or new ones; the kernel
    takes ``slots`` output pointers, those past ``count`` NULL); None where the kernels do not apply."""
    kernel, blocks = _kernel(name, x), _blocks(x)
    if kernel is None or blocks is None:
        return None
    outs = _outputs(x, out, count)
    if outs is None:
        return None
    kernel(x.data_ptr(), *blocks, *(t.data_ptr() for t in outs), *[None] * (slots - count), torch.get_num_threads())
    return outs


def gelu_tanh(x: Tensor, slope: bool = False, out=None) -> Tensor | tuple[Tensor, Tensor] | None:
    """``gelu_tanh(x)``, and with ``slope`` also its derivative (into ``out``, a tuple, if given); None where
    the kernels do not apply."""
    outs = _map("gelu_tanh", x, 2 if slope else 1, slots=2, out=out)
    return outs if outs is None or slope else outs[0]


def gelu_tanh_curvature(x: Tensor) -> Tensor | None:
    """The second derivative of ``gelu_tanh`` at ``x``; None where the kernels do not apply."""
    outs = _map("gelu_tanh_curvature", x, 1, slots=1)
    return None if outs is None else outs[0]


def ln_l2_grad(z: Tensor, weight_sq: Tensor, offset: Tensor, eps: float, record: bool = False, out=None):
    """`ttt_mm.ops.ln.ln_l2_grad` (with ``record``, `ln_l2_grad_recorded`'s ``g, (zhat, mean, rstd, dy)``,
    into ``out = (g, zhat, mean, rstd, dy)`` if given) for ``z, offset [G, R, F]`` and ``weight_sq [G, 1, F]``;
    None where the kernels do not apply."""
    kernel = _kernel("ln_l2_grad", z, weight_sq, offset)
    if kernel is None or not _rows(z, weight_sq, offset):
        return None
    row = (*z.shape[:2], 1)
    outs = _outputs(z, out, 5, [z.shape, z.shape, row, row, z.shape]) if record else _outputs(z, out, 1)
    if outs is None:
        return None
    g, *recorded = outs
    pointers = [t.data_ptr() for t in recorded] if record else [None] * 4
    threads = torch.get_num_threads()
    kernel(z.data_ptr(), weight_sq.data_ptr(), offset.data_ptr(), *z.shape, eps, g.data_ptr(), *pointers, threads)
    return (g, tuple(recorded)) if record else g


def ln_l2_grad_backward(s: Tensor, zhat: Tensor, g: Tensor, rstd: Tensor, a: Tensor, weight_sq: Tensor, out=None):
    """`ttt_mm.ops.ln.LnL2GradBackward`'s ``(dz, de)`` for rows ``[G, R, F]`` (``rstd``, ``a``: ``[G, R, 1]``),
    ``dz`` written into ``out`` if given (rows contiguous within each ``G``); None where the kernels do not apply."""
    kernel = _kernel("ln_l2_grad_backward", s, zhat, g, rstd, a, weight_sq)
    if kernel is None or not _rows(s, weight_sq, zhat, g) or not (rstd.is_contiguous() and a.is_contiguous()):
        return None
    if rstd.shape != (*s.shape[:2], 1) or a.shape != rstd.shape:
        return None
    if out is None:
        out = torch.empty_like(s)
    elif out.shape != s.shape or out.stride()[1:] != (s.shape[2], 1) or out.dtype != s.dtype:
        return None
    de = torch.empty_like(s)
    ptrs = (t.data_ptr() for t in (s, zhat, g, rstd, a, weight_sq))
    kernel(*ptrs, *s.shape, de.data_ptr(), out.data_ptr(), out.stride(0), torch.get_num_threads())
    return out, de


def _rows(x: Tensor, weight_sq: Tensor, *like: Tensor) -> bool:
    """Whether ``x`` and ``like`` are contiguous ``[G, R, F]`` and ``weight_sq`` a contiguous ``[G, 1, F]``."""
    if x.dim() != 3 or weight_sq.shape != (x.shape[0], 1, x.shape[2]):
        return False
    return all(t.shape == x.shape and t.is_contiguous() for t in (x, *like)) and weight_sq.is_contiguous()
