"""The elementwise maps around the LaCT core, fused and tiled, with backward passes written by hand:
the fast path's inputs from the layer's q, k, v projection, and its gated, RMS-normed output.

Each is a handful of passes over ``[T, C]`` activations. Autograd runs every op over the whole
input and back, a pass through memory each, and keeps their intermediates. Here (on the CPU) tiles
of ``TILE_TOKENS`` tokens go through all passes while they are in the core's cache, the forward
keeps only its inputs (and a norm per token and head), and the backward recomputes the rest. On the
CPU in float32/64, fused C loops (`ttt_mm.ops.native.lact`) run each pass instead, one per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..eager import eager_under_compile
from ..first_order import first_order_backward
from ..native import lact as native
from ..precision import autocast_off
from .tiles import token_tiles

# Tokens per tile on the CPU (all batch rows): the temporaries of a tile are a few [B, TILE_TOKENS, C].
TILE_TOKENS = 128

_silu_backward = torch.ops.aten.silu_backward


@eager_under_compile
def fast_inputs(qkv: Tensor, scale: Tensor, offset: Tensor, heads: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """LaCT's fast-weight inputs from the layer's projection ``qkv [B, T, 3C]`` (q, k, v one after another).

    Returns three ``[B, heads, T, C / heads]`` (head-major, as the core reads them; views of one
    tensor): ``l2(silu(q * scale[0] + offset[0]))``, the same of ``k`` with ``scale[1], offset[1]``,
    and ``silu(v)``, where ``l2`` divides each head's channels by their L2 norm plus ``eps``."""
    return _FastInputs.apply(qkv, scale, offset, heads, eps)


@eager_under_compile
def gated_rms_norm(o: Tensor, weight: Tensor, gate: Tensor, eps: float) -> Tensor:
    """``RMSNorm(o) * weight * silu(gate)`` per head, laid out token-major.

    ``o [B, H, T, D]`` (the core's output), ``weight [D]``, ``gate [B, T, H]`` (pre-activation);
    returns ``[B, T, H D]``."""
    return _GatedRMSNorm.apply(o, weight, gate, eps)


def _token_major(x: Tensor, t: slice) -> Tensor:
    """Tokens ``t`` of a head-major ``[n, B, H, T, D]`` as a view ``[B, t, n, H, D]``."""
    return x[:, :, :, t].permute(1, 3, 0, 2, 4)


class _FastInputs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, scale, offset, heads, eps):
        ctx.eps = eps
        fused = native.fast_inputs(qkv, scale, offset, heads, eps)
        with autocast_off(qkv.device.type):
            out, norms = fused if fused is not None else _fast_inputs(qkv, scale, offset, heads, eps)
        ctx.save_for_backward(qkv, scale, offset, norms)
        return out[0], out[1], out[2]

    @staticmethod
    @first_order_backward
    def backward(ctx, *grads):
        qkv, scale, offset, norms = ctx.saved_tensors
        fused = native.fast_inputs_backward(qkv, scale, offset, norms, grads, ctx.eps)
        if fused is None:
            with autocast_off(qkv.device.type):
                fused = _fast_inputs_backward(qkv, scale, offset, norms, torch.stack(grads), ctx.eps)
        return *fused, None, None


def _fast_inputs(qkv, scale, offset, heads, eps):
    """The forward in PyTorch ops, a tile at a time: ``y [3, B, heads, T, D]`` and the norms."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    out = qkv.new_empty(3, B, heads, T, C // heads)
    norms = qkv.new_empty(B, T, 2, heads, 1, dtype=torch.promote_types(qkv.dtype, scale.dtype))
    for t in token_tiles(T, TILE_TOKENS, qkv.device):
        x = qkv[:, t].unflatten(-1, (3, heads, -1))  # [B, t, 3, H, D]
        act = F.silu(torch.addcmul(offset, x[:, :, :2].flatten(-2), scale), inplace=True).unflatten(-1, (heads, -1))
        n = torch.linalg.vector_norm(act, dim=-1, keepdim=True, out=norms[:, t])
        y = _token_major(out, t)
        torch.div(act, n + eps, out=y[:, :, :2])
        torch.ops.aten.silu.out(x[:, :, 2], out=y[:, :, 2])
    return out, norms


def _fast_inputs_backward(qkv, scale, offset, norms, grad, eps):
    """The backward in PyTorch ops, a tile at a time, for ``grad [3, B, heads, T, D]``; in the dtype of
    ``norms`` (float32 at least: bfloat16 activations meet float32 scales under autocast)."""
    B, T, C3 = qkv.shape
    heads, wide = norms.shape[3], norms.dtype
    d_qkv = torch.empty_like(qkv)
    d_scale, d_offset = torch.zeros_like(scale), torch.zeros_like(offset)
    for t in token_tiles(T, TILE_TOKENS, grad.device):
        x = qkv[:, t].to(wide).unflatten(-1, (3, heads, -1))  # [B, t, 3, H, D]
        dx = d_qkv[:, t].unflatten(-1, (3, heads, -1))
        g = _token_major(grad, t).to(wide)
        xqk = x[:, :, :2].flatten(-2)
        z = torch.addcmul(offset, xqk, scale)
        act = F.silu(z).unflatten(-1, (heads, -1))
        n = norms[:, t]
        r = 1 / (n + eps)
        # y = act r: d act = r dy - (r^2 <dy, act> / n) act (zero where the norm is)
        coef = torch.linalg.vecdot(g[:, :, :2], act).unsqueeze(-1)
        coef = torch.where(n > 0, coef * r * r / n, 0)
        d_act = (g[:, :, :2] * r).sub_(act * coef).flatten(-2)
        dz = _silu_backward(d_act, z)
        dx[:, :, :2].flatten(-2).copy_(dz * scale)  # copy_: back to qkv's dtype
        d_scale += (dz * xqk).sum((0, 1))
        d_offset += dz.sum((0, 1))
        dx[:, :, 2].copy_(_silu_backward(g[:, :, 2], x[:, :, 2]))
    return d_qkv, d_scale, d_offset


class _GatedRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, o, weight, gate, eps):
        fused = native.gated_rms_norm(o, weight, gate, eps)
        with autocast_off(o.device.type):
            out, rms = fused if fused is not None else _gated_rms_norm(o, weight, gate, eps)
        ctx.save_for_backward(o, weight, gate, rms)
        return out.flatten(2)

    @staticmethod
    @first_order_backward
    def backward(ctx, grad):
        o, weight, gate, rms = ctx.saved_tensors
        grad = grad.unflatten(-1, o.shape[1:2] + o.shape[3:])  # [B, T, H, D]
        fused = native.gated_rms_norm_backward(o, weight, gate, rms, grad)
        if fused is None:
            with autocast_off(o.device.type):
                fused = _gated_rms_norm_backward(o, weight, gate, rms, grad)
        return *fused, None


def _gated_rms_norm(o, weight, gate, eps):
    """The forward in PyTorch ops, a tile at a time: ``y [B, T, H, D]`` and ``1 / RMS(o)`` ``[B, H, T, 1]``."""
    B, H, T, D = o.shape
    out = o.new_empty(B, T, H, D)
    rms = o.new_empty(B, H, T, 1)
    for t in token_tiles(T, TILE_TOKENS, o.device):
        o_t = o[:, :, t]
        r = torch.rsqrt(torch.linalg.vecdot(o_t, o_t).unsqueeze(-1).div_(D).add_(eps), out=rms[:, :, t])
        g = F.silu(gate[:, t].to(o.dtype)).transpose(1, 2).unsqueeze(-1)  # [B, H, t, 1]
        torch.mul(o_t * (r * g), weight.to(o.dtype), out=out[:, t].transpose(1, 2))
    return out, rms


def _gated_rms_norm_backward(o, weight, gate, rms, grad):
    """The backward in PyTorch ops, a tile at a time, for ``grad [B, T, H, D]``: ``(d_o, d_weight, d_gate)``."""
    B, H, T, D = o.shape
    d_o, d_gate = torch.empty_like(o), torch.empty_like(gate)
    d_weight = torch.zeros_like(weight)
    weight = weight.to(o.dtype)
    for t in token_tiles(T, TILE_TOKENS, grad.device):
        r = rms[:, :, t]
        n = o[:, :, t] * r  # the normalised rows (RMS about 1): products of them stay in float16's range
        dy = grad[:, t].transpose(1, 2)  # [B, H, t, D]
        g = F.silu(gate[:, t].to(o.dtype)).transpose(1, 2).unsqueeze(-1)
        dyw = dy * weight
        # y = n g w: d g = <dy w, n>, d w = sum dy n g, d n = dy w g
        _silu_backward.grad_input(torch.linalg.vecdot(dyw, n).transpose(1, 2), gate[:, t], grad_input=d_gate[:, t])
        d_weight += torch.einsum("bhtd,bhtx->d", dy * n, g)
        dn = dyw.mul_(g)
        # n = o r, r = (mean o^2 + eps)^-1/2: d o = r (dn - <dn, n> n / D), without r^3 (past float16's
        # range for the small rows of a fresh layer)
        coef = torch.linalg.vecdot(dn, n).unsqueeze(-1).div_(D)
        torch.mul(dn.sub_(n.mul_(coef)), r, out=d_o[:, :, t])
    return d_o, d_weight, d_gate
