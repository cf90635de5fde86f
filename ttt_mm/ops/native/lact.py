"""Fused CPU loops for the LaCT layer's elementwise maps, in `lact.c`: the fast path's inputs and its
gated output norm (`ttt_mm.ops.lact.features`), and the SwiGLU chains between the chunk step's
products (`ttt_mm.ops.lact.step`).

Each map is a dozen PyTorch kernels per tile of tokens, forward and backward: the feature maps took a
fifth of a LaCT layer's training step on the CPU. Here each is one pass per token, split across
PyTorch's threads, its exponentials vectorised (``omp simd``); sums over tokens (the gradients of the
per-channel parameters) are kept per thread and added here. Same terms as the TTT loops
(`ttt_mm.ops.native.ttt`): CPU float32/float64 tensors that autograd does not track; None where they do
not apply, and the caller runs its PyTorch ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import kernel

# What the loops index: every tensor is checked to have the shape its pointer is read at (a mismatch
# would read or write past its end), as the TTT loops' `_rows` does.


def _contiguous(*tensors: Tensor) -> bool:
    return all(t.is_contiguous() for t in tensors)


def _projection(qkv: Tensor, scale: Tensor, offset: Tensor, heads: int) -> bool:
    """Whether ``qkv`` is ``[B, T, 3C]`` with ``C`` split into ``heads``, and ``scale``, ``offset`` ``[2, C]``."""
    if qkv.dim() != 3 or qkv.shape[2] % (3 * heads):
        return False
    return scale.shape == offset.shape == (2, qkv.shape[2] // 3)


def _gated(o: Tensor, weight: Tensor, gate: Tensor) -> bool:
    """Whether ``o`` is ``[B, H, T, D]``, ``weight`` ``[D]`` and ``gate`` ``[B, T, H]``."""
    if o.dim() != 4:
        return False
    B, H, T, D = o.shape
    return weight.shape == (D,) and gate.shape == (B, T, H)


def _token_rows(lr: Tensor, ab: Tensor) -> bool:
    """Whether ``lr`` is ``[G, R, 3]`` for ``ab [G, R, 2M]``, in contiguous rows of 3 (groups any distance apart)."""
    return lr.shape == (*ab.shape[:2], 3) and lr.stride(2) == 1 and lr.stride(1) == 3


def _pairs(ab: Tensor, *halves: Tensor) -> bool:
    """Whether ``ab`` is ``[G, R, 2M]`` and each of ``halves`` ``[G, R, M]``."""
    if ab.dim() != 3 or ab.shape[2] % 2:
        return False
    return all(h.shape == (*ab.shape[:2], ab.shape[2] // 2) for h in halves)


def fast_inputs(qkv: Tensor, scale: Tensor, offset: Tensor, heads: int, eps: float):
    """`features.fast_inputs`' ``y [3, B, heads, T, D]`` and the norms ``[B, T, 2, heads, 1]`` it saves;
    None where the loops do not apply."""
    fn = kernel("lact_fast_inputs", qkv, scale, offset)
    if fn is None or not (_contiguous(qkv, scale, offset) and _projection(qkv, scale, offset, heads)):
        return None
    B, T, C3 = qkv.shape
    D = C3 // 3 // heads
    y = qkv.new_empty(3, B, heads, T, D)
    norms = qkv.new_empty(B, T, 2, heads, 1)
    ptrs = (t.data_ptr() for t in (qkv, scale, offset))
    fn(*ptrs, B, T, heads, D, eps, y.data_ptr(), norms.data_ptr(), torch.get_num_threads())
    return y, norms


def fast_inputs_backward(qkv, scale, offset, norms, grads: tuple[Tensor, Tensor, Tensor], eps: float):
    """`features.fast_inputs`' ``(d_qkv, d_scale, d_offset)`` for the gradients of its three outputs;
    None where the loops do not apply."""
    fn = kernel("lact_fast_inputs_backward", qkv, scale, offset, norms, *grads)
    if fn is None or not (_contiguous(qkv, scale, offset, norms) and norms.dim() == 5):
        return None
    B, T, C3 = qkv.shape
    heads = norms.shape[3]
    if not _projection(qkv, scale, offset, heads) or norms.shape != (B, T, 2, heads, 1):
        return None
    if any(g.shape != (B, heads, T, C3 // 3 // heads) for g in grads):
        return None
    grads = tuple(g.contiguous() for g in grads)
    threads = torch.get_num_threads()
    d_qkv = torch.empty_like(qkv)
    partial = qkv.new_zeros(threads, 2, *scale.shape)  # per thread: d_scale, d_offset
    ptrs = (t.data_ptr() for t in (qkv, scale, offset, norms, *grads))
    fn(*ptrs, B, T, heads, C3 // 3 // heads, eps, d_qkv.data_ptr(), partial.data_ptr(), threads)
    d_scale, d_offset = partial.sum(0)
    return d_qkv, d_scale, d_offset


def gated_rms_norm(o: Tensor, weight: Tensor, gate: Tensor, eps: float):
    """`features.gated_rms_norm`'s ``y [B, T, H, D]`` and the ``1 / RMS`` ``[B, H, T, 1]`` it saves; None
    where the loops do not apply."""
    fn = kernel("lact_gated_rms_norm", o, weight, gate)
    if fn is None or not (_contiguous(o, weight, gate) and _gated(o, weight, gate)):
        return None
    B, H, T, D = o.shape
    y, rms = o.new_empty(B, T, H, D), o.new_empty(B, H, T, 1)
    ptrs = (t.data_ptr() for t in (o, weight, gate))
    fn(*ptrs, B, T, H, D, eps, y.data_ptr(), rms.data_ptr(), torch.get_num_threads())
    return y, rms


def gated_rms_norm_backward(o: Tensor, weight: Tensor, gate: Tensor, rms: Tensor, grad: Tensor):
    """`features.gated_rms_norm`'s ``(d_o, d_weight, d_gate)`` for ``grad [B, T, H, D]``; None where the
    loops do not apply."""
    fn = kernel("lact_gated_rms_norm_backward", o, weight, gate, rms, grad)
    if fn is None or not (_contiguous(o, weight, gate, rms) and _gated(o, weight, gate)):
        return None
    B, H, T, D = o.shape
    if rms.shape != (B, H, T, 1) or grad.shape != (B, T, H, D):
        return None
    grad = grad.contiguous()
    threads = torch.get_num_threads()
    d_o, d_gate = torch.empty_like(o), torch.empty_like(gate)
    partial = o.new_zeros(threads, D)
    ptrs = (t.data_ptr() for t in (o, weight, gate, rms, grad))
    fn(*ptrs, B, T, H, D, d_o.data_ptr(), d_gate.data_ptr(), partial.data_ptr(), threads)
    return d_o, partial.sum(0), d_gate


def swiglu(ab: Tensor) -> Tensor | None:
    """``silu(a) * b`` for ``ab = [a, b]`` ``[G, R, 2M]``; None where the loops do not apply."""
    fn = kernel("lact_swiglu", ab)
    if fn is None or not (ab.is_contiguous() and _pairs(ab)):
        return None
    G, R, M2 = ab.shape
    h = ab.new_empty(G, R, M2 // 2)
    fn(ab.data_ptr(), G, R, M2 // 2, h.data_ptr(), torch.get_num_threads())
    return h


def swiglu_step(ab: Tensor, dh: Tensor, lr: Tensor) -> tuple[Tensor, Tensor] | None:
    """`step`'s ``(P, h)`` from ``ab [G, R, 2M]``, ``dh [G, R, M]`` and ``lr [G, R, 3]``; None where the
    loops do not apply."""
    fn = kernel("lact_swiglu_step", ab, dh, lr)
    if fn is None or not (_contiguous(ab, dh) and _pairs(ab, dh) and _token_rows(lr, ab)):
        return None
    G, R, M2 = ab.shape
    P, h = torch.empty_like(ab), ab.new_empty(G, R, M2 // 2)
    args = (ab.data_ptr(), dh.data_ptr(), lr.data_ptr(), lr.stride(0), G, R, M2 // 2, P.data_ptr(), h.data_ptr())
    fn(*args, torch.get_num_threads())
    return P, h


def swiglu_backward(gu: Tensor, d_hidden: Tensor) -> tuple[Tensor, Tensor] | None:
    """`step`'s outputs' ``(dQ, h)`` from ``gu [G, R, 2M]`` and ``d_hidden [G, R, M]``; None where the loops
    do not apply."""
    fn = kernel("lact_swiglu_backward", gu, d_hidden)
    if fn is None or not (_contiguous(gu, d_hidden) and _pairs(gu, d_hidden)):
        return None
    G, R, M2 = gu.shape
    dQ, h = torch.empty_like(gu), gu.new_empty(G, R, M2 // 2)
    fn(gu.data_ptr(), d_hidden.data_ptr(), G, R, M2 // 2, dQ.data_ptr(), h.data_ptr(), torch.get_num_threads())
    return dQ, h


def swiglu_step_backward(ab: Tensor, dh: Tensor, dP: Tensor, dh_h: Tensor, lr: Tensor, dlr: Tensor):
    """`step`'s step backward terms ``(P, dA, d_dh)``, writing ``dlr[..., 0]`` and ``dlr[..., 2]``; None where
    the loops do not apply."""
    fn = kernel("lact_swiglu_step_backward", ab, dh, dP, dh_h, lr, dlr)
    if fn is None or not (_contiguous(ab, dh, dP, dh_h) and _pairs(ab, dh, dh_h) and dP.shape == ab.shape):
        return None
    if not (_token_rows(lr, ab) and _token_rows(dlr, ab)):
        return None
    G, R, M2 = ab.shape
    P, dA, d_dh = torch.empty_like(ab), torch.empty_like(ab), torch.empty_like(dh)
    ptrs = (t.data_ptr() for t in (ab, dh, dP, dh_h, lr))
    outs = (P.data_ptr(), dA.data_ptr(), d_dh.data_ptr(), dlr.data_ptr(), dlr.stride(0))
    fn(*ptrs, lr.stride(0), G, R, M2 // 2, *outs, torch.get_num_threads())
    return P, dA, d_dh
