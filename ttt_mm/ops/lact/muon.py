"""Muon's orthogonalisation of an update: ``G -> U V^T`` for ``G = U S V^T``, approximately, by a few
Newton-Schulz steps (the quintic with per-step coefficients that LaCT's release uses).

The steps only need matrix products, so they batch over heads and rows. Each step maps every
singular value ``s`` of ``X`` (after scaling so that all are at most 1) to ``a s + b s^3 + c s^5``;
five steps bring them all into about [0.7, 1.2], which is what Muon needs and far cheaper than an SVD.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..first_order import first_order_backward

# (a, b, c) of each step, as released with LaCT (from modded-nanogpt's tuned schedule).
NEWTON_SCHULZ_STEPS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
# Added to the Frobenius norm before the first step: a zero update stays zero.
NORM_EPS = 1e-7


def orthogonalize(G: Tensor) -> Tensor:
    """``G [N, m, n]`` -> ``[N, m, n]`` with singular values pushed near 1 (directions kept).

    Works on the wide orientation, so the Gram matrix ``X X^T`` is the smaller of the two.
    The Frobenius norm bounds the spectral norm, so dividing by it puts every singular value in [0, 1].
    Differentiable with a hand-written backward that keeps only ``G`` and recomputes the iterates,
    where autograd would keep three weight-sized products per step for every chunk of a sequence.
    """
    return _Orthogonalize.apply(G)


def _wide(G: Tensor) -> tuple[Tensor, bool]:
    tall = G.shape[-2] > G.shape[-1]
    return (G.mT if tall else G), tall


def _normalized(X: Tensor) -> tuple[Tensor, Tensor]:
    """``X / (|X|_F + eps)`` and ``|X|_F`` (``[N, 1, 1]``)."""
    norm = torch.linalg.matrix_norm(X, keepdim=True)
    return X / (norm + NORM_EPS), norm


def _step(X: Tensor, a: float, b: float, c: float) -> tuple[Tensor, Tensor, Tensor]:
    """One Newton-Schulz step ``a X + (b A + c A^2) X`` with ``A = X X^T``; also returns ``A`` and
    ``b A + c A^2`` (both symmetric)."""
    A = torch.bmm(X, X.mT)
    B = torch.baddbmm(A, A, A, beta=b, alpha=c)
    return torch.baddbmm(X, B, X, beta=a), A, B


class _Orthogonalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, G: Tensor) -> Tensor:
        ctx.save_for_backward(G)
        X, tall = _wide(G)
        X, _ = _normalized(X)
        for a, b, c in NEWTON_SCHULZ_STEPS:
            X, _, _ = _step(X, a, b, c)
        return X.mT if tall else X

    @staticmethod
    @first_order_backward
    def backward(ctx, grad: Tensor) -> Tensor:
        (G,) = ctx.saved_tensors
        G, tall = _wide(G)
        X, norm = _normalized(G)
        steps = []  # each step's input X and its A, B
        for a, b, c in NEWTON_SCHULZ_STEPS:
            Y, A, B = _step(X, a, b, c)
            steps.append((X, A, B))
            X = Y
        dY = grad.mT if tall else grad
        for (X, A, B), (a, b, c) in zip(reversed(steps), reversed(NEWTON_SCHULZ_STEPS)):
            # Y = a X + B X, B = b A + c A^2, A = X X^T: dB = dY X^T, dA = b dB + c (dB A + A dB),
            # dX = a dY + B dY + (dA + dA^T) X (A and B are symmetric)
            dB = torch.bmm(dY, X.mT)
            dA = torch.baddbmm(torch.baddbmm(dB, dB, A, beta=b, alpha=c), A, dB, alpha=c)
            dY = torch.baddbmm(dY, B, dY, beta=a).baddbmm_(dA + dA.mT, X)
        # X0 = G / (n + eps), n = |G|_F: dG = dX0 / (n + eps) - <dX0, G> G / ((n + eps)^2 n), zero where G is
        inner = (dY * G).sum((-2, -1), keepdim=True)
        coef = torch.where(norm > 0, inner / ((norm + NORM_EPS) ** 2 * norm), 0)
        dG = dY / (norm + NORM_EPS) - coef * G
        return dG.mT if tall else dG
