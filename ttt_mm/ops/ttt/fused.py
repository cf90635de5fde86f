"""TTT scans over whole mini-batches as Triton kernels (the CUDA default): TTT-Linear and TTT-MLP,
forward and backward.

One program per (batch row, head) walks the mini-batches in order with the inner weights ``W [F, F]``
and bias ``b [F]`` held on chip in float32, whatever the input dtype: each mini-batch costs a handful
of ``[K, F] x [F, F]`` products and row reductions, the mini-batch update in its dual form (`dual`).

Only the weights' recurrence is sequential; the outputs of a mini-batch need just the weights at its
start. So where rows are at most a third of the GPU's multiprocessors (`parallel_spans`) the forward
is two launches: one program per row runs the recurrence alone and stores the weights every ``CHECKPOINT``
mini-batches, then one program per (row, span) walks its span again from that checkpoint and writes
the outputs, all spans at once.

Memory for training: the forward pass stores the weights only every ``CHECKPOINT`` mini-batches.
The backward pass walks those spans from last to first; for each it recomputes and stashes the span's
weights, then runs the reverse pass mini-batch by mini-batch, carrying the adjoints of ``W`` and ``b``.
So a 64k-token sequence keeps ``4096 / CHECKPOINT`` weight copies per head instead of 4096.

The reverse pass of one mini-batch (``r`` the reciprocal std of a LayerNorm input row, ``Zh`` the
normalized row, ``e`` the upstream gradient of the inner loss, ``G = r (e - mean e - Zh mean(e Zh))``,
``c_j = tau_last lr_j``), given ``dO`` and the adjoints ``dW', db'`` of the weights after it:

    update   W' = W - K^T diag(c) G:   dG = -c (K dW' + db'),  dK = -c (G dW'^T),  dc = -(K . G dW'^T) - G . db'
    output   O = Q + LN(Zb):            LayerNorm backward, dQ = dO
    readout  Zb = Q W + b - M G:        dQ += dZb W^T, dW += Q^T dZb, dM = -tril(dZb G^T), dG -= M^T dZb
    decay    M = tril(tau lr^T (Q K^T + 1))
    gradient G(Z, e):                   de = r P dG (P the projection above), plus the terms through r and Zh
    inner    Z = K W + b

TTT-MLP runs the same steps through both layers: its readout is ``gelu(Q W1 + b1 - M1 G1) W2 + ...``,
and ``G1 = (G2 W2^T) gelu'(X1)`` brings in gelu's second derivative. Each derivation was checked
against autograd in float64 before it became a kernel; `tests/ops/test_fused.py` keeps checking it.

The kernels need ``K``, ``F`` (and TTT-MLP's hidden width ``D``) to be powers of two, at least 16
(the smallest Triton matrix product), and no larger than fits a GPU's shared memory (`supported`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ..first_order import first_order_backward

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch on Linux
    triton = None

# Mini-batches between the weight checkpoints that the forward stores (for the backward, and for its own
# second launch where `parallel_spans`). The kernels' counterpart of the PyTorch core's `backward.SPAN`, kept
# apart: here it sizes compiled tiles and scratch, there it is an argument a caller may change.
CHECKPOINT = 16
# What fits an H100's shared memory (232,448 bytes a program), measured by compiling for sm_90 offline (Triton
# 3.8, 16-byte aligned pointers as PyTorch allocates them; `tests/ops/test_kernels_fit.py` compiles the
# largest case of each kernel that `supported` admits, with the launch options below: every other has smaller
# tiles), in kB (a forward's largest of its single pass and its two launches):
# - TTT-Linear up to F = 128 and K = 32: forward / backward 82 / 153, in three-pass TF32 (float32
#   inputs) 164 / 180; its backward at K = 64 needs 360, and at F = 256 the forward alone is over 227.
# - TTT-MLP up to F = 64 with D <= 4F (the layers' D = 4F) and K x F <= 1024: the paper's 64 x 256 at
#   K = 16. Its backward holds W1, W2 and its intermediates as product operands; in single-pass TF32 the
#   compiler stages them in shared memory for Hopper's warpgroup products, 371 at 64 x 256, while
#   three-pass TF32 (float32 accuracy) takes 172 (forward 172; the backward 279 at K = 32). So TTT-MLPs
#   over F = 32 train in three-pass TF32; at 32 x 128 and K = 32 single-pass takes 58 / 131.
# Larger shapes run the PyTorch core.
MAX_K = 32
LINEAR_MAX_F = 128
MLP_MAX_F = 64
MLP_MAX_KF = 16 * 64
MLP_SINGLE_PASS_MAX_F = 32
# Launch options measured on an H200 (BENCHMARKS.md, "GPU kernels"; bf16, 12 heads of 64, 64k tokens). TTT-Linear's
# forward loads each mini-batch's inputs one step ahead itself: 9.9 ms in one pass at one stage (a scratch
# kernel of the same loop), against 10.6 with Triton's pipelining alone at three stages, 13.5 with neither,
# and 12.1 / 10.8 at one / three stages when the queries alone were loaded late. TTT-MLP's forward cannot
# (its three-pass training forward would then need 288 kB of shared memory) and runs a single pass best at
# three stages (65.8 ms against 68.5 at one). The two launches of `parallel_spans` run one stage (TTT-MLP
# 44.4 ms against 71.7 at three; TTT-Linear 7.8 against 8.0). The backward kernels use 8 warps
# (TTT-Linear: 44.7 ms against 48.4 with 4) and one stage: no load is software-pipelined ahead of the store
# it depends on (TTT-MLP's adjoints are re-read from global memory right after being written), and fewer
# stages hold less shared memory.
LINEAR_ONE_PASS_NUM_STAGES = 1
MLP_ONE_PASS_NUM_STAGES = 3
SPANS_NUM_STAGES = 1
BACKWARD_NUM_STAGES = 1
BACKWARD_NUM_WARPS = 8


def supported(q: Tensor, mini_batch_size: int, hidden: int | None = None) -> bool:
    """Whether the kernels can run these inputs: Triton present, shapes the kernels tile and fit."""

    def ok(n):
        return n >= 16 and n & (n - 1) == 0

    F = q.shape[-1]
    shapes = ok(F) and ok(mini_batch_size) and mini_batch_size <= MAX_K and (hidden is None or ok(hidden))
    fits = (
        F <= LINEAR_MAX_F
        if hidden is None
        else F <= MLP_MAX_F and hidden <= 4 * F and mini_batch_size * F <= MLP_MAX_KF
    )
    return triton is not None and shapes and fits and q.dtype != torch.float64


def precision(dtype: torch.dtype, cuda: bool, three_pass: bool = False) -> str:
    """The kernels' ``input_precision``: TF32 where the inputs are 16-bit anyway; three-pass TF32 on a GPU
    for float32 inputs (float32 accuracy on tensor cores; plain float32 products spill and crawl there)
    and where ``three_pass`` asks (a wide TTT-MLP in training); exact in the interpreter."""
    if dtype != torch.float32 and not three_pass:
        return "tf32"
    return "tf32x3" if cuda else "ieee"


def launch_options(dtype: torch.dtype, cuda: bool, F: int, K: int, hidden: int | None, training: bool) -> dict:
    """Compile-time sizes and options of a core's forward kernel, less the stages that its launches choose
    (`backward_options` derives the backward's). A wide TTT-MLP's training forward multiplies as its
    backward must (which recomputes its weights)."""
    three_pass = training and hidden is not None and F > MLP_SINGLE_PASS_MAX_F
    options = {"K": K, "F": F, "CKPT": CHECKPOINT, "EPS": 1e-6, "PREC": precision(dtype, cuda, three_pass)}
    if hidden is not None:  # the MLP kernels hold F x D tiles: more warps share them
        options.update(D=hidden, num_warps=8)
    return options


def backward_options(forward: dict) -> dict:
    """The backward kernel's options, from its forward's (`launch_options`)."""
    return {**forward, "num_warps": BACKWARD_NUM_WARPS, "num_stages": BACKWARD_NUM_STAGES}


def parallel_spans(q: Tensor) -> bool:
    """Whether the forward runs as two launches: the recurrence alone, one program per row, storing a
    checkpoint of the weights every `CHECKPOINT` mini-batches; then the outputs, one program per (row, span)
    from those checkpoints, in parallel. The recurrence is the sequential part: without the readout it
    takes 6.4 of a fused forward's 9.9 ms (H200, as above). Worth it while one program per row leaves
    most of the GPU idle, past that the readout's second pass through the weights is pure cost: on the
    H200's 132 multiprocessors, at 16k tokens, two launches were 1.40x as fast as a one-stage single pass
    with 24 rows (TTT-MLP 1.30x), 1.13x (1.03x) at 48 and 0.97x (0.81x) at 96 (a single pass gains 4-11%
    at its own stages, above). Always under Triton's interpreter, so that the CPU tests run the path GPUs
    take."""
    return not q.is_cuda or 3 * q.shape[0] <= torch.cuda.get_device_properties(q.device).multi_processor_count


if triton is not None:

    @triton.jit
    def _ln_rows(x, F: tl.constexpr, EPS: tl.constexpr):
        """Normalized rows of ``x`` and their reciprocal standard deviations."""
        xc = x - (tl.sum(x, 1) / F)[:, None]
        r = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / F + EPS)
        return xc * r[:, None], r

    @triton.jit
    def _ln_rows_bwd(d_xh, xh, r, F: tl.constexpr):
        """Gradient w.r.t. the rows ``x`` of ``d_xh``, the gradient w.r.t. ``xh = LN(x)`` (no affine part)."""
        return r[:, None] * (d_xh - (tl.sum(d_xh, 1) / F)[:, None] - xh * (tl.sum(d_xh * xh, 1) / F)[:, None])

    @triton.jit
    def _ln_l2_grad_bwd(dG, G, Zh, r, e, meZ, Km, Vm, gam, bet, F: tl.constexpr):
        """Backward of `_ln_l2_grad`: gradients w.r.t. ``Z``, ``V``, the ``K`` in the target, and the
        LayerNorm's weight and bias (summed over rows). ``G = r P e`` with the symmetric projection
        ``P = I - 11^T/F - Zh Zh^T/F``, and ``e`` depends on ``Zh``."""
        mdGZ = tl.sum(dG * Zh, 1) / F
        de = r[:, None] * (dG - (tl.sum(dG, 1) / F)[:, None] - Zh * mdGZ[:, None])
        dZh = -r[:, None] * (meZ[:, None] * dG + mdGZ[:, None] * e) + de * (gam * gam)[None, :]
        dr = tl.sum(dG * G, 1) / r
        dZ = _ln_rows_bwd(dZh, Zh, r, F) - (dr * r * r / F)[:, None] * Zh
        d_gam = tl.sum(de * (2.0 * gam[None, :] * Zh + bet[None, :] - (Vm - Km)), 0)
        dV = -de * gam[None, :]
        return dZ, dV, -dV, d_gam, tl.sum(de * gam[None, :], 0)

    @triton.jit
    def _per_head(lnw, lnb, tau, bh, K: tl.constexpr, F: tl.constexpr):
        """The inner LayerNorm of head ``bh``, the token scales, the last one, and the causal mask."""
        rk, rf = tl.arange(0, K), tl.arange(0, F)
        gam = tl.load(lnw + bh * F + rf).to(tl.float32)
        bet = tl.load(lnb + bh * F + rf).to(tl.float32)
        ta = tl.load(tau + rk).to(tl.float32)
        t_last = tl.load(tau + K - 1).to(tl.float32)
        return gam, bet, ta, t_last, rk[:, None] >= rk[None, :]

    @triton.jit
    def _offsets(bh, T, m, K: tl.constexpr, F: tl.constexpr):
        """Offsets of mini-batch ``m`` of row ``bh``, per token and per element."""
        tok = bh * T + m * K + tl.arange(0, K)
        return tok, tok[:, None] * F + tl.arange(0, F)[None, :]

    @triton.jit
    def _minibatch(q, k, v, lr, bh, T, m, K: tl.constexpr, F: tl.constexpr):
        """Mini-batch ``m`` of row ``bh`` in float32, and its offsets per token and per element."""
        tok, kf = _offsets(bh, T, m, K, F)
        Qm = tl.load(q + kf).to(tl.float32)
        Km = tl.load(k + kf).to(tl.float32)
        Vm = tl.load(v + kf).to(tl.float32)
        return Qm, Km, Vm, tl.load(lr + tok).to(tl.float32), tok, kf

    @triton.jit
    def _inner_inputs(k, v, lr, bh, T, m, K: tl.constexpr, F: tl.constexpr):
        """Mini-batch ``m``'s keys, values and step sizes as stored: TTT-Linear's forward loads them (and
        the queries) one mini-batch ahead and converts them where they are used, so that their latency
        overlaps a step's arithmetic."""
        tok, kf = _offsets(bh, T, m, K, F)
        return tl.load(k + kf), tl.load(v + kf), tl.load(lr + tok)

    @triton.jit
    def _span_bounds(M, n_ckpt, CKPT: tl.constexpr, SPANS: tl.constexpr):
        """The index of this program's row, the mini-batches it walks, and the weights it starts from: all of
        them from the initial state (program ``row``), or (``SPANS``) one span from that span's checkpoint
        (program ``(span, row)``: spans can outnumber the 65,535 programs a launch's second axis takes)."""
        if SPANS:
            span = tl.program_id(0)
            bh = tl.program_id(1).to(tl.int64)
            return bh, span * CKPT, tl.minimum(M, span * CKPT + CKPT), bh * n_ckpt + span
        else:
            bh = tl.program_id(0).to(tl.int64)
            return bh, 0, M, bh

    @triton.jit
    def _linear_readout(Qm, Km, L, W, b, G, ta, causal, F: tl.constexpr, EPS: tl.constexpr, PREC: tl.constexpr):
        """``Zb = Q W + b - M G`` normalized, with ``M = E (Q K^T + 1)``, ``E = tril(tau lr^T)``."""
        A = tl.dot(Qm, tl.trans(Km), input_precision=PREC)
        E = tl.where(causal, ta[:, None] * L[None, :], 0.0)
        Mm = E * (A + 1.0)
        Zb = tl.dot(Qm, W, input_precision=PREC) + b[None, :] - tl.dot(Mm, G, input_precision=PREC)
        Zbh, r2 = _ln_rows(Zb, F, EPS)
        return Zbh, r2, A, E, Mm

    @triton.jit
    def _inner_grad(Km, Vm, W, b, gam, bet, F: tl.constexpr, EPS: tl.constexpr, PREC: tl.constexpr):
        """Gradient of TTT-Linear's inner loss w.r.t. ``Z = K W + b`` per row, with what its backward needs."""
        return _ln_l2_grad(tl.dot(Km, W, input_precision=PREC) + b[None, :], Km, Vm, gam, bet, F, EPS)

    @triton.jit
    def _ln_l2_grad(Z, Km, Vm, gam, bet, F: tl.constexpr, EPS: tl.constexpr):
        """Gradient of ``0.5 ||LN(Z) - (V - K)||^2`` w.r.t. ``Z`` per row, with what its backward needs."""
        Zh, r = _ln_rows(Z, F, EPS)
        e = (gam[None, :] * Zh + bet[None, :] - (Vm - Km)) * gam[None, :]
        me = tl.sum(e, 1) / F
        meZ = tl.sum(e * Zh, 1) / F
        G = r[:, None] * (e - me[:, None] - Zh * meZ[:, None])
        return G, Zh, r, e, meZ

    @triton.jit
    def _linear_step(Km, G, L, t_last, W, b, PREC: tl.constexpr):
        """The end-of-mini-batch step: ``W -= K^T diag(tau_last lr) G``, ``b -= sum_j tau_last lr_j G_j``."""
        cG = G * (t_last * L)[:, None]
        return W - tl.dot(tl.trans(Km), cG, input_precision=PREC), b - tl.sum(cG, 0)

    @triton.jit
    def _linear_fwd(
        q,
        k,
        v,
        lr,
        tau,
        lnw,
        lnb,
        W0,
        b0,  # inputs
        out,
        Wn,
        bn,
        Wc,
        bc,  # outputs: tokens, final state, checkpoints (with SPANS: the checkpoints are inputs)
        M,
        n_ckpt,
        K: tl.constexpr,
        F: tl.constexpr,
        CKPT: tl.constexpr,
        SAVE: tl.constexpr,
        READOUT: tl.constexpr,
        SPANS: tl.constexpr,
        EPS: tl.constexpr,
        PREC: tl.constexpr,
    ):
        bh, m0, m1, start = _span_bounds(M, n_ckpt, CKPT, SPANS)
        rf = tl.arange(0, F)
        ff = rf[:, None] * F + rf[None, :]
        if SPANS:
            W = tl.load(Wc + start * F * F + ff)
            b = tl.load(bc + start * F + rf)
        else:
            W = tl.load(W0 + start * F * F + ff).to(tl.float32)
            b = tl.load(b0 + start * F + rf).to(tl.float32)
        gam, bet, ta, t_last, causal = _per_head(lnw, lnb, tau, bh, K, F)
        T = M * K
        Kn, Vn, Ln = _inner_inputs(k, v, lr, bh, T, m0, K, F)
        if READOUT:
            _, kf = _offsets(bh, T, m0, K, F)
            Qn = tl.load(q + kf)
        for m in range(m0, m1):
            ahead = tl.minimum(m + 1, m1 - 1)
            Kr, Vr, Lr = Kn, Vn, Ln
            Kn, Vn, Ln = _inner_inputs(k, v, lr, bh, T, ahead, K, F)
            if READOUT:
                Qr = Qn
                _, kf = _offsets(bh, T, ahead, K, F)
                Qn = tl.load(q + kf)
            if SAVE:
                if m % CKPT == 0:
                    c = bh * n_ckpt + m // CKPT
                    tl.store(Wc + c * F * F + ff, W)
                    tl.store(bc + c * F + rf, b)
            Km, Vm, L = Kr.to(tl.float32), Vr.to(tl.float32), Lr.to(tl.float32)
            G, Zh, r, e, meZ = _inner_grad(Km, Vm, W, b, gam, bet, F, EPS, PREC)
            if READOUT:
                tok, kf = _offsets(bh, T, m, K, F)
                Qm = Qr.to(tl.float32)
                Zbh, r2, A, E, Mm = _linear_readout(Qm, Km, L, W, b, G, ta, causal, F, EPS, PREC)
                tl.store(out + kf, (Qm + gam[None, :] * Zbh + bet[None, :]).to(out.dtype.element_ty))
            W, b = _linear_step(Km, G, L, t_last, W, b, PREC)
        if not SPANS:
            tl.store(Wn + bh * F * F + ff, W)
            tl.store(bn + bh * F + rf, b)

    @triton.jit
    def _gelu_tanh(x):
        """``gelu_tanh(x) = x * sigmoid(2u)``, ``u = sqrt(2/pi) (x + 0.044715 x^3)``, and its slope."""
        a: tl.constexpr = 1.5957691216057308  # 2 sqrt(2/pi)
        b: tl.constexpr = 1.5957691216057308 * 0.044715
        x2 = x * x
        s = tl.sigmoid(x * (a + b * x2))
        y = x * s
        return y, s + y * (1.0 - s) * (a + 3.0 * b * x2)

    @triton.jit
    def _gelu_curvature(x):
        """Second derivative of ``gelu_tanh``: ``s (1 - s) (2 u' + x (1 - 2 s) u'^2 + x u'')``."""
        a: tl.constexpr = 1.5957691216057308
        b: tl.constexpr = 1.5957691216057308 * 0.044715
        x2 = x * x
        s = tl.sigmoid(x * (a + b * x2))
        du = a + 3.0 * b * x2
        return s * (1.0 - s) * (2.0 * du + x * (1.0 - 2.0 * s) * du * du + 6.0 * b * x2)

    @triton.jit
    def _mlp_inner(Km, Vm, W1, b1, W2, b2, gam, bet, F: tl.constexpr, EPS: tl.constexpr, PREC: tl.constexpr):
        """TTT-MLP's inner gradients at the mini-batch's start weights: w.r.t. the hidden layer's input
        (``G1``) and the output (``G2``), with what their backward needs."""
        X1 = tl.dot(Km, W1, input_precision=PREC) + b1[None, :]
        Xh, S = _gelu_tanh(X1)
        G2, Zh, r, e, meZ = _ln_l2_grad(tl.dot(Xh, W2, input_precision=PREC) + b2[None, :], Km, Vm, gam, bet, F, EPS)
        G2W = tl.dot(G2, tl.trans(W2), input_precision=PREC)
        return G2W * S, G2, X1, Xh, S, G2W, Zh, r, e, meZ

    @triton.jit
    def _mlp_readout(
        Qm, Km, L, W1, b1, W2, b2, G1, G2, Xh, ta, causal, F: tl.constexpr, EPS: tl.constexpr, PREC: tl.constexpr
    ):
        """Both layers with the steps of the tokens up to each: ``H = gelu(Q W1 + b1 - M1 G1)``,
        ``Zb = H W2 + b2 - M2 G2`` normalized, ``M1 = E (Q K^T + 1)``, ``M2 = E (H Xh^T + 1)``."""
        E = tl.where(causal, ta[:, None] * L[None, :], 0.0)
        A1 = tl.dot(Qm, tl.trans(Km), input_precision=PREC)
        M1 = E * (A1 + 1.0)
        H1 = tl.dot(Qm, W1, input_precision=PREC) + b1[None, :] - tl.dot(M1, G1, input_precision=PREC)
        Hh, _ = _gelu_tanh(H1)
        A2 = tl.dot(Hh, tl.trans(Xh), input_precision=PREC)
        M2 = E * (A2 + 1.0)
        Zb = tl.dot(Hh, W2, input_precision=PREC) + b2[None, :] - tl.dot(M2, G2, input_precision=PREC)
        Zbh, r2 = _ln_rows(Zb, F, EPS)
        return Zbh, r2, E, A1, M1, H1, Hh, A2, M2

    @triton.jit
    def _mlp_load(W1p, b1p, W2p, b2p, j, F: tl.constexpr, D: tl.constexpr):
        """TTT-MLP weights number ``j`` of a ``[n, F, D], [n, D], [n, D, F], [n, F]`` set, in float32."""
        rf, rd = tl.arange(0, F), tl.arange(0, D)
        W1 = tl.load(W1p + j * F * D + rf[:, None] * D + rd[None, :]).to(tl.float32)
        W2 = tl.load(W2p + j * D * F + rd[:, None] * F + rf[None, :]).to(tl.float32)
        return W1, tl.load(b1p + j * D + rd).to(tl.float32), W2, tl.load(b2p + j * F + rf).to(tl.float32)

    @triton.jit
    def _mlp_store(W1p, b1p, W2p, b2p, j, W1, b1, W2, b2, F: tl.constexpr, D: tl.constexpr):
        """Store TTT-MLP weights as number ``j`` of a set laid out as in `_mlp_load`."""
        rf, rd = tl.arange(0, F), tl.arange(0, D)
        tl.store(W1p + j * F * D + rf[:, None] * D + rd[None, :], W1)
        tl.store(b1p + j * D + rd, b1)
        tl.store(W2p + j * D * F + rd[:, None] * F + rf[None, :], W2)
        tl.store(b2p + j * F + rf, b2)

    @triton.jit
    def _mlp_step(Km, Xh, G1, G2, L, t_last, W1, b1, W2, b2, PREC: tl.constexpr):
        """The end-of-mini-batch step of both layers: each moves by ``tau_last sum_j lr_j grad_j``."""
        cL = (t_last * L)[:, None]
        W1 -= tl.dot(tl.trans(Km), cL * G1, input_precision=PREC)
        W2 -= tl.dot(tl.trans(Xh), cL * G2, input_precision=PREC)
        return W1, b1 - tl.sum(cL * G1, 0), W2, b2 - tl.sum(cL * G2, 0)

    @triton.jit
    def _mlp_fwd(
        q,
        k,
        v,
        lr,
        tau,
        lnw,
        lnb,
        W1_0,
        b1_0,
        W2_0,
        b2_0,  # inputs
        out,
        W1n,
        b1n,
        W2n,
        b2n,
        W1c,
        b1c,
        W2c,
        b2c,  # outputs: tokens, final state, checkpoints (with SPANS: the checkpoints are inputs)
        M,
        n_ckpt,
        K: tl.constexpr,
        F: tl.constexpr,
        D: tl.constexpr,
        CKPT: tl.constexpr,
        SAVE: tl.constexpr,
        READOUT: tl.constexpr,
        SPANS: tl.constexpr,
        EPS: tl.constexpr,
        PREC: tl.constexpr,
    ):
        bh, m0, m1, start = _span_bounds(M, n_ckpt, CKPT, SPANS)
        if SPANS:
            W1, b1, W2, b2 = _mlp_load(W1c, b1c, W2c, b2c, start, F, D)
        else:
            W1, b1, W2, b2 = _mlp_load(W1_0, b1_0, W2_0, b2_0, start, F, D)
        gam, bet, ta, t_last, causal = _per_head(lnw, lnb, tau, bh, K, F)
        T = M * K
        for m in range(m0, m1):  # no loads one step ahead: they take the three-pass kernel over shared memory
            if SAVE:
                if m % CKPT == 0:
                    _mlp_store(W1c, b1c, W2c, b2c, bh * n_ckpt + m // CKPT, W1, b1, W2, b2, F, D)
            Kr, Vr, Lr = _inner_inputs(k, v, lr, bh, T, m, K, F)
            Km, Vm, L = Kr.to(tl.float32), Vr.to(tl.float32), Lr.to(tl.float32)
            G1, G2, X1, Xh, S, G2W, Zh, r, e, meZ = _mlp_inner(Km, Vm, W1, b1, W2, b2, gam, bet, F, EPS, PREC)
            if READOUT:
                tok, kf = _offsets(bh, T, m, K, F)
                Qm = tl.load(q + kf).to(tl.float32)
                Zbh, r2, E, A1, M1, H1, Hh, A2, M2 = _mlp_readout(
                    Qm, Km, L, W1, b1, W2, b2, G1, G2, Xh, ta, causal, F, EPS, PREC
                )
                tl.store(out + kf, (Qm + gam[None, :] * Zbh + bet[None, :]).to(out.dtype.element_ty))
            W1, b1, W2, b2 = _mlp_step(Km, Xh, G1, G2, L, t_last, W1, b1, W2, b2, PREC)
        if not SPANS:
            _mlp_store(W1n, b1n, W2n, b2n, bh, W1, b1, W2, b2, F, D)

    @triton.jit
    def _mlp_bwd(
        q,
        k,
        v,
        lr,
        tau,
        lnw,
        lnb,
        W1c,
        b1c,
        W2c,
        b2c,
        dout,  # inputs
        dq,
        dk,
        dv,
        dlr,
        dtau,
        dlnw,
        dlnb,
        dW1,
        db1,
        dW2,
        db2,  # outputs (dW1..db2 enter as the final state's adjoints)
        W1s,
        b1s,
        W2s,
        b2s,  # scratch: one span's weights
        M,
        n_ckpt,
        K: tl.constexpr,
        F: tl.constexpr,
        D: tl.constexpr,
        CKPT: tl.constexpr,
        EPS: tl.constexpr,
        PREC: tl.constexpr,
    ):
        """As `_linear_bwd`, through both layers. The adjoints of ``W1, W2`` stay in global memory
        (four ``F x D`` matrices would not fit in registers) and are updated in place."""
        bh = tl.program_id(0).to(tl.int64)
        rk, rf, rd = tl.arange(0, K), tl.arange(0, F), tl.arange(0, D)
        fd = rf[:, None] * D + rd[None, :]
        df = rd[:, None] * F + rf[None, :]
        gam, bet, ta, t_last, causal = _per_head(lnw, lnb, tau, bh, K, F)
        is_last = rk == K - 1
        db1_acc = tl.load(db1 + bh * D + rd)
        db2_acc = tl.load(db2 + bh * F + rf)
        d_gam = tl.zeros([F], dtype=tl.float32)
        d_bet = tl.zeros([F], dtype=tl.float32)
        d_tau = tl.zeros([K], dtype=tl.float32)
        T = M * K
        for back in range(n_ckpt):
            span = n_ckpt - 1 - back
            m0 = span * CKPT
            m1 = tl.minimum(M, m0 + CKPT)
            W1, b1, W2, b2 = _mlp_load(W1c, b1c, W2c, b2c, bh * n_ckpt + span, F, D)
            for m in range(m0, m1):  # recompute the span's weights at each mini-batch start
                _mlp_store(W1s, b1s, W2s, b2s, bh * CKPT + m - m0, W1, b1, W2, b2, F, D)
                _, Km, Vm, L, _, _ = _minibatch(q, k, v, lr, bh, T, m, K, F)
                G1, G2, X1, Xh, S, G2W, Zh, r, e, meZ = _mlp_inner(Km, Vm, W1, b1, W2, b2, gam, bet, F, EPS, PREC)
                W1, b1, W2, b2 = _mlp_step(Km, Xh, G1, G2, L, t_last, W1, b1, W2, b2, PREC)
            tl.debug_barrier()
            for back_m in range(m1 - m0):
                m = m1 - 1 - back_m
                W1, b1, W2, b2 = _mlp_load(W1s, b1s, W2s, b2s, bh * CKPT + m - m0, F, D)
                Qm, Km, Vm, L, tok, kf = _minibatch(q, k, v, lr, bh, T, m, K, F)
                dO = tl.load(dout + kf).to(tl.float32)
                G1, G2, X1, Xh, S, G2W, Zh, r, e, meZ = _mlp_inner(Km, Vm, W1, b1, W2, b2, gam, bet, F, EPS, PREC)
                Zbh, r2, E, A1, M1, H1, Hh, A2, M2 = _mlp_readout(
                    Qm, Km, L, W1, b1, W2, b2, G1, G2, Xh, ta, causal, F, EPS, PREC
                )
                cL = (t_last * L)[:, None]
                dW1n = tl.load(dW1 + bh * F * D + fd)  # adjoints of the weights after this mini-batch
                dW2n = tl.load(dW2 + bh * D * F + df)
                # the state update
                U1 = tl.dot(Km, dW1n, input_precision=PREC) + db1_acc[None, :]
                U2 = tl.dot(Xh, dW2n, input_precision=PREC) + db2_acc[None, :]
                dG1 = -cL * U1
                dG2 = -cL * U2
                dc = -tl.sum(G1 * U1, 1) - tl.sum(G2 * U2, 1)
                dK = -tl.dot(cL * G1, tl.trans(dW1n), input_precision=PREC)
                dXh = -tl.dot(cL * G2, tl.trans(dW2n), input_precision=PREC)
                dL = t_last * dc
                d_tau += tl.where(is_last, tl.sum(L * dc, 0), 0.0)
                # the output LayerNorm and the residual
                d_gam += tl.sum(dO * Zbh, 0)
                d_bet += tl.sum(dO, 0)
                dy = dO * gam[None, :]
                dZb = _ln_rows_bwd(dy, Zbh, r2, F)
                # second layer of the readout
                dHh = tl.dot(dZb, tl.trans(W2), input_precision=PREC)
                dW2m = tl.dot(tl.trans(Hh), dZb, input_precision=PREC)
                db2m = tl.sum(dZb, 0)
                dM2 = -tl.where(causal, tl.dot(dZb, tl.trans(G2), input_precision=PREC), 0.0)
                dG2 -= tl.dot(tl.trans(M2), dZb, input_precision=PREC)
                dE = dM2 * (A2 + 1.0)
                dA2 = dM2 * E
                dHh += tl.dot(dA2, Xh, input_precision=PREC)
                dXh += tl.dot(tl.trans(dA2), Hh, input_precision=PREC)
                # first layer of the readout
                _, slope_h = _gelu_tanh(H1)
                dH1 = dHh * slope_h
                dQ = dO + tl.dot(dH1, tl.trans(W1), input_precision=PREC)
                dW1m = tl.dot(tl.trans(Qm), dH1, input_precision=PREC)
                db1m = tl.sum(dH1, 0)
                dM1 = -tl.where(causal, tl.dot(dH1, tl.trans(G1), input_precision=PREC), 0.0)
                dG1 -= tl.dot(tl.trans(M1), dH1, input_precision=PREC)
                dE += dM1 * (A1 + 1.0)
                dA1 = dM1 * E
                dQ += tl.dot(dA1, Km, input_precision=PREC)
                dK += tl.dot(tl.trans(dA1), Qm, input_precision=PREC)
                d_tau += tl.sum(dE * L[None, :], 1)
                dL += tl.sum(dE * ta[:, None], 0)
                # G1 = (G2 W2^T) * gelu'(X1)
                P = dG1 * S
                dX1 = dG1 * G2W * _gelu_curvature(X1)
                dG2 += tl.dot(P, W2, input_precision=PREC)
                dW2m += tl.dot(tl.trans(P), G2, input_precision=PREC)
                # G2 = the LayerNorm-L2 gradient at Z2 = Xh W2 + b2
                dZ2, dV, dK_target, dg, db_ = _ln_l2_grad_bwd(dG2, G2, Zh, r, e, meZ, Km, Vm, gam, bet, F)
                dK += dK_target
                d_gam += dg
                d_bet += db_
                dXh += tl.dot(dZ2, tl.trans(W2), input_precision=PREC)
                dW2m += tl.dot(tl.trans(Xh), dZ2, input_precision=PREC)
                db2m += tl.sum(dZ2, 0)
                # the hidden layer's input X1 = K W1 + b1
                dX1 += dXh * S
                dK += tl.dot(dX1, tl.trans(W1), input_precision=PREC)
                dW1m += tl.dot(tl.trans(Km), dX1, input_precision=PREC)
                db1m += tl.sum(dX1, 0)
                tl.store(dW1 + bh * F * D + fd, dW1n + dW1m)
                tl.store(dW2 + bh * D * F + df, dW2n + dW2m)
                db1_acc += db1m
                db2_acc += db2m
                tl.store(dq + kf, dQ.to(dq.dtype.element_ty))
                tl.store(dk + kf, dK.to(dk.dtype.element_ty))
                tl.store(dv + kf, dV.to(dv.dtype.element_ty))
                tl.store(dlr + tok, dL.to(dlr.dtype.element_ty))
                tl.debug_barrier()
            tl.debug_barrier()
        tl.store(db1 + bh * D + rd, db1_acc)
        tl.store(db2 + bh * F + rf, db2_acc)
        tl.store(dlnw + bh * F + rf, d_gam)
        tl.store(dlnb + bh * F + rf, d_bet)
        tl.store(dtau + bh * K + rk, d_tau)

    @triton.jit
    def _linear_bwd(
        q,
        k,
        v,
        lr,
        tau,
        lnw,
        lnb,
        Wc,
        bc,
        dout,  # inputs
        dq,
        dk,
        dv,
        dlr,
        dtau,
        dlnw,
        dlnb,
        dW_io,
        db_io,  # outputs (dW_io, db_io enter as the final state's adjoints)
        Ws,
        bs,  # scratch: one span's weights
        M,
        n_ckpt,
        K: tl.constexpr,
        F: tl.constexpr,
        CKPT: tl.constexpr,
        EPS: tl.constexpr,
        PREC: tl.constexpr,
    ):
        bh = tl.program_id(0).to(tl.int64)
        rk, rf = tl.arange(0, K), tl.arange(0, F)
        ff = rf[:, None] * F + rf[None, :]
        gam, bet, ta, t_last, causal = _per_head(lnw, lnb, tau, bh, K, F)
        is_last = rk == K - 1
        dW = tl.load(dW_io + bh * F * F + ff)
        db = tl.load(db_io + bh * F + rf)
        d_gam = tl.zeros([F], dtype=tl.float32)
        d_bet = tl.zeros([F], dtype=tl.float32)
        d_tau = tl.zeros([K], dtype=tl.float32)
        T = M * K
        for back in range(n_ckpt):
            span = n_ckpt - 1 - back
            m0 = span * CKPT
            m1 = tl.minimum(M, m0 + CKPT)
            W = tl.load(Wc + (bh * n_ckpt + span) * F * F + ff)
            b = tl.load(bc + (bh * n_ckpt + span) * F + rf)
            for m in range(m0, m1):  # recompute the span's weights at each mini-batch start
                tl.store(Ws + (bh * CKPT + m - m0) * F * F + ff, W)
                tl.store(bs + (bh * CKPT + m - m0) * F + rf, b)
                _, Km, Vm, L, _, _ = _minibatch(q, k, v, lr, bh, T, m, K, F)
                G, Zh, r, e, meZ = _inner_grad(Km, Vm, W, b, gam, bet, F, EPS, PREC)
                W, b = _linear_step(Km, G, L, t_last, W, b, PREC)
            tl.debug_barrier()
            for back_m in range(m1 - m0):
                m = m1 - 1 - back_m
                W = tl.load(Ws + (bh * CKPT + m - m0) * F * F + ff)
                b = tl.load(bs + (bh * CKPT + m - m0) * F + rf)
                Qm, Km, Vm, L, tok, kf = _minibatch(q, k, v, lr, bh, T, m, K, F)
                dO = tl.load(dout + kf).to(tl.float32)
                # recompute the mini-batch
                G, Zh, r, e, meZ = _inner_grad(Km, Vm, W, b, gam, bet, F, EPS, PREC)
                Zbh, r2, A, E, Mm = _linear_readout(Qm, Km, L, W, b, G, ta, causal, F, EPS, PREC)
                c = t_last * L
                # the state update
                P = tl.dot(G, tl.trans(dW), input_precision=PREC)  # row j: dW' G_j
                dc = -tl.sum(Km * P, 1) - tl.sum(G * db[None, :], 1)
                dK = -c[:, None] * P
                dG = -c[:, None] * (tl.dot(Km, dW, input_precision=PREC) + db[None, :])
                dL = t_last * dc
                d_tau += tl.where(is_last, tl.sum(L * dc, 0), 0.0)
                # the output LayerNorm and the residual
                d_gam += tl.sum(dO * Zbh, 0)
                d_bet += tl.sum(dO, 0)
                dZbh = dO * gam[None, :]
                dZb = _ln_rows_bwd(dZbh, Zbh, r2, F)
                dQ = dO + tl.dot(dZb, tl.trans(W), input_precision=PREC)
                dWm = tl.dot(tl.trans(Qm), dZb, input_precision=PREC)
                dbm = tl.sum(dZb, 0)
                dM = -tl.where(causal, tl.dot(dZb, tl.trans(G), input_precision=PREC), 0.0)
                dG -= tl.dot(tl.trans(Mm), dZb, input_precision=PREC)
                # the decay matrix
                dE = dM * (A + 1.0)
                dA = dM * E
                d_tau += tl.sum(dE * L[None, :], 1)
                dL += tl.sum(dE * ta[:, None], 0)
                dQ += tl.dot(dA, Km, input_precision=PREC)
                dK += tl.dot(tl.trans(dA), Qm, input_precision=PREC)
                # the inner gradient G(Z, e)
                dZ, dV, dK_target, dg, db_ = _ln_l2_grad_bwd(dG, G, Zh, r, e, meZ, Km, Vm, gam, bet, F)
                dK += dK_target
                d_gam += dg
                d_bet += db_
                # the inner model's input
                dK += tl.dot(dZ, tl.trans(W), input_precision=PREC)
                dWm += tl.dot(tl.trans(Km), dZ, input_precision=PREC)
                dbm += tl.sum(dZ, 0)
                dW += dWm
                db += dbm
                tl.store(dq + kf, dQ.to(dq.dtype.element_ty))
                tl.store(dk + kf, dK.to(dk.dtype.element_ty))
                tl.store(dv + kf, dV.to(dv.dtype.element_ty))
                tl.store(dlr + tok, dL.to(dlr.dtype.element_ty))
            tl.debug_barrier()
        tl.store(dW_io + bh * F * F + ff, dW)
        tl.store(db_io + bh * F + rf, db)
        tl.store(dlnw + bh * F + rf, d_gam)
        tl.store(dlnb + bh * F + rf, d_bet)
        tl.store(dtau + bh * K + rk, d_tau)


def _on(x: Tensor):
    """Launch on ``x``'s GPU (Triton launches on the current device otherwise)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


class _Scan(torch.autograd.Function):
    """``(out, *params')`` of whole mini-batches for either core; inputs ``q, k, v [BH, T, F]``,
    ``lr [BH, T]``, ``tau [K]``, ``ln_w, ln_b [BH, F]`` and the inner weights, ``(W, b)`` or
    ``(W1, b1, W2, b2)``. Both cores' kernels take the same arguments in the same order."""

    @staticmethod
    def forward(ctx, q, k, v, lr, tau, ln_w, ln_b, *params):
        q, k, v, lr, ln_w, ln_b = (x.contiguous() for x in (q, k, v, lr, ln_w, ln_b))
        params = tuple(p.float().contiguous() for p in params)
        tau = tau.float().contiguous()
        BH, T, F = q.shape
        mlp = len(params) == 4
        fwd, bwd = (_mlp_fwd, _mlp_bwd) if mlp else (_linear_fwd, _linear_bwd)
        save = any(ctx.needs_input_grad)
        hidden = params[0].shape[-1] if mlp else None
        sizes = launch_options(q.dtype, q.is_cuda, F, tau.shape[0], hidden, save)
        M = T // sizes["K"]
        n_ckpt = triton.cdiv(M, CHECKPOINT)
        out = torch.empty_like(q)
        new = tuple(torch.empty_like(p) for p in params)
        spans = n_ckpt > 1 and parallel_spans(q)
        ckpts = tuple(p.new_empty(BH, n_ckpt, *p.shape[1:]) for p in params) if save or spans else params
        args = (q, k, v, lr, tau, ln_w, ln_b, *params, out, *new, *ckpts, M, n_ckpt)
        with _on(q):
            if spans:
                fwd[(BH,)](*args, SAVE=True, READOUT=False, SPANS=False, num_stages=SPANS_NUM_STAGES, **sizes)
                fwd[(n_ckpt, BH)](*args, SAVE=False, READOUT=True, SPANS=True, num_stages=SPANS_NUM_STAGES, **sizes)
            else:
                stages = MLP_ONE_PASS_NUM_STAGES if mlp else LINEAR_ONE_PASS_NUM_STAGES
                fwd[(BH,)](*args, SAVE=save, READOUT=True, SPANS=False, num_stages=stages, **sizes)
        if save:
            ctx.save_for_backward(q, k, v, lr, tau, ln_w, ln_b, *ckpts)
            ctx.bwd, ctx.sizes, ctx.M = bwd, sizes, M
        return (out, *new)

    @staticmethod
    @first_order_backward
    def backward(ctx, d_out, *d_new):
        q, k, v, lr, tau, ln_w, ln_b, *ckpts = ctx.saved_tensors
        BH, K, F, n_ckpt = q.shape[0], tau.shape[0], q.shape[-1], ckpts[0].shape[1]
        d_out = d_out.contiguous() if d_out is not None else torch.zeros_like(q)
        # the kernel updates these in place: they enter as the final state's adjoints, leave as the initial's
        grads = [
            d.float().clone(memory_format=torch.contiguous_format) if d is not None else torch.zeros_like(c[:, 0])
            for d, c in zip(d_new, ckpts)
        ]
        dq, dk, dv, dlr = (torch.empty_like(x) for x in (q, k, v, lr))
        dtau = tau.new_empty(BH, K)
        dlnw, dlnb = (x.new_empty(BH, F, dtype=torch.float32) for x in (ln_w, ln_b))
        scratch = tuple(c.new_empty(BH, CHECKPOINT, *c.shape[2:]) for c in ckpts)
        with _on(q):
            ctx.bwd[(BH,)](
                q,
                k,
                v,
                lr,
                tau,
                ln_w,
                ln_b,
                *ckpts,
                d_out,
                dq,
                dk,
                dv,
                dlr,
                dtau,
                dlnw,
                dlnb,
                *grads,
                *scratch,
                ctx.M,
                n_ckpt,
                **backward_options(ctx.sizes),
            )
        return (dq, dk, dv, dlr, dtau.sum(0), dlnw.to(ln_w.dtype), dlnb.to(ln_b.dtype), *grads)


def scan(
    q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tau: Tensor, ln_w: Tensor, ln_b: Tensor, params: tuple[Tensor, ...]
):
    """Whole mini-batches from a boundary with the Triton kernels of the core that ``params`` belong
    to (``(W, b)``: TTT-Linear, ``(W1, b1, W2, b2)``: TTT-MLP): ``out [BH, T, F]`` in ``q``'s dtype
    and the float32 weights after them. ``T`` must be a positive multiple of ``K = len(tau)``."""
    if q.shape[1] == 0 or q.shape[1] % tau.shape[0]:
        raise ValueError(f"the kernels scan whole mini-batches of {tau.shape[0]}; got {q.shape[1]} tokens")
    out, *new = _Scan.apply(q, k, v, lr, tau, ln_w, ln_b, *params)
    return out, tuple(new)
