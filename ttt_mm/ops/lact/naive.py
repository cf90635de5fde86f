"""The LaCT core exactly as the paper reads: token by token, chunk by chunk. For tests: slow, but
obviously right.

Each token's gradient comes from autograd on the literal inner objective (``create_graph=True``, so
the reference itself can be differentiated), not from the hand-written SwiGLU backward of the fast
path, so the two are independent. The Newton-Schulz steps are written as the polynomial they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunk import RENORM_EPS
from .muon import NEWTON_SCHULZ_STEPS, NORM_EPS
from .state import LaCTState


def swiglu(W: tuple[Tensor, Tensor, Tensor], x: Tensor) -> Tensor:
    """The fast-weight function ``f(x) = W1 (silu(W0 x) * (W2 x))`` of one vector ``x [D]``."""
    W0, W1, W2 = W
    return W1 @ (F.silu(W0 @ x) * (W2 @ x))


def newton_schulz(G: Tensor) -> Tensor:
    """Five steps ``X <- a X + b (X X^T) X + c (X X^T)^2 X`` from ``X = G / ||G||_F``."""
    X = G / (torch.linalg.matrix_norm(G) + NORM_EPS)
    for a, b, c in NEWTON_SCHULZ_STEPS:
        gram = X @ X.T
        X = a * X + b * gram @ X + c * gram @ gram @ X
    return X


def _objective_grads(W, k_t: Tensor, v_t: Tensor):
    """Gradients of the dot-product objective ``<f_W(k_t), v_t>`` w.r.t. each weight, kept in the graph.
    Following them (a step up the objective) is a step down the inner loss ``-<f_W(k_t), v_t>``."""
    W = tuple(w if w.requires_grad else w.detach().requires_grad_() for w in W)
    return torch.autograd.grad(swiglu(W, k_t) @ v_t, W, create_graph=True)


def lact_naive(q, k, v, lr, w0, w1, w2, momentum=None, *, chunk_size: int, muon: bool = False):
    """Reference for :func:`ttt_mm.ops.lact_swiglu` from the initial weights (same shapes and meaning).

    Returns ``out [B, H, T, E]`` and the final :class:`LaCTState`.
    """
    B, H, T, _ = q.shape
    C = chunk_size
    out = q.new_empty(B, H, T, v.shape[-1])
    finals = []
    with torch.enable_grad():
        for bi in range(B):
            for h in range(H):
                W = (w0[h], w1[h], w2[h])  # the weights every token of the current chunk is answered with
                target_norms = [w.norm(dim=-1, keepdim=True) for w in W]  # each row keeps its initial norm
                step = [torch.zeros_like(w) for w in W]  # sum of lr-weighted gradients of the open chunk
                velocity = [torch.zeros_like(w) for w in W]
                gates = q.new_zeros(())
                for t in range(T):
                    # 1. apply: the output uses only the weights from before this chunk
                    out[bi, h, t] = swiglu(W, q[bi, h, t])
                    # 2. accumulate this token's step, each weight with its own step size
                    grads = _objective_grads(W, k[bi, h, t], v[bi, h, t])
                    step = [s + lr[bi, h, t, i] * g for i, (s, g) in enumerate(zip(step, grads))]
                    if momentum is not None:
                        gates = gates + momentum[bi, h, t]
                    if (t + 1) % C:
                        continue
                    # 3. the chunk is complete: update = step + mean gate * last update (momentum) ...
                    update = step
                    if momentum is not None:
                        update = [u + gates / C * m for u, m in zip(update, velocity)]
                        velocity = update
                    # ... orthogonalised (Muon), added, and every row rescaled to its initial norm
                    if muon:
                        update = [newton_schulz(u) for u in update]
                    W = tuple(w + u for w, u in zip(W, update))
                    W = tuple(w / (w.norm(dim=-1, keepdim=True) + RENORM_EPS) * n for w, n in zip(W, target_norms))
                    step = [torch.zeros_like(w) for w in W]
                    gates = q.new_zeros(())
                finals.append((W, step, velocity, gates))

    def stack(parts):
        return torch.stack(parts).unflatten(0, (B, H))

    state = LaCTState(
        tuple(stack([f[0][i] for f in finals]) for i in range(3)),
        tuple(stack([f[1][i] for f in finals]) for i in range(3)),
        None if momentum is None else tuple(stack([f[2][i] for f in finals]) for i in range(3)),
        None if momentum is None else stack([f[3] for f in finals]),
        torch.full((B,), T % C, dtype=torch.int64),
    )
    return out, state
