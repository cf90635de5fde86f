"""One chunk of the LaCT core with its backward written by hand: the outputs of a chunk's tokens and
the step they ask for, both at the weights from before the chunk.

Autograd through the same products and elementwise ops keeps every full-size intermediate of every
chunk and replays some twenty elementwise kernels per chunk and head from memory. Here the forward
keeps only its inputs; the backward recomputes the three products it needs, tile by tile
(``TILE_TOKENS`` tokens of one head, so a tile's temporaries stay in the core's cache), with the
SwiGLU derivatives fused into as few passes as the ops allow, and the weights' gradients
accumulate in place. Memory is that of the inputs, whatever the chunk size.

Notation (per head; rows are tokens; ``W02 [2M, D]`` is ``W0`` over ``W2``, ``W1 [E, M]``):

- apply: ``[g, u] = q W02^T``, ``out = (silu(g) * u) W1^T``;
- the objective ``<f(k), v>`` and its gradient: ``[a, b] = k W02^T``, ``s = silu(a)``, ``h = s * b``,
  ``dh = v W1``; ``d/da = dh * b * silu'(a)``, ``d/db = dh * s``;
- step: ``G02 = [d/da * lr0, d/db * lr2]^T k``, ``G1 = (v * lr1)^T h``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Tokens per tile: every temporary of a tile is at most [TILE_TOKENS, 2M] of one head.
TILE_TOKENS = 512

# ``grad * silu'(x)`` and ``grad * s (1 - s)`` for ``s = sigmoid(x)`` in one pass each (autograd's kernels).
_silu_backward = torch.ops.aten.silu_backward
_sigmoid_backward = torch.ops.aten.sigmoid_backward


def swiglu_chunk(W02: Tensor, W1: Tensor, q: Tensor, k: Tensor, v: Tensor, lr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``out [BH, n, E]``, ``G02 [BH, 2M, D]``, ``G1 [BH, E, M]`` of ``n`` tokens at weights ``W02, W1``.

    ``q, k [BH, n, D]``, ``v [BH, n, E]``, ``lr [BH, n, 3]`` (step sizes of W0, W1, W2)."""
    return _SwiGLUChunk.apply(W02, W1, q, k, v, lr)


def _tiles(BH: int, n: int):
    """``(head, token slice)`` of every tile."""
    return [(h, slice(i, min(i + TILE_TOKENS, n))) for h in range(BH) for i in range(0, n, TILE_TOKENS)]


class _SwiGLUChunk(torch.autograd.Function):
    @staticmethod
    def forward(ctx, W02, W1, q, k, v, lr):
        BH, n, _ = q.shape
        M = W1.shape[-1]
        out = q.new_empty(BH, n, W1.shape[1])
        G02, G1 = torch.zeros_like(W02), torch.zeros_like(W1)
        for h, t in _tiles(BH, n):
            w02, w1, k_, lr_ = W02[h], W1[h], k[h, t], lr[h, t]
            g, u = (q[h, t] @ w02.T).split(M, dim=-1)
            torch.mm(F.silu(g, inplace=True).mul_(u), w1.T, out=out[h, t])
            a, b = (k_ @ w02.T).split(M, dim=-1)
            dh = v[h, t] @ w1
            G02[h, :M].addmm_(_silu_backward(dh * b, a).mul_(lr_[:, :1]).T, k_)
            s = F.silu(a)
            G02[h, M:].addmm_((dh * s).mul_(lr_[:, 2:]).T, k_)
            G1[h].addmm_((v[h, t] * lr_[:, 1:2]).T, s.mul_(b))
        ctx.save_for_backward(W02, W1, q, k, v, lr)
        ctx.set_materialize_grads(False)
        return out, G02, G1

    @staticmethod
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
        for h, t in _tiles(BH, n):
            if d_out is not None:
                _apply_backward(W02[h], W1[h], q[h, t], d_out[h, t], dq[h, t], dW02[h], dW1[h])
            if stepped:
                inputs = (W02[h], W1[h], k[h, t], v[h, t], lr[h, t])
                _step_backward(*inputs, dG02[h], dG1[h], dk[h, t], dv[h, t], dlr[h, t], dW02[h], dW1[h])
        return dW02, dW1, dq, dk, dv, dlr


def _apply_backward(w02, w1, q, d_out, dq, dW02, dW1) -> None:
    """Writes the outputs' contribution to ``dq``; adds theirs to ``dW02`` and ``dW1``."""
    M = w1.shape[-1]
    g, u = (q @ w02.T).split(M, dim=-1)
    d_hidden = d_out @ w1  # d out / d (silu(g) u), [t, M]
    dQ = torch.empty(q.shape[0], 2 * M, dtype=q.dtype, device=q.device)  # [d/dg, d/du]
    _silu_backward.grad_input(d_hidden * u, g, grad_input=dQ[:, :M])
    sg = F.silu(g)
    torch.mul(d_hidden, sg, out=dQ[:, M:])
    torch.mm(dQ, w02, out=dq)
    dW02.addmm_(dQ.T, q)
    dW1.addmm_(d_out.T, sg.mul_(u))


def _step_backward(w02, w1, k, v, lr, dG02, dG1, dk, dv, dlr, dW02, dW1) -> None:
    """Writes the step's contribution to ``dk``, ``dv`` and ``dlr``; adds theirs to ``dW02`` and ``dW1``.

    With ``P = [da * lr0, db * lr2]`` (``da = dh b silu'(a)``, ``db = dh s``): ``dP = k dG02^T``,
    ``dk = P dG02 + dA W02``; ``G1 = (v lr1)^T h`` gives ``d(v lr1) = h dG1^T`` and ``dh_h = (v lr1) dG1``;
    then back through ``da``, ``db``, ``h`` to ``dh``, ``a``, ``b`` and the products that made them."""
    M = w1.shape[-1]
    lr0, lr1, lr2 = lr[:, :1], lr[:, 1:2], lr[:, 2:]
    a, b = (k @ w02.T).split(M, dim=-1)
    dh = v @ w1
    sig = torch.sigmoid(a)
    s = a * sig
    slope = torch.sub(a, s).add_(1).mul_(sig)  # silu'(a) = sig (1 + a (1 - sig))
    b_slope = b * slope
    da, db = dh * b_slope, dh * s

    dP = k @ dG02.T  # [t, 2M]
    dP0, dP2 = dP.split(M, dim=-1)
    dlr[:, 0] = torch.linalg.vecdot(dP0, da)
    dlr[:, 2] = torch.linalg.vecdot(dP2, db)
    P = torch.cat([da.mul_(lr0), db.mul_(lr2)], dim=-1)
    torch.mm(P, dG02, out=dk)
    dda, ddb = dP0.mul_(lr0), dP2.mul_(lr2)

    vl = v * lr1
    dvl = (s * b) @ dG1.T  # d G1 / d (v lr1), [t, E]
    dh_h = vl @ dG1  # d G1 / d h, [t, M]
    dlr[:, 1] = torch.linalg.vecdot(dvl, v)
    torch.mul(dvl, lr1, out=dv)

    d_dh = torch.mul(dda, b_slope).addcmul_(ddb, s)
    dA = torch.empty_like(dP)  # [d/da, d/db]
    d_a, d_b = dA.split(M, dim=-1)
    dda_dh = dda.mul_(dh)
    torch.mul(dda_dh, slope, out=d_b).addcmul_(dh_h, s)
    d_s = ddb.mul_(dh).addcmul_(dh_h, b)
    # d/da of dh b silu'(a): silu''(a) = sig (1 - sig) (2 + a - 2 s)
    curvature = _sigmoid_backward(torch.add(a, s, alpha=-2).add_(2), sig)
    torch.mul(dda_dh.mul_(b), curvature, out=d_a).addcmul_(d_s, slope)

    dk.addmm_(dA, w02)
    dW02.addmm_(dA.T, k)
    dv.addmm_(d_dh, w1.T)
    dW1.addmm_(v.T, d_dh)
