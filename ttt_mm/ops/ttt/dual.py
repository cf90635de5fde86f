"""The TTT-Linear and TTT-MLP forward steps in the mini-batch dual form, in plain PyTorch.

Everything that does not depend on the inner weights is computed for all mini-batches at once;
the sequential scan over mini-batches runs only the few batched matrix products and fused
LayerNorm kernels that need the current weights. That keeps the per-op overhead, which dominates a
naive scan on a CPU, at about six kernels per mini-batch for TTT-Linear.

`core` drives these steps (and `fused`'s kernels); `backward` gives the scans a hand-written
backward pass. Layout inside this module: batch and heads are flattened to one leading dimension
``BH``. Shapes: ``q, k, v [BH, T, F]``, ``lr [BH, T]``, ``tau [n]`` (the token scales of the tokens
at hand), inner LayerNorm ``ln_w, ln_b [BH, 1, F]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..ln import l2_target_offset, layer_norm, ln_l2_grad
from ..native import ttt as native
from .state import TTTState

Params = tuple[Tensor, ...]


# gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): the sigmoid
# form, the same function in fewer kernels. On the CPU the fused loops of `ttt_mm.ops.native.ttt` run instead.
_GELU_A = 2.0 * math.sqrt(2.0 / math.pi)
_GELU_B = _GELU_A * 0.044715


def gelu_tanh(x: Tensor) -> Tensor:
    fused = native.gelu_tanh(x)
    if fused is not None:
        return fused
    return x * torch.sigmoid((x * x).mul_(_GELU_B).add_(_GELU_A).mul_(x))


def gelu_tanh_with_slope(x: Tensor, out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """``gelu_tanh(x)`` and its derivative ``s + y (1 - s) (A + 3 B x^2)`` (written into ``out`` if given),
    sharing the sigmoid (in place where autograd allows: five temporaries instead of a dozen), or one
    fused loop where it applies."""
    fused = native.gelu_tanh(x, slope=True, out=out)
    if fused is not None:
        return fused
    x2 = x * x
    s = torch.sigmoid(x2.mul(_GELU_B).add_(_GELU_A).mul_(x))
    y = x * s
    slope = (y - y * s).mul_(x2.mul_(3 * _GELU_B).add_(_GELU_A)).add_(s)
    if out is None:
        return y, slope
    return out[0].copy_(y), out[1].copy_(slope)


def gelu_tanh_curvature(x: Tensor) -> Tensor:
    """Second derivative of ``gelu_tanh``: with ``s = sigmoid(v)``, ``v = x (A + B x^2)``,
    ``s (1 - s) (2 v' + x (1 - 2 s) v'^2 + x v'')``."""
    fused = native.gelu_tanh_curvature(x)
    if fused is not None:
        return fused
    x2 = x * x
    s = torch.sigmoid(x * (_GELU_A + _GELU_B * x2))
    dv = _GELU_A + 3 * _GELU_B * x2
    return s * (1 - s) * (2 * dv + x * (1 - 2 * s) * dv * dv + 6 * _GELU_B * x2)


def _sub_product(W: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``W - a @ b``, in place when nothing needs gradients (``W`` is then a private copy)."""
    if torch.is_grad_enabled():
        return torch.baddbmm(W, a, b, alpha=-1)
    return W.baddbmm_(a, b, alpha=-1)


def decay_matrix(q: Tensor, k: Tensor, lr: Tensor, tau: Tensor) -> Tensor:
    """``tril(tau_i * lr_j * (q_i . k_j + 1))``: how much token j's gradient moves token i's output.

    The ``+ 1`` is the bias, an input that is always one. Works on any leading dims: ``q, k [..., n, F]``,
    ``lr [..., n]``, ``tau [n]``.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) + 1
    return torch.tril(scores * lr.unsqueeze(-2) * tau.unsqueeze(-1))


# --------------------------------------------------------------------------------------------- linear


def linear_partial(q, k, v, lr, tau, ln_w, ln_b, state: TTTState, K: int):
    """Any run of ``n <= K - pos`` tokens inside one mini-batch, continuing ``state``."""
    (W, b), (sW, sb), pos = state.params, state.grads, state.pos
    z = torch.baddbmm(b.unsqueeze(1), k, W)
    g = ln_l2_grad(z, ln_w * ln_w, l2_target_offset(v - k, ln_w, ln_b))  # [BH, n, F]
    decay = decay_matrix(q, k, lr, torch.ones_like(tau))  # tau applied below, after the prior sums
    seen = torch.baddbmm(sb.unsqueeze(1), q, sW) + torch.bmm(decay, g)
    z_bar = torch.baddbmm(b.unsqueeze(1), q, W) - tau[:, None] * seen
    out = q + layer_norm(z_bar, ln_w, ln_b)

    lr_g = lr.unsqueeze(-1) * g
    sW = torch.baddbmm(sW, k.transpose(1, 2), lr_g)
    sb = sb + lr_g.sum(1)
    pos += q.shape[1]
    if pos == K:  # the mini-batch is complete: take the step with the last token's scale
        W, b = W - tau[-1] * sW, b - tau[-1] * sb
        sW, sb, pos = torch.zeros_like(sW), torch.zeros_like(sb), 0
    return out, TTTState((W, b), (sW, sb), pos)


@dataclass
class MiniBatches:
    """The inputs of a scan over ``M`` whole mini-batches, mini-batch-major and contiguous: the one copy
    of them that the scan reads and the hand-written backward keeps (views of the caller's tensors would
    keep their whole, larger buffers alive)."""

    kq: Tensor  # [M, BH, 2K, F+1]: the k rows, then the q rows, each with a constant-1 column (the bias)
    target: Tensor  # [M, BH, K, F]: v - k, what the inner model learns to produce
    lr: Tensor  # [M, BH, K]

    @classmethod
    def of(cls, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, K: int) -> MiniBatches:
        """From ``q, k, v [BH, T, F]`` and ``lr [BH, T]`` with ``T = M K``."""
        BH, T, F = q.shape
        M = T // K
        qm, km, vm = (x.reshape(BH, M, K, F).transpose(0, 1) for x in (q, k, v))
        kq = q.new_empty(M, BH, 2 * K, F + 1)
        kq[:, :, :K, :F] = km
        kq[:, :, K:, :F] = qm
        kq[..., F] = 1
        return cls(kq, (vm - km).contiguous(), lr.reshape(BH, M, K).transpose(0, 1).contiguous())

    @property
    def ka(self) -> Tensor:
        """``[M, BH, K, F+1]`` the k rows with their constant-1 column."""
        return self.kq[:, :, : self.target.shape[2]]

    @property
    def qa(self) -> Tensor:
        return self.kq[:, :, self.target.shape[2] :]

    @property
    def km(self) -> Tensor:
        """``[M, BH, K, F]``."""
        return self.ka[..., :-1]

    @property
    def qm(self) -> Tensor:
        return self.qa[..., :-1]

    def flat(self, x: Tensor) -> Tensor:
        """A mini-batch-major ``[M, BH, K, ...]`` tensor back to ``[BH, T, ...]``."""
        M, BH, K = x.shape[:3]
        return x.transpose(0, 1).reshape(BH, M * K, *x.shape[3:])


def linear_scan(mb: MiniBatches, tau, ln_w, ln_b, params: Params, span: int = 0) -> tuple[Tensor, Params, list[Tensor]]:
    """``M = T / K`` whole mini-batches from a boundary with weights ``params = (W, b)``: the outputs,
    the weights after them and, with ``span > 0``, the augmented weights ``[W; b]`` at the start of
    every ``span`` mini-batches (what `backward` recomputes from).

    The bias is folded into the weights (``W_aug = [W; b]``, inputs get a constant 1), and each step
    processes the mini-batch's k rows and q rows in one product; the q rows get a zero target and a
    zero decay column, so only views are taken inside the loop.
    """
    W, b = params
    M, BH, K, F = mb.target.shape
    kq, qm, lrm = mb.kq, mb.qm, mb.lr
    offset = kq.new_empty(M, BH, 2 * K, F)
    offset[:, :, :K] = l2_target_offset(mb.target, ln_w, ln_b)
    offset[:, :, K:] = 0
    step = (mb.ka * (tau[-1] * lrm).unsqueeze(-1)).transpose(-1, -2).contiguous()  # W -= step @ g_k
    decay = kq.new_empty(M, BH, K, 2 * K)  # how much each k row's gradient moves each q row's output
    decay[..., :K] = decay_matrix(qm, mb.km, lrm, tau)
    decay[..., K:] = 0
    w_sq = ln_w * ln_w

    W = torch.cat([W, b.unsqueeze(1)], dim=1)  # [BH, F+1, F], a new tensor: safe to update in place
    z_bar, checkpoints = [], []
    for m in range(M):
        if span and m % span == 0:
            checkpoints.append(W.clone())
        x = torch.bmm(kq[m], W)  # k rows: z at the start weights; q rows: q W + b
        g = ln_l2_grad(x, w_sq, offset[m])  # q rows: finite, unused
        z_bar.append(torch.baddbmm(x[:, K:], decay[m], g, alpha=-1))
        W = _sub_product(W, step[m], g[:, :K])
    out = qm + layer_norm(torch.stack(z_bar), ln_w, ln_b)  # [M, BH, K, F]
    return mb.flat(out), (W[:, :F], W[:, F]), checkpoints


# ------------------------------------------------------------------------------------------------ mlp


def mlp_partial(q, k, v, lr, tau, ln_w, ln_b, state: TTTState, K: int):
    """Any run of ``n <= K - pos`` tokens inside one mini-batch, continuing ``state``."""
    (W1, b1, W2, b2), (sW1, sb1, sW2, sb2), pos = state.params, state.grads, state.pos
    ones = torch.ones_like(tau)
    xh, slope = gelu_tanh_with_slope(torch.baddbmm(b1.unsqueeze(1), k, W1))
    z2 = torch.baddbmm(b2.unsqueeze(1), xh, W2)
    g2 = ln_l2_grad(z2, ln_w * ln_w, l2_target_offset(v - k, ln_w, ln_b))
    g1 = torch.bmm(g2, W2.transpose(1, 2)) * slope

    seen1 = torch.baddbmm(sb1.unsqueeze(1), q, sW1) + torch.bmm(decay_matrix(q, k, lr, ones), g1)
    h = gelu_tanh(torch.baddbmm(b1.unsqueeze(1), q, W1) - tau[:, None] * seen1)
    seen2 = torch.baddbmm(sb2.unsqueeze(1), h, sW2) + torch.bmm(decay_matrix(h, xh, lr, ones), g2)
    z_bar = torch.baddbmm(b2.unsqueeze(1), h, W2) - tau[:, None] * seen2
    out = q + layer_norm(z_bar, ln_w, ln_b)

    lr_g1, lr_g2 = lr.unsqueeze(-1) * g1, lr.unsqueeze(-1) * g2
    sums = (
        torch.baddbmm(sW1, k.transpose(1, 2), lr_g1),
        sb1 + lr_g1.sum(1),
        torch.baddbmm(sW2, xh.transpose(1, 2), lr_g2),
        sb2 + lr_g2.sum(1),
    )
    params = (W1, b1, W2, b2)
    pos += q.shape[1]
    if pos == K:
        params = tuple(p - tau[-1] * s for p, s in zip(params, sums))
        sums, pos = tuple(torch.zeros_like(s) for s in sums), 0
    return out, TTTState(params, sums, pos)


def mlp_scan(mb: MiniBatches, tau, ln_w, ln_b, params: Params, span: int = 0) -> tuple[Tensor, Params, list[Tensor]]:
    """As `linear_scan`, for ``params = (W1, b1, W2, b2)``; the checkpoints are ``([W1; b1], W2, b2)``
    flattened into one list. ``b1`` is folded into ``W1`` and the k and q rows share the first product."""
    W1, b1, W2, b2 = params
    M, BH, K, F = mb.target.shape
    kq, qm, lrm = mb.kq, mb.qm, mb.lr
    decay1 = decay_matrix(qm, mb.km, lrm, tau).contiguous()  # [M, BH, K, K]
    scale = torch.tril(tau.unsqueeze(-1) * lrm.unsqueeze(-2)).contiguous()  # tau_i * lr_j, [M, BH, K, K]
    offset = l2_target_offset(mb.target, ln_w, ln_b)  # [M, BH, K, F]
    e_last = (tau[-1] * lrm).unsqueeze(-1).contiguous()  # [M, BH, K, 1]
    step1 = (mb.ka * e_last).transpose(-1, -2).contiguous()  # [M, BH, F+1, K]
    w_sq = ln_w * ln_w

    W1 = torch.cat([W1, b1.unsqueeze(1)], dim=1)  # [BH, F+1, D], a new tensor: safe to update in place
    W2, b2 = W2.clone(), b2.unsqueeze(1).clone()  # [BH, D, F], [BH, 1, F]
    ones_row = kq.new_ones(BH, 1, K)
    outs, checkpoints = [], []
    for m in range(M):
        if span and m % span == 0:
            checkpoints += [W1.clone(), W2.clone(), b2.clone()]
        x1 = torch.bmm(kq[m], W1)  # [BH, 2K, D]: k rows, then q rows
        xh, slope = gelu_tanh_with_slope(x1[:, :K])
        g2 = ln_l2_grad(torch.baddbmm(b2, xh, W2), w_sq, offset[m])
        g1 = torch.bmm(g2, W2.transpose(1, 2)) * slope
        h = gelu_tanh(torch.baddbmm(x1[:, K:], decay1[m], g1, alpha=-1))
        decay2 = torch.addcmul(scale[m], torch.bmm(h, xh.transpose(1, 2)), scale[m])
        outs.append(torch.baddbmm(torch.baddbmm(b2, h, W2), decay2, g2, alpha=-1))
        e = e_last[m]
        W1 = _sub_product(W1, step1[m], g1)
        eg2 = g2 * e  # scale the narrow side of the outer products
        W2 = _sub_product(W2, xh.transpose(1, 2), eg2)
        b2 = _sub_product(b2, ones_row, eg2)
    out = qm + layer_norm(torch.stack(outs), ln_w, ln_b)
    return mb.flat(out), (W1[:, :F], W1[:, F], W2, b2.squeeze(1)), checkpoints
