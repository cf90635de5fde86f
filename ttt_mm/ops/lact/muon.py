"""Muon's orthogonalisation of an update: ``G -> U V^T`` for ``G = U S V^T``, approximately, by a few
Newton-Schulz steps (the quintic with per-step coefficients that LaCT's release uses).

The steps only need matrix products, so they batch over heads and rows. Each step maps every
singular value ``s`` of ``X`` (after scaling so that all are at most 1) to ``a s + b s^3 + c s^5``;
five steps bring them all into about [0.7, 1.2], which is what Muon needs and far cheaper than an SVD.
"""

from __future__ import annotations

import torch
from torch import Tensor

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
    """
    tall = G.shape[-2] > G.shape[-1]
    X = G.mT if tall else G
    X = X / (torch.linalg.matrix_norm(X, keepdim=True) + NORM_EPS)
    for a, b, c in NEWTON_SCHULZ_STEPS:
        A = torch.bmm(X, X.mT)
        X = torch.baddbmm(X, torch.baddbmm(A, A, A, beta=b, alpha=c), X, beta=a)  # a X + (b A + c A^2) X
    return X.mT if tall else X
