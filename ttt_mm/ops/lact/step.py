"""One chunk of the LaCT core with its backward written by hand: the outputs of a chunk's tokens and
the step they ask for, both at the weights from before the chunk.

Autograd through the same products and elementwise ops keeps every full-size intermediate of every
chunk and replays some twenty elementwise kernels per chunk and head from memory. Here the forward
keeps only its inputs; the backward recomputes the three products it needs, tile by tile
(``TILE_TOKENS`` tokens of all heads on the CPU, so a tile's temporaries stay in cache), with the
SwiGLU derivatives fused into as few passes as the ops allow, and the weights' gradients
accumulate in place. On the CPU in float32/64 each elementwise chain between the products is one fused
C loop (`ttt_mm.ops.native.lact`), else PyTorch ops. Memory is that of the inputs, whatever the chunk
size. ``W02`` (and ``dG02``) enter the products ``x W02^T`` as a transposed copy made once per chunk:
with a transposed view, the CPU's batched product ran ``[4, 512, 128] x W02^T`` 1.4x slower.

Notation (per head; rows are tokens; ``W02 [2M, D]`` is ``W0`` over ``W2``, ``W1 [E, M]``):

- apply: ``[g, u] = q W02^T``, ``out = (silu(g) * u) W1^T``;
- the objective ``<f(k), v>`` and its gradient: ``[a, b] = k W02^T``, ``s = silu(a)``, ``h = s * b``,
  ``dh = v W1``; ``d/da = dh * b * silu'(a)``, ``d/db = dh * s``;
- step: ``G02 = P^T k`` with ``P = [d/da * lr0, d/db * lr2]``, ``G1 = (v * lr1)^T h``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..first_order import first_order_backward
from ..native import lact as native
from .tiles import token_tiles

# Tokens per tile on the CPU: every temporary of a tile is at most [BH, TILE_TOKENS, 2M].
TILE_TOKENS = 512

# ``grad * silu'(x)`` and ``grad * s (1 - s)`` for ``s = sigmoid(x)`` in one pass each (autograd's kernels).
_silu_backward = torch.ops.aten.silu_backward
_sigmoid_backward = torch.ops.aten.sigmoid_backward


def swiglu_chunk(W02: Tensor, W1: Tensor, q: Tensor, k: Tensor, v: Tensor, lr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``out [BH, n, E]``, ``G02 [BH, 2M, D]``, ``G1 [BH, E, M]`` of ``n`` tokens at weights ``W02, W1``.

    ``q, k [BH, n, D]``, ``v [BH, n, E]``, ``lr [BH, n, 3]`` (step sizes of W0, W1, W2)."""
    return _SwiGLUChunk.apply(W02, W1, q, k, v, lr)


class _SwiGLUChunk(torch.autograd.Function):
    @staticmethod
    def forward(ctx, W02, W1, q, k, v, lr):
        BH, n, _ = q.shape
        out = q.new_empty(BH, n, W1.shape[1])
        G02, G1 = torch.zeros_like(W02), torch.zeros_like(W1)
        W02T = W02.mT.contiguous()
        for t in token_tiles(n, TILE_TOKENS, q.device):
            k_, v_ = k[:, t], v[:, t]
            torch.bmm(_swiglu(torch.bmm(q[:, t], W02T)), W1.mT, out=out[:, t])
            P, h = _step_terms(torch.bmm(k_, W02T), torch.bmm(v_, W1), lr[:, t])
            G02.baddbmm_(P.mT, k_)
            G1.baddbmm_((v_ * lr[:, t, 1:2]).mT, h)
        ctx.save_for_backward(W02, W1, q, k, v, lr)
        ctx.set_materialize_grads(False)
        return out, G02, G1

    @staticmethod
    @first_order_backward
    def backward(ctx, d_out, dG02, dG1):
        W02, W1, q, k, v, lr = ctx.saved_tensors
        BH, n, _ = q.shape
        stepped = dG02 is not None or dG1 is not None  # None: the chunk's step reaches no loss
        if stepped:
            dG02 = torch.zeros_like(W02) if dG02 is None else dG02
            dG1 = torch.zeros_like(W1) if dG1 is None else dG1
        dW02, dW1 = torch.zeros_like(W02), torch.zeros_like(W1)
        dq = torch.zeros_like(q) if d_out is None else torch.empty_like(q)  # tiles write what they reach
        dk, dv, dlr = (torch.empty_like(x) if stepped else torch.zeros_like(x) for x in (k, v, lr))
        W02T = W02.mT.contiguous()
        dG02T = dG02.mT.contiguous() if stepped else None
        for t in token_tiles(n, TILE_TOKENS, q.device):
            if d_out is not None:
                _apply_backward(W02, W02T, W1, q[:, t], d_out[:, t], dq[:, t], dW02, dW1)
            if stepped:
                inputs = (W02, W02T, W1, k[:, t], v[:, t], lr[:, t])
                _step_backward(*inputs, dG02, dG02T, dG1, dk[:, t], dv[:, t], dlr[:, t], dW02, dW1)
        return dW02, dW1, dq, dk, dv, dlr


def _apply_backward(w02, w02T, w1, q, d_out, dq, dW02, dW1) -> None:
    """Writes the outputs' contribution to ``dq``; adds theirs to ``dW02`` and ``dW1`` (``w02T``: ``w02``
    transposed, contiguous)."""
    dQ, h = _swiglu_backward(torch.bmm(q, w02T), torch.bmm(d_out, w1))
    torch.bmm(dQ, w02, out=dq)
    dW02.baddbmm_(dQ.mT, q)
    dW1.baddbmm_(d_out.mT, h)


def _step_backward(w02, w02T, w1, k, v, lr, dG02, dG02T, dG1, dk, dv, dlr, dW02, dW1) -> None:
    """Writes the step's contribution to ``dk``, ``dv`` and ``dlr``; adds theirs to ``dW02`` and ``dW1``.

    ``G02 = P^T k`` gives ``dP = k dG02^T`` and ``dk = P dG02``; ``G1 = (v lr1)^T h`` gives
    ``d(v lr1) = h dG1^T`` and ``dh_h = (v lr1) dG1``; then back through ``P`` and ``h`` to ``dh``,
    ``a``, ``b`` (`_step_backward_terms`) and the products that made them."""
    ab, dh = torch.bmm(k, w02T), torch.bmm(v, w1)
    lr1 = lr[..., 1:2]
    dvl = torch.bmm(_swiglu(ab), dG1.mT)  # [t, E]
    dh_h = torch.bmm(v * lr1, dG1)  # [t, M]
    dlr[..., 1] = torch.linalg.vecdot(dvl, v)
    torch.mul(dvl, lr1, out=dv)
    P, dA, d_dh = _step_backward_terms(ab, dh, torch.bmm(k, dG02T), dh_h, lr, dlr)
    torch.bmm(P, dG02, out=dk)
    dk.baddbmm_(dA, w02)
    dW02.baddbmm_(dA.mT, k)
    dv.baddbmm_(d_dh, w1.mT)
    dW1.baddbmm_(v.mT, d_dh)


# The elementwise chains between the products: a fused loop where it applies, else these PyTorch ops.


def _swiglu(ab: Tensor) -> Tensor:
    """``silu(a) * b`` for ``ab = [a, b]`` (last dim ``2M``)."""
    fused = native.swiglu(ab)
    if fused is not None:
        return fused
    a, b = ab.chunk(2, dim=-1)
    return F.silu(a).mul_(b)


def _step_terms(ab: Tensor, dh: Tensor, lr: Tensor) -> tuple[Tensor, Tensor]:
    """``P = [dh b silu'(a) lr0, dh silu(a) lr2]`` and ``h = silu(a) b``, from ``ab = [a, b]`` and ``dh = v W1``."""
    fused = native.swiglu_step(ab, dh, lr)
    if fused is not None:
        return fused
    a, b = ab.chunk(2, dim=-1)
    s = F.silu(a)
    P = torch.cat([_silu_backward(dh * b, a).mul_(lr[..., :1]), (dh * s).mul_(lr[..., 2:])], dim=-1)
    return P, s.mul_(b)


def _swiglu_backward(gu: Tensor, d_hidden: Tensor) -> tuple[Tensor, Tensor]:
    """``dQ = [d_hidden u silu'(g), d_hidden silu(g)]`` and ``h = silu(g) u``, from ``gu = [g, u]``."""
    fused = native.swiglu_backward(gu, d_hidden)
    if fused is not None:
        return fused
    g, u = gu.chunk(2, dim=-1)
    dQ = torch.empty_like(gu)
    d_g, d_u = dQ.chunk(2, dim=-1)
    _silu_backward.grad_input(d_hidden * u, g, grad_input=d_g)
    sg = F.silu(g)
    torch.mul(d_hidden, sg, out=d_u)
    return dQ, sg.mul_(u)


def _step_backward_terms(ab, dh, dP, dh_h, lr, dlr) -> tuple[Tensor, Tensor, Tensor]:
    """``(P, dA, d_dh)`` of `_step_backward`, writing ``dlr[..., 0]`` and ``dlr[..., 2]``.

    With ``s = silu(a)``, ``da = dh b silu'(a)``, ``db = dh s`` (so ``P = [da lr0, db lr2]``) and
    ``dda = dP0 lr0``, ``ddb = dP2 lr2``: ``dlr0 = <dP0, da>``, ``dlr2 = <dP2, db>``, ``d_dh = dda b
    silu'(a) + ddb s`` and ``dA = [d/da, d/db] = [dda dh b silu''(a) + (ddb dh + dh_h b) silu'(a),
    dda dh silu'(a) + dh_h s]``."""
    fused = native.swiglu_step_backward(ab, dh, dP, dh_h, lr, dlr)
    if fused is not None:
        return fused
    a, b = ab.chunk(2, dim=-1)
    lr0, lr2 = lr[..., :1], lr[..., 2:]
    sig = torch.sigmoid(a)
    s = a * sig
    slope = torch.sub(a, s).add_(1).mul_(sig)  # silu'(a) = sig (1 + a (1 - sig))
    b_slope = b * slope
    da, db = dh * b_slope, dh * s
    dP0, dP2 = dP.chunk(2, dim=-1)
    dlr[..., 0] = torch.linalg.vecdot(dP0, da)
    dlr[..., 2] = torch.linalg.vecdot(dP2, db)
    P = torch.cat([da.mul_(lr0), db.mul_(lr2)], dim=-1)
    dda, ddb = dP0.mul_(lr0), dP2.mul_(lr2)
    d_dh = torch.mul(dda, b_slope).addcmul_(ddb, s)
    dA = torch.empty_like(dP)
    d_a, d_b = dA.chunk(2, dim=-1)
    dda_dh = dda.mul_(dh)
    torch.mul(dda_dh, slope, out=d_b).addcmul_(dh_h, s)
    d_s = ddb.mul_(dh).addcmul_(dh_h, b)
    # silu''(a) = sig (1 - sig) (2 + a - 2 s)
    curvature = _sigmoid_backward(torch.add(a, s, alpha=-2).add_(2), sig)
    torch.mul(dda_dh.mul_(b), curvature, out=d_a).addcmul_(d_s, slope)
    return P, dA, d_dh
