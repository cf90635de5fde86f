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
`fused`'s docstring); the readout's contribution to the weights' adjoints, ``Q^T dZ_bar``, enters
the loop through suffix sums over the span, computed up front.

Layout as in `dual`: ``q, k, v [BH, T, F]`` with ``T = M K``, ``lr [BH, T]``, ``tau [K]``, inner
LayerNorm ``ln_w, ln_b [BH, 1, F]``; mini-batch-major tensors are ``[M, BH, K, ...]``, a span's
``[S, BH, K, ...]``. The first layer's bias is folded into its weights (``[W; b]``, ``[F+1, ...]``)
and the k and q rows get a constant-1 column, as in `dual`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..ln import LnL2GradBackward, l2_target_offset, ln_l2_grad_recorded
from .dual import MiniBatches, Params, gelu_tanh_curvature, gelu_tanh_with_slope, linear_scan, mlp_scan

# Mini-batches between stored inner weights: the forward pass keeps ``M / SPAN`` copies of the
# weights per sequence; the backward pass holds one span's weights and activations at a time.
SPAN = 16


def _suffix(x: Tensor) -> Tensor:
    """``out[m] = sum_{m' > m} x[m']`` along the first dimension."""
    inclusive = x.flip(0).cumsum(0).flip(0)
    return torch.cat([inclusive[1:], torch.zeros_like(x[:1])])


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
    def backward(ctx, d_out, d_W, d_b):
        kq, target, lrm, tau, ln_w, ln_b, *checkpoints = ctx.saved_tensors
        mb = MiniBatches(kq, target, lrm)
        M, BH, K, F = target.shape
        S = ctx.span
        ch = _Chunk.derive(mb, tau, ln_w, ln_b)
        d_out = _d_out(d_out, mb)
        grads = _Grads.start(d_out, ch, tau, ln_w)
        w_sq = ln_w * ln_w
        # adjoint of the augmented weights [W; b] after the last mini-batch
        dW = checkpoints[0].new_zeros(checkpoints[0].shape)
        if d_W is not None:
            dW[:, :F] += d_W
        if d_b is not None:
            dW[:, F] += d_b
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


@dataclass
class _MLPStep:
    """One mini-batch of a recomputed span: its start weights and its inner forward."""

    W1: Tensor  # [BH, F+1, D] with the bias row
    W2: Tensor  # [BH, D, F]
    b2: Tensor  # [BH, 1, F]
    xh: Tensor  # [BH, K, D] gelu of the k rows' hidden pre-activation x1
    slope: Tensor  # gelu'(x1)
    g1: Tensor  # (g2 W2^T) gelu'(x1): the inner gradient w.r.t. x1
    g2: Tensor  # [BH, K, F] the inner gradient w.r.t. z2 = xh W2 + b2
    curvature: Tensor  # (g2 W2^T) gelu''(x1)
    inner: LnL2GradBackward  # g2 as a function of z2


def _mlp_span(ch: _Chunk, sl: slice, W1: Tensor, W2: Tensor, b2: Tensor, w_sq: Tensor) -> list[_MLPStep]:
    """Recompute a span from its first mini-batch's weights (TTT-MLP's weights are large: each
    mini-batch's reverse pass then runs on weights that stay in cache, rather than as one batched
    product over the span)."""
    steps = []
    for m in range(sl.start, sl.stop):
        x1 = torch.bmm(ch.ka[m], W1)
        xh, slope = gelu_tanh_with_slope(x1)
        z2 = torch.baddbmm(b2, xh, W2)
        g2, rec = ln_l2_grad_recorded(z2, w_sq, ch.offset[m])
        g2w = torch.bmm(g2, _t(W2))
        g1 = g2w * slope
        inner = LnL2GradBackward.of(z2, g2, rec, w_sq)
        steps.append(_MLPStep(W1, W2, b2, xh, slope, g1, g2, g2w * gelu_tanh_curvature(x1), inner))
        cg2 = g2 * ch.c[m]
        W1 = torch.baddbmm(W1, _t(ch.ka[m] * ch.c[m]), g1, alpha=-1)
        W2 = torch.baddbmm(W2, _t(xh), cg2, alpha=-1)
        b2 = b2 - cg2.sum(1, keepdim=True)
    return steps


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
    def backward(ctx, d_out, d_W1, d_b1, d_W2, d_b2):
        kq, target, lrm, tau, ln_w, ln_b, *checkpoints = ctx.saved_tensors
        mb = MiniBatches(kq, target, lrm)
        M, BH, K, F = target.shape
        S = ctx.span
        ch = _Chunk.derive(mb, tau, ln_w, ln_b)
        d_out = _d_out(d_out, mb)
        grads = _Grads.start(d_out, ch, tau, ln_w)
        w_sq = ln_w * ln_w
        dW1, dW2, db2 = (torch.zeros_like(c) for c in checkpoints[:3])  # adjoints after the last mini-batch
        if d_W1 is not None:
            dW1[:, :F] += d_W1
        if d_b1 is not None:
            dW1[:, F] += d_b1
        if d_W2 is not None:
            dW2 += d_W2
        if d_b2 is not None:
            db2 += d_b2.unsqueeze(1)
        adjoints = (dW1, dW2, db2)
        for first in reversed(range(0, M, S)):
            sl = slice(first, min(M, first + S))
            weights = checkpoints[3 * (first // S) : 3 * (first // S) + 3]
            adjoints = _mlp_reverse(ch, sl, weights, adjoints, d_out[sl], grads, tau, ln_w, ln_b, w_sq)
        dW1, dW2, db2 = adjoints
        return (*grads.flat(mb), grads.tau, grads.ln_w, grads.ln_b, dW1[:, :F], dW1[:, F], dW2, db2[:, 0], None)


def _mlp_reverse(ch: _Chunk, sl: slice, weights, adjoints, d_out: Tensor, grads: _Grads, tau, ln_w, ln_b, w_sq):
    """As `_linear_reverse`, through both layers of the inner MLP ``gelu(x W1 + b1) W2 + b2``, one
    mini-batch at a time."""
    steps = _mlp_span(ch, sl, *weights, w_sq)
    decay1 = ch.scale[sl] * ch.scores[sl]
    dW1, dW2, db2 = adjoints
    d_scores1, d_scales, dq, dk, dc, de2 = [], [], [], [], [], []
    for i, st in reversed(list(enumerate(steps))):
        m = sl.start + i
        ka, qa, c, scale = ch.ka[m], ch.qa[m], ch.c[m], ch.scale[m]
        # the readout: H = gelu(Q W1 + b1 - M1 G1), Z_bar = H W2 + b2 - M2 G2, M2 = tril(tau lr^T) (H Xh^T + 1)
        h, h_slope = gelu_tanh_with_slope(torch.baddbmm(torch.bmm(qa, st.W1), decay1[i], st.g1, alpha=-1))
        scores2 = torch.bmm(h, _t(st.xh)) + 1
        decay2 = scale * scores2
        z_bar = torch.baddbmm(torch.baddbmm(st.b2, h, st.W2), decay2, st.g2, alpha=-1)
        dz_bar = grads.output_norm(d_out[i], z_bar, ln_w)
        d_decay2 = -torch.tril(torch.bmm(dz_bar, _t(st.g2)))
        d_scores2 = d_decay2 * scale
        dh = torch.baddbmm(torch.bmm(dz_bar, _t(st.W2)), d_scores2, st.xh) * h_slope
        d_decay1 = -torch.tril(torch.bmm(dh, _t(st.g1)))
        d_scales.append(d_decay2 * scores2 + d_decay1 * ch.scores[m])
        d_scores1.append(d_decay1 * scale)
        # the end-of-mini-batch step, with the adjoints of the weights after it:
        # dG1 = -M1^T dH - c (K dW1'), dG2 = -M2^T dZ_bar - c (Xh dW2' + db2'), dXh = dM2^T H - c (G2 dW2'^T)
        u1 = torch.bmm(ka, dW1)
        u2 = torch.baddbmm(db2, st.xh, dW2)
        dc.append(torch.linalg.vecdot(st.g1, u1) + torch.linalg.vecdot(st.g2, u2))
        dg1 = torch.addcmul(-torch.bmm(_t(decay1[i]), dh), c, u1, value=-1)
        dg2 = torch.addcmul(-torch.bmm(_t(decay2), dz_bar), c, u2, value=-1)
        dxh = torch.addcmul(torch.bmm(_t(d_scores2), h), c, torch.bmm(st.g2, _t(dW2)), value=-1)
        dk_step = -c * torch.bmm(st.g1, _t(dW1))
        # G1 = (G2 W2^T) gelu'(X1), G2 the LayerNorm-L2 gradient at Z2 = Xh W2 + b2, Xh = gelu(K W1 + b1)
        dg2w = dg1 * st.slope
        dg2 = torch.baddbmm(dg2, dg2w, st.W2)
        dz2, de = st.inner(dg2)
        de2.append(de)
        dxh = torch.baddbmm(dxh, dz2, _t(st.W2))
        dx1 = torch.addcmul(dg1 * st.curvature, dxh, st.slope)
        dqk = torch.bmm(torch.cat([dh, dx1], dim=1), _t(st.W1))  # [BH, 2K, F+1]: through Q W1 and K W1
        K = dh.shape[1]
        dq.append(dqk[:, :K, :-1])
        dk.append(dqk[:, K:, :-1] + dk_step[..., :-1])
        dW1 = torch.baddbmm(torch.baddbmm(dW1, _t(qa), dh), _t(ka), dx1)
        dW2 = torch.baddbmm(torch.baddbmm(torch.baddbmm(dW2, _t(h), dz_bar), _t(dg2w), st.g2), _t(st.xh), dz2)
        db2 = db2 + (dz_bar + dz2).sum(1, keepdim=True)

    # the decay matrices and the step weights c, for the whole span
    stack = lambda xs: torch.stack(xs[::-1])  # noqa: E731
    d_scores1 = stack(d_scores1)
    grads.q[sl] += stack(dq) + torch.matmul(d_scores1, ch.km[sl])
    grads.k[sl] += stack(dk) + torch.matmul(_t(d_scores1), ch.qm[sl])
    d_scale = stack(d_scales)
    grads.tau += (d_scale * ch.lr[sl].unsqueeze(-2)).sum((0, 1, 3))
    grads.lr[sl] += (d_scale * tau.unsqueeze(-1)).sum(-2)
    grads.step_weights(sl, ch, -stack(dc), tau)
    grads.target(sl, ch, stack(de2), torch.stack([st.inner.zhat for st in steps]), ln_w, ln_b)
    return dW1, dW2, db2


def scan(q, k, v, lr, tau, ln_w, ln_b, params: Params, span: int = SPAN) -> tuple[Tensor, Params]:
    """Whole mini-batches from a boundary, differentiable with the hand-written backward: ``out [BH, T, F]``
    and the weights after them (``(W, b)``: TTT-Linear, ``(W1, b1, W2, b2)``: TTT-MLP)."""
    fn = MLPScan if len(params) == 4 else LinearScan
    out, *new = fn.apply(q, k, v, lr, tau, ln_w, ln_b, *params, span)
    return out, tuple(new)
