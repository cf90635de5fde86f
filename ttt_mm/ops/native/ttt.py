"""Fused CPU loops for the TTT scans, in `ttt.c`: ``gelu_tanh`` with its slope and curvature (the
TTT-MLP inner model), and the inner loss's LayerNorm gradient and its backward (`ttt_mm.ops.ln`).
Terms as in `ttt_mm.ops.native`: None where they do not apply, and the caller runs its PyTorch ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import elementwise, kernel, outputs


def gelu_tanh(x: Tensor, slope: bool = False, out=None) -> Tensor | tuple[Tensor, Tensor] | None:
    """``gelu_tanh(x)``, and with ``slope`` also its derivative (into ``out``, a tuple, if given); None where
    the kernels do not apply."""
    outs = elementwise("gelu_tanh", x, 2 if slope else 1, slots=2, out=out)
    return outs if outs is None or slope else outs[0]


def gelu_tanh_curvature(x: Tensor) -> Tensor | None:
    """The second derivative of ``gelu_tanh`` at ``x``; None where the kernels do not apply."""
    outs = elementwise("gelu_tanh_curvature", x, 1, slots=1)
    return None if outs is None else outs[0]


def ln_l2_grad(z: Tensor, weight_sq: Tensor, offset: Tensor, eps: float, record: bool = False, out=None):
    """`ttt_mm.ops.ln.ln_l2_grad` (with ``record``, `ln_l2_grad_recorded`'s ``g, (zhat, mean, rstd, dy)``,
    into ``out = (g, zhat, mean, rstd, dy)`` if given) for ``z, offset [G, R, F]`` and ``weight_sq [G, 1, F]``;
    None where the kernels do not apply."""
    fn = kernel("ln_l2_grad", z, weight_sq, offset)
    if fn is None or not _rows(z, weight_sq, offset):
        return None
    row = (*z.shape[:2], 1)
    outs = outputs(z, out, 5, [z.shape, z.shape, row, row, z.shape]) if record else outputs(z, out, 1)
    if outs is None:
        return None
    g, *recorded = outs
    pointers = [t.data_ptr() for t in recorded] if record else [None] * 4
    threads = torch.get_num_threads()
    fn(z.data_ptr(), weight_sq.data_ptr(), offset.data_ptr(), *z.shape, eps, g.data_ptr(), *pointers, threads)
    return (g, tuple(recorded)) if record else g


def ln_l2_grad_backward(s: Tensor, zhat: Tensor, g: Tensor, rstd: Tensor, a: Tensor, weight_sq: Tensor, out=None):
    """`ttt_mm.ops.ln.LnL2GradBackward`'s ``(dz, de)`` for rows ``[G, R, F]`` (``rstd``, ``a``: ``[G, R, 1]``),
    ``dz`` written into ``out`` if given (rows contiguous within each ``G``); None where the kernels do not apply."""
    fn = kernel("ln_l2_grad_backward", s, zhat, g, rstd, a, weight_sq)
    if fn is None or not _rows(s, weight_sq, zhat, g) or not (rstd.is_contiguous() and a.is_contiguous()):
        return None
    if rstd.shape != (*s.shape[:2], 1) or a.shape != rstd.shape:
        return None
    if out is None:
        out = torch.empty_like(s)
    elif out.shape != s.shape or out.stride()[1:] != (s.shape[2], 1) or out.dtype != s.dtype:
        return None
    de = torch.empty_like(s)
    ptrs = (t.data_ptr() for t in (s, zhat, g, rstd, a, weight_sq))
    fn(*ptrs, *s.shape, de.data_ptr(), out.data_ptr(), out.stride(0), torch.get_num_threads())
    return out, de


def _rows(x: Tensor, weight_sq: Tensor, *like: Tensor) -> bool:
    """Whether ``x`` and ``like`` are contiguous ``[G, R, F]`` and ``weight_sq`` a contiguous ``[G, 1, F]``."""
    if x.dim() != 3 or weight_sq.shape != (x.shape[0], 1, x.shape[2]):
        return False
    return all(t.shape == x.shape and t.is_contiguous() for t in (x, *like)) and weight_sq.is_contiguous()
