"""Layer-norm helpers shared by the TTT cores.

The inner LayerNorm of a TTT layer has per-head weights, so the affine part is applied by hand
on top of an unweighted normalisation. All helpers take inputs of shape ``[..., F]`` and weights
that broadcast against them (typically ``[BH, 1, F]``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .native import ttt as native

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
    fused = native.ln_l2_grad(z, weight_sq, offset, eps)  # one C loop where it applies (CPU, no autograd)
    if fused is not None:
        return fused
    F = z.shape[-1]
    zhat, mean, rstd = torch.native_layer_norm(z, [F], None, None, eps)
    dy = torch.addcmul(offset, zhat, weight_sq)
    return torch.ops.aten.native_layer_norm_backward(dy, z, [F], mean, rstd, None, None, [True, False, False])[0]


def l2_target_offset(target: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``gamma * (beta - target)``: the target-dependent half of :func:`ln_l2_grad`'s upstream gradient."""
    return weight * (bias - target)


def ln_l2_grad_recorded(z: Tensor, weight_sq: Tensor, offset: Tensor, eps: float = EPS, out=None):
    """:func:`ln_l2_grad` plus what its backward needs: ``g`` and ``(zhat, mean, rstd, dy)`` (written into
    ``out = (g, zhat, mean, rstd, dy)`` if given)."""
    fused = native.ln_l2_grad(z, weight_sq, offset, eps, record=True, out=out)
    if fused is not None:
        return fused
    F = z.shape[-1]
    zhat, mean, rstd = torch.native_layer_norm(z, [F], None, None, eps)
    dy = torch.addcmul(offset, zhat, weight_sq)
    g = torch.ops.aten.native_layer_norm_backward(dy, z, [F], mean, rstd, None, None, [True, False, False])[0]
    if out is None:
        return g, (zhat, mean, rstd, dy)
    g, *recorded = (o.copy_(t) for o, t in zip(out, (g, zhat, mean, rstd, dy)))
    return g, tuple(recorded)


@dataclass
class LnL2GradBackward:
    """The backward of :func:`ln_l2_grad` for recorded rows, split so that the part applied to each
    upstream gradient is eight small kernels (the TTT reverse passes call it inside their sequential loop).

    With ``r`` the reciprocal std, ``zhat`` the normalized row, ``e = dy`` the upstream gradient of the
    LayerNorm and ``P = I - 11^T/F - zhat zhat^T/F``, the forward is ``g = r P e`` with ``e`` depending on
    ``zhat``. For an upstream ``s = dL/dg``: ``de = r P s`` (a LayerNorm backward) and

        dz = r P (gamma^2 de) - r mean(e zhat) de - (r/F) (s . zhat) g - (r/F) (s . g) zhat,

    the terms through ``e``, through ``P``'s ``zhat`` and through ``r``. Every tensor holds rows ``[..., F]``
    (``mean``, ``rstd`` and ``a`` end in 1); ``weight_sq`` is ``gamma^2``, broadcast against them.
    """

    z: Tensor
    zhat: Tensor
    g: Tensor
    mean: Tensor
    rstd: Tensor
    a: Tensor  # r mean(e zhat)
    g_scaled: Tensor  # (r/F) g
    zhat_scaled: Tensor  # (r/F) zhat
    weight_sq: Tensor

    @classmethod
    def of(cls, z: Tensor, g: Tensor, recorded, weight_sq: Tensor) -> LnL2GradBackward:
        """From :func:`ln_l2_grad_recorded`'s outputs; the per-row factors are computed here, for all rows at once."""
        zhat, mean, rstd, dy = recorded
        rf = rstd / z.shape[-1]
        a = rstd * (dy * zhat).mean(-1, keepdim=True)
        return cls(z, zhat, g, mean, rstd, a, rf * g, rf * zhat, weight_sq)

    def unbind(self) -> list[LnL2GradBackward]:
        """One backward per entry of the leading dimension (views; the sequential loops index a list)."""
        parts = [getattr(self, f.name).unbind(0) for f in fields(self) if f.name != "weight_sq"]
        return [LnL2GradBackward(*row, self.weight_sq) for row in zip(*parts)]

    def __call__(self, s: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(dz, de)``: the gradients w.r.t. ``z`` (written into ``out`` if given) and w.r.t. ``e`` (from
        which the target's follow)."""
        fused = native.ln_l2_grad_backward(s, self.zhat, self.g, self.rstd, self.a, self.weight_sq, out)
        if fused is not None:
            return fused
        F = s.shape[-1]
        bwd = torch.ops.aten.native_layer_norm_backward
        de = bwd(s, self.z, [F], self.mean, self.rstd, None, None, [True, False, False])[0]
        dz = bwd(de * self.weight_sq, self.z, [F], self.mean, self.rstd, None, None, [True, False, False])[0]
        dz = torch.addcmul(dz, self.a, de, value=-1)
        dz = torch.addcmul(dz, torch.linalg.vecdot(s, self.zhat).unsqueeze(-1), self.g_scaled, value=-1)
        dz = torch.addcmul(dz, torch.linalg.vecdot(s, self.g).unsqueeze(-1), self.zhat_scaled, value=-1, out=out)
        return dz, de
