"""A hand-written backward pass for the dual-form scans of `dual`: training that costs a few times
inference, in memory that does not grow with the number of mini-batches.

Autograd through `dual`'s scan records every small op of every mini-batch and replays it backwards
(about forty kernels a mini-batch, several of them full-size zero fills) and keeps every
mini-batch's activations. Here the forward pass keeps only its inputs and the inner weights at the
start of every ``span`` mini-batches. The backward pass walks the spans from last to first: it
recomputes the span's inner weights and inner gradients, computes the backward of everything that
does not depend on the adjoints of the inner weights for the whole span at once (the output
LayerNorm, the readout ``Z_bar = Q W + b - M G`` and its decay matrix ``M``), and leaves only the
adjoints of the weights to a sequential loop, about a dozen small kernels a mini-batch for
TTT-Linear. The reverse pass of one mini-batch is the one derived for the Triton kernels (see
`fused`'s docstring); the readout's contribution to the weights' adjoints, ``Q^T dZ_bar``, is
computed for every mini-batch of the span up front and added to the running adjoint in the loop.

Layout as in `dual`: ``q, k, v [BH, T, F]`` with ``T = M K``, ``lr [BH, T]``, ``tau [K]``, inner
LayerNorm ``ln_w, ln_b [BH, 1, F]``; mini-batch-major tensors are ``[M, BH, K, ...]``, a span's
``[S, BH, K, ...]``. The first layer's bias is folded into its weights (``[W; b]``, ``[F+1, ...]``)
and the k and q rows get a constant-1 column, as in `dual`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..first_order import first_order_backward
from ..ln import LnL2GradBackward, l2_target_offset, ln_l2_grad_recorded
from .dual import MiniBatches, Params, gelu_tanh_curvature, gelu_tanh_with_slope, linear_scan, mlp_scan

# Mini-batches between stored inner weights: the forward pass keeps ``M / SPAN`` copies of the
# weights per sequence; the backward pass holds one span's weights and activations at a time.
SPAN = 16


def _t(x: Tensor) -> Tensor:
    return x.transpose(-1, -2)


def _per_row(x: Tensor) -> Tensor:
    """``[(S,) BH, K, F]`` summed to ``[BH, 1, F]``, the shape of the inner LayerNorm's weights."""
    x = x.sum(-2, keepdim=True)
    return x.sum(0) if x.dim() == 4 else x


@dataclass
class _Chunk(MiniBatches):
    """The saved inputs plus what the reverse pass derives from them, for all mini-batches at once
    (nothing here depends on the inner weights)."""

    offset: Tensor  # [M, BH, K, F] gamma (beta - (v - k)), the target half of the inner loss's gradient
    scale: Tensor  # [M, BH, K, K] tril(tau_i lr_j)
    scores: Tensor  # [M, BH, K, K] q_i . k_j + 1
    c: Tensor  # [M, BH, K, 1] tau_last lr_j: the weight of token j's gradient in the end-of-mini-batch step

    @classmethod
    def derive(cls, mb: MiniBatches, tau, ln_w, ln_b) -> _Chunk:
        scale = torch.tril(tau.unsqueeze(-1) * mb.lr.unsqueeze(-2))
        scores = torch.matmul(mb.qm, _t(mb.km)) + 1
        offset = l2_target_offset(mb.target, ln_w, ln_b)
        return cls(mb.kq, mb.target, mb.lr, offset, scale, scores, (tau[-1] * mb.lr).unsqueeze(-1))


@dataclass
class _Grads:
    """The input gradients, accumulated span by span in mini-batch-major layout."""

    q: Tensor  # [M, BH, K, F]
    k: Tensor
    v: Tensor
    lr: Tensor  # [M, BH, K]
    tau: Tensor  # [K]
    ln_w: Tensor  # [BH, 1, F]
    ln_b: Tensor

    @classmethod
    def start(cls, d_out: Tensor, ch: _Chunk, tau: Tensor, ln_w: Tensor) -> _Grads:
        z = torch.zeros_like
        return cls(d_out.clone(), z(ch.target), z(ch.target), z(ch.lr), z(tau), z(ln_w), z(ln_w))

    def output_norm(self, d_out: Tensor, z_bar: Tensor, ln_w: Tensor) -> Tensor:
        """Backward of ``out = q + LN(z_bar)`` (``q``'s part is already in): the gradient w.r.t. ``z_bar``."""
        F = z_bar.shape[-1]
        zhat, mean, rstd = torch.native_layer_norm(z_bar, [F], None, None, 1e-6)
        self.ln_w += _per_row(d_out * zhat)
        self.ln_b += _per_row(d_out)
        bwd = torch.ops.aten.native_layer_norm_backward
        return bwd(d_out * ln_w, z_bar, [F], mean, rstd, None, None, [True, False, False])[0]

    def decay(self, sl: slice, ch: _Chunk, d_scaled: Tensor, scores: Tensor, tau: Tensor) -> Tensor:
        """Backward of a decay matrix ``M = tril(tau_i lr_j) * scores`` given ``dM`` (lower-triangular):
        ``tau`` and ``lr`` get their part here; returns ``dscores``."""
        d_scale = d_scaled * scores
        self.tau += (d_scale * ch.lr[sl].unsqueeze(-2)).sum((0, 1, 3))
        self.lr[sl] += (d_scale * tau.unsqueeze(-1)).sum(-2)
        return d_scaled * ch.scale[sl]

    def step_weights(self, sl: slice, ch: _Chunk, dc: Tensor, tau: Tensor) -> None:
        """Backward of ``c_j = tau_last lr_j`` given ``dc [S, BH, K]``."""
        self.lr[sl] += tau[-1] * dc
        self.tau[-1] += (ch.lr[sl] * dc).sum()

    def target(self, sl: slice, ch: _Chunk, de: Tensor, zhat: Tensor, ln_w: Tensor, ln_b: Tensor) -> None:
        """Backward of the inner loss's upstream gradient ``e = gamma^2 zhat + gamma (beta - (v - k))``
        through ``gamma``, ``beta`` and the target, given ``de``."""
        target = ch.target[sl]
        self.ln_w += _per_row(de * (2 * ln_w * zhat + ln_b - target))
        dbeta = de * ln_w
        self.ln_b += _per_row(dbeta)
        self.v[sl] -= dbeta
        self.k[sl] += dbeta

    def flat(self, mb: MiniBatches) -> tuple[Tensor, ...]:
        """``dq, dk, dv [BH, T, F]``, ``dlr [BH, T]``."""
        return tuple(mb.flat(x) for x in (self.q, self.k, self.v, self.lr))


def _augmented_adjoint(d_W: Tensor | None, d_b: Tensor | None, like: Tensor, rows: int, cols: int) -> Tensor:
    """The adjoint ``[BH, rows + 1, cols]`` of augmented weights ``[W; b]`` from the upstream gradients of
    ``W`` and ``b`` (``None``: they reach no loss); ``like`` is any ``[BH, ...]`` tensor of the scan."""
    adjoint = like.new_zeros(like.shape[0], rows + 1, cols)
    if d_W is not None:
        adjoint[:, :rows] += d_W
    if d_b is not None:
        adjoint[:, rows] += d_b
    return adjoint


def _d_out(d_out: Tensor | None, mb: MiniBatches) -> Tensor:
    """The upstream gradient of the outputs, mini-batch-major ``[M, BH, K, F]``."""
    M, BH, K, F = mb.target.shape
    if d_out is None:
        return mb.target.new_zeros(M, BH, K, F)
    return d_out.reshape(BH, M, K, F).transpose(0, 1)


# --------------------------------------------------------------------------------------------- linear


def _linear_span(ch: _Chunk, sl: slice, W: Tensor, w_sq: Tensor):
    """Recompute a span from its first mini-batch's weights ``W [BH, F+1, F]``: the weights at each
    mini-batch's start ``[S, BH, F+1, F]``, the inner inputs ``z``, gradients ``g`` and the backward of
    ``g`` as a function of ``z``."""
    Ws, zs, gs, recs = [], [], [], []
    step = _t(ch.ka[sl] * ch.c[sl])  # [S, BH, F+1, K]
    for i, m in enumerate(range(sl.start, sl.stop)):
        Ws.append(W)
        z = torch.bmm(ch.ka[m], W)
        g, rec = ln_l2_grad_recorded(z, w_sq, ch.offset[m])
        zs.append(z), gs.append(g), recs.append(rec)
        W = torch.baddbmm(W, step[i], g, alpha=-1)
    z, g = torch.stack(zs), torch.stack(gs)
    recorded = tuple(torch.stack(parts) for parts in zip(*recs))
    return torch.stack(Ws), g, LnL2GradBackward.of(z, g, recorded, w_sq)


class LinearScan(torch.autograd.Function):
    """`dual.linear_scan` with the hand-written backward: ``(out, W', b')`` of whole mini-batches."""

    @staticmethod
    def forward(ctx, q, k, v, lr, tau, ln_w, ln_b, W, b, span: int):
        mb = MiniBatches.of(q, k, v, lr, tau.shape[0])
        out, (W_new, b_new), checkpoints = linear_scan(mb, tau, ln_w, ln_b, (W, b), span)
        ctx.save_for_backward(mb.kq, mb.target, mb.lr, tau, ln_w, ln_b, *checkpoints)
        ctx.span = span
        return out, W_new, b_new

    @staticmethod
    @first_order_backward
    def backward(ctx, d_out, d_W, d_b):
        kq, target, lrm, tau, ln_w, ln_b, *checkpoints = ctx.saved_tensors
        mb = MiniBatches(kq, target, lrm)
        M, BH, K, F = target.shape
        S = ctx.span
        ch = _Chunk.derive(mb, tau, ln_w, ln_b)
        d_out = _d_out(d_out, mb)
        grads = _Grads.start(d_out, ch, tau, ln_w)
        w_sq = ln_w * ln_w
        dW = _augmented_adjoint(d_W, d_b, checkpoints[0], F, F)  # of [W; b] after the last mini-batch
        for first in reversed(range(0, M, S)):
            sl = slice(first, min(M, first + S))
            dW = _linear_reverse(ch, sl, checkpoints[first // S], dW, d_out[sl], grads, tau, ln_w, ln_b, w_sq)
        return (*grads.flat(mb), grads.tau, grads.ln_w, grads.ln_b, dW[:, :F], dW[:, F], None)


def _linear_reverse(ch: _Chunk, sl: slice, W0: Tensor, dW: Tensor, d_out: Tensor, grads: _Grads, tau, ln_w, ln_b, w_sq):
    """The reverse pass over one span given the adjoint ``dW`` of the weights after it; returns the
    adjoint of the weights at its start and accumulates the input gradients into ``grads``."""
    Ws, g, inner = _linear_span(ch, sl, W0, w_sq)
    ka, qa, c = ch.ka[sl], ch.qa[sl], ch.c[sl]
    decay = ch.scale[sl] * ch.scores[sl]

    # the readout Z_bar = Q W + b - M G and the output LayerNorm, for the whole span
    z_bar = torch.matmul(qa, Ws) - torch.matmul(decay, g)
    dz_bar = grads.output_norm(d_out, z_bar, ln_w)
    grads.q[sl] += torch.matmul(dz_bar, _t(Ws[:, :, :-1]))
    d_scores = grads.decay(sl, ch, -torch.tril(torch.matmul(dz_bar, _t(g))), ch.scores[sl], tau)
    grads.q[sl] += torch.matmul(d_scores, ch.km[sl])
    grads.k[sl] += torch.matmul(_t(d_scores), ch.qm[sl])
    readout = torch.matmul(_t(qa), dz_bar)  # [S, BH, F+1, F]: the readout's share of each weight adjoint
    dg_readout = -torch.matmul(_t(decay), dz_bar)

    # the sequential part: only the weights' adjoints. At mini-batch i, dW is the adjoint of the
    # weights after it: dG = -M^T dZ_bar - c (K dW), then dW gains Q^T dZ_bar + K^T dZ
    dW_after, dzs, des = [], [], []
    for i, bwd in reversed(list(enumerate(inner.unbind()))):
        dW_after.append(dW)
        dg = torch.addcmul(dg_readout[i], c[i], torch.bmm(ka[i], dW), value=-1)
        dz, de = bwd(dg)
        dzs.append(dz), des.append(de)
        dW = torch.baddbmm(dW + readout[i], _t(ka[i]), dz)
    dW_after = torch.stack(dW_after[::-1])
    dz, de = torch.stack(dzs[::-1]), torch.stack(des[::-1])

    # what the loop's results give the inputs, for the whole span
    P = torch.matmul(g, _t(dW_after))  # [S, BH, K, F+1]: row j is dW' g_j
    d_ka = torch.matmul(dz, _t(Ws)) - c * P
    grads.k[sl] += d_ka[..., :-1]
    grads.step_weights(sl, ch, -(ka * P).sum(-1), tau)
    grads.target(sl, ch, de, inner.zhat, ln_w, ln_b)
    return dW


# ------------------------------------------------------------------------------------------------ mlp


class _Workspace:
    """Stacks reused span after span within one backward pass. Every span needs the same large stacks;
    allocated afresh, each would be page-faulted in again (glibc hands large freed blocks back to the
    system), which on a CPU costs more than the arithmetic that fills them."""

    def __init__(self, span: int, like: Tensor):
        self.span, self.like = span, like
        self.buffers: dict[str, Tensor] = {}

    def stack(self, name: str, n: int, *shape: int, extra: int = 0) -> Tensor:
        """``[n + extra, *shape]``, uninitialised, for ``n <= span``."""
        if name not in self.buffers:
            self.buffers[name] = self.like.new_empty(self.span + extra, *shape)
        return self.buffers[name][: n + extra]


@dataclass
class _MLPSpan:
    """A recomputed span of TTT-MLP, stacked ``[S, BH, ...]``: each mini-batch's start weights and its inner
    forward ``Xh = gelu(X1)``, ``X1 = K W1 + b1``, ``Z2 = Xh W2 + b2``, with what its backward needs."""

    W1: Tensor  # [S, BH, F+1, D] with the bias row
    W2: Tensor  # [S, BH, D, F]
    b2: Tensor  # [S, BH, 1, F]
    xh: Tensor  # [S, BH, K, D]
    slope: Tensor  # gelu'(X1)
    curvature: Tensor  # (G2 W2^T) gelu''(X1)
    g1: Tensor  # (G2 W2^T) gelu'(X1): the inner gradient w.r.t. X1
    g2: Tensor  # [S, BH, K, F] the inner gradient w.r.t. Z2
    inner: LnL2GradBackward  # G2 as a function of Z2


def _mlp_span(ch: _Chunk, sl: slice, weights, w_sq: Tensor, ws: _Workspace) -> _MLPSpan:
    """Recompute a span from its first mini-batch's weights. Only what the next weights need runs per
    mini-batch, writing the weights and the rows straight into the span's stacks; the rest is derived for
    the span at once."""
    S = sl.stop - sl.start
    W1s, W2s, b2s = (ws.stack(name, S, *w.shape) for name, w in zip(("W1", "W2", "b2"), weights))
    for stacked, w in zip((W1s, W2s, b2s), weights):
        stacked[0] = w
    BH, K, D, F = W1s.shape[1], ch.target.shape[2], W1s.shape[-1], W2s.shape[-1]
    x1, xh, slope, g2w, g1 = (ws.stack(name, S, BH, K, D) for name in ("x1", "xh", "slope", "g2w", "g1"))
    z2, g2, zhat, dy = (ws.stack(name, S, BH, K, F) for name in ("z2", "g2", "zhat", "dy"))
    mean, rstd = (ws.stack(name, S, BH, K, 1) for name in ("mean", "rstd"))
    step1 = _t(ch.ka[sl] * ch.c[sl])  # [S, BH, F+1, K]
    for i, m in enumerate(range(sl.start, sl.stop)):
        torch.bmm(ch.ka[m], W1s[i], out=x1[i])
        gelu_tanh_with_slope(x1[i], out=(xh[i], slope[i]))
        torch.baddbmm(b2s[i], xh[i], W2s[i], out=z2[i])
        ln_l2_grad_recorded(z2[i], w_sq, ch.offset[m], out=(g2[i], zhat[i], mean[i], rstd[i], dy[i]))
        torch.bmm(g2[i], _t(W2s[i]), out=g2w[i])
        torch.mul(g2w[i], slope[i], out=g1[i])
        if i + 1 < S:
            cg2 = g2[i] * ch.c[m]
            torch.baddbmm(W1s[i], step1[i], g1[i], alpha=-1, out=W1s[i + 1])
            torch.baddbmm(W2s[i], _t(xh[i]), cg2, alpha=-1, out=W2s[i + 1])
            torch.sub(b2s[i], cg2.sum(1, keepdim=True), out=b2s[i + 1])
    inner = LnL2GradBackward.of(z2, g2, (zhat, mean, rstd, dy), w_sq)
    return _MLPSpan(W1s, W2s, b2s, xh, slope, g2w.mul_(gelu_tanh_curvature(x1)), g1, g2, inner)


class MLPScan(torch.autograd.Function):
    """`dual.mlp_scan` with the hand-written backward: ``(out, W1', b1', W2', b2')`` of whole mini-batches."""

    @staticmethod
    def forward(ctx, q, k, v, lr, tau, ln_w, ln_b, W1, b1, W2, b2, span: int):
        mb = MiniBatches.of(q, k, v, lr, tau.shape[0])
        out, new, checkpoints = mlp_scan(mb, tau, ln_w, ln_b, (W1, b1, W2, b2), span)
        ctx.save_for_backward(mb.kq, mb.target, mb.lr, tau, ln_w, ln_b, *checkpoints)
        ctx.span = span
        return (out, *new)

    @staticmethod
    @first_order_backward
    def backward(ctx, d_out, d_W1, d_b1, d_W2, d_b2):
        kq, target, lrm, tau, ln_w, ln_b, *checkpoints = ctx.saved_tensors
        mb = MiniBatches(kq, target, lrm)
        M, BH, K, F = target.shape
        D = checkpoints[1].shape[1]
        S = ctx.span
        ch = _Chunk.derive(mb, tau, ln_w, ln_b)
        d_out = _d_out(d_out, mb)
        grads = _Grads.start(d_out, ch, tau, ln_w)
        w_sq = ln_w * ln_w
        ws = _Workspace(S, target)
        # adjoints of [W1; b1] and [W2; b2] after the last mini-batch
        dW1 = _augmented_adjoint(d_W1, d_b1, checkpoints[0], F, D)
        dW2 = _augmented_adjoint(d_W2, d_b2, checkpoints[0], D, F)
        for first in reversed(range(0, M, S)):
            sl = slice(first, min(M, first + S))
            sp = _mlp_span(ch, sl, checkpoints[3 * (first // S) : 3 * (first // S) + 3], w_sq, ws)
            dW1, dW2 = _mlp_reverse(ch, sl, sp, dW1, dW2, d_out[sl], grads, tau, ln_w, ln_b, ws)
        return (*grads.flat(mb), grads.tau, grads.ln_w, grads.ln_b, dW1[:, :F], dW1[:, F], dW2[:, :D], dW2[:, D], None)


def _mlp_reverse(ch: _Chunk, sl: slice, sp: _MLPSpan, dW1, dW2, d_out, grads: _Grads, tau, ln_w, ln_b, ws: _Workspace):
    """As `_linear_reverse`, through both layers of the inner MLP ``gelu(x W1 + b1) W2 + b2``: the readout
    for the whole span, then the adjoints of ``[W1; b1]`` and ``[W2; b2]`` mini-batch by mini-batch."""
    ka, qa, c, scale, scores1 = ch.ka[sl], ch.qa[sl], ch.c[sl], ch.scale[sl], ch.scores[sl]
    decay1 = scale * scores1

    # the readout H = gelu(Q W1 + b1 - M1 G1), Z_bar = H W2 + b2 - M2 G2, M2 = tril(tau lr^T) (H Xh^T + 1),
    # and the output LayerNorm, for the whole span
    h, h_slope = gelu_tanh_with_slope(torch.matmul(qa, sp.W1).sub_(torch.matmul(decay1, sp.g1)))
    scores2 = torch.matmul(h, _t(sp.xh)).add_(1)
    decay2 = scale * scores2
    z_bar = torch.matmul(h, sp.W2).add_(sp.b2).sub_(torch.matmul(decay2, sp.g2))
    dz_bar = grads.output_norm(d_out, z_bar, ln_w)
    d_decay2 = -torch.tril(torch.matmul(dz_bar, _t(sp.g2)))
    d_scores2 = grads.decay(sl, ch, d_decay2, scores2, tau)
    dh = torch.matmul(dz_bar, _t(sp.W2)).add_(torch.matmul(d_scores2, sp.xh)).mul_(h_slope)
    d_scores1 = grads.decay(sl, ch, -torch.tril(torch.matmul(dh, _t(sp.g1))), scores1, tau)
    # the readout's shares of the adjoints of the inner gradients
    dg1_readout = -torch.matmul(_t(decay1), dh)
    dg2_readout = -torch.matmul(_t(decay2), dz_bar)
    dxh_readout = torch.matmul(_t(d_scores2), h)  # the loop adds its terms in place
    c_g2 = c * sp.g2

    # Each mini-batch adds to the weights' adjoints one product of stacked rows: [W1; b1] gains
    # [K, 1; Q, 1]^T [dX1; dH], [W2; b2] gains [Xh, 1; H, 1; dG2w, 0]^T [dZ2; dZ_bar; G2]. The readout's
    # rows are filled in here, the loop writes the others in place.
    S, BH, K, D = sp.xh.shape
    F = sp.g2.shape[-1]
    rows1 = ws.stack("rows1", S, BH, 2 * K, D)  # [dX1; dH]
    rows1[:, :, K:] = dh
    left2 = ws.stack("left2", S, BH, 3 * K, D + 1)  # [Xh, 1; H, 1; dG2w, 0]
    left2[:, :, :K, :D], left2[:, :, K : 2 * K, :D], left2[:, :, : 2 * K, D], left2[:, :, 2 * K :, D] = sp.xh, h, 1, 0
    right2 = ws.stack("right2", S, BH, 3 * K, F)  # [dZ2; dZ_bar; G2]
    right2[:, :, K : 2 * K], right2[:, :, 2 * K :] = dz_bar, sp.g2
    xha = left2[:, :, :K]

    # the sequential part. Slot i + 1 of each adjoint stack holds the adjoint of the weights after
    # mini-batch i; the step W1' = W1 - (c K)^T G1, [W2; b2]' = [W2; b2] - [Xh, 1]^T (c G2) gives
    # dG1 = -M1^T dH - c u1 with u1 = K dW1', dG2 = -M2^T dZ_bar - c u2 with u2 = [Xh, 1] d[W2; b2]', and
    # dXh = dM2^T H - c G2 dW2'^T; then back through G1 = (G2 W2^T) gelu'(X1) and G2 = the LayerNorm-L2
    # gradient at Z2
    # (the adjoints of [W1; b1] are kept for the end, those of [W2; b2] are not: one runs in place)
    dW1s = ws.stack("dW1", S, *dW1.shape, extra=1)
    dW1s[S], dW2 = dW1, dW2.clone()
    u1s, u2s = ws.stack("u1", S, BH, K, D), ws.stack("u2", S, BH, K, F)
    des = []
    for i, inner in reversed(list(enumerate(sp.inner.unbind()))):
        dW1, W2 = dW1s[i + 1], sp.W2[i]
        u1 = torch.bmm(ka[i], dW1, out=u1s[i])
        u2 = torch.bmm(xha[i], dW2, out=u2s[i])
        dg1 = torch.addcmul(dg1_readout[i], c[i], u1, value=-1)
        dg2w = torch.mul(dg1, sp.slope[i], out=left2[i, :, 2 * K :, :D])
        dg2 = torch.addcmul(dg2_readout[i], c[i], u2, value=-1).baddbmm_(dg2w, W2)
        dz2, de = inner(dg2, out=right2[i, :, :K])
        dxh = dxh_readout[i].baddbmm_(c_g2[i], _t(dW2[:, :D]), alpha=-1).baddbmm_(dz2, _t(W2))
        torch.addcmul(dg1.mul_(sp.curvature[i]), dxh, sp.slope[i], out=rows1[i, :, :K])
        torch.baddbmm(dW1, _t(ch.kq[sl.start + i]), rows1[i], out=dW1s[i])
        dW2.baddbmm_(_t(left2[i]), right2[i])
        des.append(de)

    # what the loop's results give the inputs, for the whole span
    grads.step_weights(sl, ch, -(torch.linalg.vecdot(sp.g1, u1s) + torch.linalg.vecdot(sp.g2, u2s)), tau)
    # [S, BH, 2K, F] through K W1 and Q W1 (not the bias row's constant 1), as (W1 X^T)^T: the weights
    # then enter the product untransposed, which the CPU's batched product runs 1.5-2x faster
    d_kq = _t(torch.matmul(sp.W1[:, :, :F], _t(rows1)))
    d_kq[:, :, :K] -= c * _t(torch.matmul(dW1s[1:, :, :F], _t(sp.g1)))
    grads.q[sl] += d_kq[:, :, K:] + torch.matmul(d_scores1, ch.km[sl])
    grads.k[sl] += d_kq[:, :, :K] + torch.matmul(_t(d_scores1), ch.qm[sl])
    grads.target(sl, ch, torch.stack(des[::-1]), sp.inner.zhat, ln_w, ln_b)
    return dW1s[0].clone(), dW2  # dW1s[0] copied: the workspace is reused


def scan(q, k, v, lr, tau, ln_w, ln_b, params: Params, span: int = SPAN) -> tuple[Tensor, Params]:
    """Whole mini-batches from a boundary, differentiable with the hand-written backward: ``out [BH, T, F]``
    and the weights after them (``(W, b)``: TTT-Linear, ``(W1, b1, W2, b2)``: TTT-MLP)."""
    fn = MLPScan if len(params) == 4 else LinearScan
    out, *new = fn.apply(q, k, v, lr, tau, ln_w, ln_b, *params, span)
    return out, tuple(new)
