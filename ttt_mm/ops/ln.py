"""Layer-norm helpers shared by the TTT cores.

The inner LayerNorm of a TTT layer has per-head weights, so the affine part is applied by hand
on top of an unweighted normalisation. All helpers take inputs of shape ``[..., F]`` and weights
that broadcast against them (typically ``[BH, 1, F]``).
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = EPS) -> Tensor:
    """``weight * (x - mean) / sqrt(var + eps) + bias`` over the last dimension (biased variance)."""
    xhat = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
    return torch.addcmul(bias, xhat, weight)


def ln_l2_grad(z: Tensor, weight_sq: Tensor, offset: Tensor, eps: float = EPS) -> Tensor:
    """Gradient w.r.t. ``z`` of ``0.5 * ||LN(z) - target||^2`` (LayerNorm backward fused with L2).

    With ``y = gamma * zhat + beta`` the upstream gradient is ``(y - target) * gamma``, which equals
    ``gamma^2 * zhat + gamma * (beta - target)``. Callers pass ``weight_sq = gamma^2`` and
    ``offset = gamma * (beta - target)`` precomputed for a whole sequence, so that the sequential scan
    runs only three fused kernels per mini-batch.
    """
    F = z.shape[-1]
    zhat, mean, rstd = torch.native_layer_norm(z, [F], None, None, eps)
    dy = torch.addcmul(offset, zhat, weight_sq)
    return torch.ops.aten.native_layer_norm_backward(dy, z, [F], mean, rstd, None, None, [True, False, False])[0]


def l2_target_offset(target: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``gamma * (beta - target)``: the target-dependent half of :func:`ln_l2_grad`'s upstream gradient."""
    return weight * (bias - target)
