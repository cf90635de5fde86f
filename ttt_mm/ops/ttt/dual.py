"""TTT-Linear and TTT-MLP cores in the mini-batch dual form: the public entry points and the plain
PyTorch path (the default everywhere but CUDA, where TTT-Linear's whole mini-batches go to `fused`).

Everything that does not depend on the inner weights is computed for all mini-batches at once;
the sequential scan over mini-batches runs only the few batched matrix products and fused
LayerNorm kernels that need the current weights. That keeps the per-op overhead, which dominates a
naive scan on a CPU, at about six kernels per mini-batch for TTT-Linear.

Layout inside this module: batch and heads are flattened to one leading dimension ``BH``.
Shapes: ``q, k, v [BH, T, F]``, ``lr [BH, T]``, ``tau [n]`` (the token scales of the tokens at hand),
inner LayerNorm ``ln_w, ln_b [BH, 1, F]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..ln import l2_target_offset, layer_norm, ln_l2_grad
from . import fused
from .state import TTTState

Params = tuple[Tensor, ...]

# Mini-batches per vectorised scan. Longer sequences are scanned chunk by chunk: the per-chunk
# temporaries stay a few MiB, are reused from the allocator instead of being freshly page-faulted
# (which made the cost per token grow with T), and inference memory stays flat beyond the outputs.
SCAN_CHUNK = 128


# gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3). The sigmoid
# form is the same function and runs about 3x faster than tanh on a CPU, where gelu sits in the scan.
_GELU_A = 2.0 * math.sqrt(2.0 / math.pi)
_GELU_B = _GELU_A * 0.044715


def gelu_tanh(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x * (_GELU_A + _GELU_B * (x * x)))


def gelu_tanh_with_slope(x: Tensor) -> tuple[Tensor, Tensor]:
    """``gelu_tanh(x)`` and its derivative, sharing the sigmoid."""
    x2 = x * x
    s = torch.sigmoid(x * (_GELU_A + _GELU_B * x2))
    y = x * s
    return y, s + y * (1 - s) * (_GELU_A + 3 * _GELU_B * x2)


def _sub_product(W: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``W - a @ b``, in place when nothing needs gradients (``W`` is then a private copy)."""
    if torch.is_grad_enabled():
        return torch.baddbmm(W, a, b, alpha=-1)
    return W.baddbmm_(a, b, alpha=-1)


def _decay_matrix(q: Tensor, k: Tensor, lr: Tensor, tau: Tensor) -> Tensor:
    """``tril(tau_i * lr_j * (q_i . k_j + 1))``: how much token j's gradient moves token i's output.

    The ``+ 1`` is the bias, an input that is always one. Works on any leading dims: ``q, k [..., n, F]``,
    ``lr [..., n]``, ``tau [n]``.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) + 1
    return torch.tril(scores * lr.unsqueeze(-2) * tau.unsqueeze(-1))


# --------------------------------------------------------------------------------------------- linear


def _linear_partial(q, k, v, lr, tau, ln_w, ln_b, state: TTTState, K: int):
    """Any run of ``n <= K - pos`` tokens inside one mini-batch, continuing ``state``."""
    (W, b), (sW, sb), pos = state.params, state.grads, state.pos
    z = torch.baddbmm(b.unsqueeze(1), k, W)
    g = ln_l2_grad(z, ln_w * ln_w, l2_target_offset(v - k, ln_w, ln_b))  # [BH, n, F]
    decay = _decay_matrix(q, k, lr, torch.ones_like(tau))  # tau applied below, after the prior sums
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


def _scan_inputs(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, K: int):
    """Mini-batch-major views ``qm, km, vm [M, BH, K, F]`` and ``lrm [M, BH, K]``, and the
    contiguous inputs of each scan step, ``kq [M, BH, 2K, F+1]``: the k rows, then the q rows,
    each with a constant-1 column that folds the inner bias into the weights."""
    BH, T, F = q.shape
    M = T // K
    qm, km, vm = (x.reshape(BH, M, K, F).transpose(0, 1) for x in (q, k, v))
    lrm = lr.reshape(BH, M, K).transpose(0, 1)
    kq = q.new_empty(M, BH, 2 * K, F + 1)
    kq[:, :, :K, :F] = km
    kq[:, :, K:, :F] = qm
    kq[..., F] = 1
    return qm, km, vm, lrm, kq


def _linear_scan(q, k, v, lr, tau, ln_w, ln_b, state: TTTState, K: int):
    """``M`` whole mini-batches starting at a boundary (``state.pos == 0``).

    The bias is folded into the weights (``W_aug = [W; b]``, inputs get a constant 1), and each step
    processes the mini-batch's k rows and q rows in one product; the q rows get a zero target and a
    zero decay column, so only views are taken inside the loop.
    """
    (W, b), grads = state.params, state.grads
    BH, T, F = q.shape
    M = T // K
    qm, km, vm, lrm, kq = _scan_inputs(q, k, v, lr, K)
    offset = q.new_empty(M, BH, 2 * K, F)
    offset[:, :, :K] = l2_target_offset(vm - km, ln_w, ln_b)
    offset[:, :, K:] = 0
    step = (kq[:, :, :K] * (tau[-1] * lrm).unsqueeze(-1)).transpose(-1, -2).contiguous()  # W -= step @ g_k
    decay = q.new_empty(M, BH, K, 2 * K)  # how much each k row's gradient moves each q row's output
    decay[..., :K] = _decay_matrix(qm, km, lrm, tau)
    decay[..., K:] = 0
    w_sq = ln_w * ln_w

    W = torch.cat([W, b.unsqueeze(1)], dim=1)  # [BH, F+1, F], a new tensor: safe to update in place
    z_bar = []
    for m in range(M):
        x = torch.bmm(kq[m], W)  # k rows: z at the start weights; q rows: q W + b
        g = ln_l2_grad(x, w_sq, offset[m])  # q rows: finite, unused
        z_bar.append(torch.baddbmm(x[:, K:], decay[m], g, alpha=-1))
        W = _sub_product(W, step[m], g[:, :K])
    out = qm + layer_norm(torch.stack(z_bar), ln_w, ln_b)  # [M, BH, K, F]
    return out.transpose(0, 1).reshape(BH, T, F), TTTState((W[:, :F], W[:, F]), grads, 0)


# ------------------------------------------------------------------------------------------------ mlp


def _mlp_partial(q, k, v, lr, tau, ln_w, ln_b, state: TTTState, K: int):
    """Any run of ``n <= K - pos`` tokens inside one mini-batch, continuing ``state``."""
    (W1, b1, W2, b2), (sW1, sb1, sW2, sb2), pos = state.params, state.grads, state.pos
    ones = torch.ones_like(tau)
    xh, slope = gelu_tanh_with_slope(torch.baddbmm(b1.unsqueeze(1), k, W1))
    z2 = torch.baddbmm(b2.unsqueeze(1), xh, W2)
    g2 = ln_l2_grad(z2, ln_w * ln_w, l2_target_offset(v - k, ln_w, ln_b))
    g1 = torch.bmm(g2, W2.transpose(1, 2)) * slope

    seen1 = torch.baddbmm(sb1.unsqueeze(1), q, sW1) + torch.bmm(_decay_matrix(q, k, lr, ones), g1)
    h = gelu_tanh(torch.baddbmm(b1.unsqueeze(1), q, W1) - tau[:, None] * seen1)
    seen2 = torch.baddbmm(sb2.unsqueeze(1), h, sW2) + torch.bmm(_decay_matrix(h, xh, lr, ones), g2)
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


def _mlp_scan(q, k, v, lr, tau, ln_w, ln_b, state: TTTState, K: int):
    """``M`` whole mini-batches starting at a boundary (``state.pos == 0``). As in `_linear_scan`,
    ``b1`` is folded into ``W1`` and the k and q rows share the first product."""
    (W1, b1, W2, b2), grads = state.params, state.grads
    BH, T, F = q.shape
    M = T // K
    qm, km, vm, lrm, kq = _scan_inputs(q, k, v, lr, K)
    decay1 = _decay_matrix(qm, km, lrm, tau).contiguous()  # [M, BH, K, K]
    scale = torch.tril(tau.unsqueeze(-1) * lrm.unsqueeze(-2)).contiguous()  # tau_i * lr_j, [M, BH, K, K]
    offset = l2_target_offset(vm - km, ln_w, ln_b).contiguous()  # [M, BH, K, F]
    e_last = (tau[-1] * lrm).unsqueeze(-1).contiguous()  # [M, BH, K, 1]
    step1 = (kq[:, :, :K] * e_last).transpose(-1, -2).contiguous()  # [M, BH, F+1, K]
    w_sq = ln_w * ln_w

    W1 = torch.cat([W1, b1.unsqueeze(1)], dim=1)  # [BH, F+1, D], a new tensor: safe to update in place
    W2, b2 = W2.clone(), b2.unsqueeze(1).clone()  # [BH, D, F], [BH, 1, F]
    ones_row = q.new_ones(BH, 1, K)
    outs = []
    for m in range(M):
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
    return out.transpose(0, 1).reshape(BH, T, F), TTTState((W1[:, :F], W1[:, F], W2, b2.squeeze(1)), grads, 0)


# --------------------------------------------------------------------------------------------- driver

Step = Callable[..., tuple[Tensor, TTTState]]
KERNELS = (None, "torch", "triton")


def _fused_wanted(kernel: str | None, q: Tensor, K: int, params: Params, training: bool) -> bool:
    """``kernel=None`` picks Triton on CUDA where it applies; ``"triton"`` insists (e.g. on the CPU under
    ``TRITON_INTERPRET=1``), ``"torch"`` never uses it."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    hidden = params[0].shape[-1] if len(params) == 4 else None
    usable = fused.supported(q, K, hidden, training)
    if kernel == "triton" and not usable:
        raise ValueError(
            "kernel='triton' needs Triton, 16/32-bit floats and a head dim, mini-batch size (and MLP width) that "
            f"are powers of two >= 16 (and, to train TTT-MLP, head dim x MLP width <= {fused.MLP_BACKWARD_MAX_FD}); "
            f"got {q.dtype}, head dim {q.shape[-1]}, K={K}, MLP width {hidden}"
        )
    return kernel == "triton" or (kernel is None and usable and q.is_cuda)


def _run(partial: Step, scan: Step, q, k, v, lr, params: Params, ln_weight, ln_bias, K, token_scale, state, kernel):
    """Shared driver: check shapes, then finish the open mini-batch, scan the whole ones and start the
    next, so that any split of a sequence gives the same result. The PyTorch steps run in float32/64;
    the fused scan reads the inputs in their own dtype."""
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must all be [B, H, T, F]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, T, F = q.shape
    if lr.shape != (B, H, T):
        raise ValueError(f"lr must be [B, H, T] = {(B, H, T)}; got {tuple(lr.shape)}")
    if ln_weight.shape != (H, F) or ln_bias.shape != (H, F):
        raise ValueError(f"ln_weight and ln_bias must be [H, F] = {(H, F)}; got {tuple(ln_weight.shape)}")
    if token_scale is not None and token_scale.shape != (K,):
        raise ValueError(f"token_scale must be [mini_batch_size] = [{K}]; got {tuple(token_scale.shape)}")
    if state is not None and not 0 <= state.pos < K:
        raise ValueError(f"state.pos must be in [0, {K}); got {state.pos}")

    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    with torch.autocast(q.device.type, enabled=False):
        if token_scale is None:
            tau = 1.0 / torch.arange(1, K + 1, device=q.device, dtype=dtype)
        else:
            tau = token_scale.to(dtype).clamp_min(0)
        if state is None:
            state = TTTState.initial(params, B, dtype)
        inputs = (q, k, v, lr, ln_weight, ln_bias, tau, *state.params, *state.grads)
        training = torch.is_grad_enabled() and any(x.requires_grad for x in inputs)
        use_fused = _fused_wanted(kernel, q, K, state.params, training)

        def flat(x):
            return x.reshape(B * H, *x.shape[2:])

        q_, k_, v_, lr_ = (flat(x) for x in (q, k, v, lr))  # the PyTorch steps cast their slices

        def seq(s):
            return tuple(x[:, s].to(dtype) for x in (q_, k_, v_, lr_))

        ln_w = ln_weight.to(dtype).repeat(B, 1).unsqueeze(1)  # [BH, 1, F], head = row % H
        ln_b = ln_bias.to(dtype).repeat(B, 1).unsqueeze(1)
        inner = TTTState(
            tuple(flat(p.to(dtype)) for p in state.params), tuple(flat(g.to(dtype)) for g in state.grads), state.pos
        )

        outs, t = [], 0
        if inner.pos > 0:  # finish the mini-batch an earlier call left open
            n = min(K - inner.pos, T)
            out, inner = partial(*seq(slice(0, n)), tau[inner.pos : inner.pos + n], ln_w, ln_b, inner, K)
            outs.append(out.to(q.dtype))
            t = n
        if use_fused and T - t >= K:  # all whole mini-batches in one launch, inputs in their own dtype
            s = slice(t, t + (T - t) // K * K)
            out, params = fused.scan(q_[:, s], k_[:, s], v_[:, s], lr_[:, s], tau, ln_w[:, 0], ln_b[:, 0], inner.params)
            inner = TTTState(params, inner.grads, 0)
            outs.append(out)
            t = s.stop
        while T - t >= K:  # whole mini-batches, a bounded number per scan so temporaries stay small
            s = slice(t, t + min((T - t) // K, SCAN_CHUNK) * K)
            out, inner = scan(*seq(s), tau, ln_w, ln_b, inner, K)
            outs.append(out.to(q.dtype))
            t = s.stop
        if t < T:  # open a new mini-batch with the remaining tokens
            s = slice(t, T)
            out, inner = partial(*seq(s), tau[: T - t], ln_w, ln_b, inner, K)
            outs.append(out.to(q.dtype))

    out = torch.cat(outs, dim=1) if outs else q.new_zeros(B * H, 0, F)

    def unflat(x):
        return x.reshape(B, H, *x.shape[1:])

    new_state = TTTState(tuple(unflat(p) for p in inner.params), tuple(unflat(g) for g in inner.grads), inner.pos)
    return unflat(out), new_state


def ttt_linear(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    W: Tensor,
    b: Tensor,
    ln_weight: Tensor,
    ln_bias: Tensor,
    *,
    mini_batch_size: int = 16,
    token_scale: Tensor | None = None,
    state: TTTState | None = None,
    kernel: str | None = None,
) -> tuple[Tensor, TTTState]:
    """TTT-Linear core (spec sections 1 and 3): ``out_t = q_t + LN(q_t W_t' + b_t')``.

    Args:
        q, k, v: ``[B, H, T, F]`` queries, keys (inner inputs) and values (``v - k`` is the inner target).
        lr: ``[B, H, T]`` per-token inner learning rate.
        W, b: ``[H, F, F]``, ``[H, F]`` initial inner weights (ignored when ``state`` is given).
        ln_weight, ln_bias: ``[H, F]`` inner LayerNorm.
        mini_batch_size: ``K``, tokens per inner gradient step.
        token_scale: ``[K]`` scale of position ``p`` inside a mini-batch (clamped at 0); ``None`` is ``1/(p+1)``.
        state: what an earlier call returned, to continue the same sequence; ``None`` starts it.
        kernel: ``None`` uses the Triton kernels of `fused` on CUDA where they apply and PyTorch elsewhere;
            ``"torch"`` or ``"triton"`` forces one (Triton runs on the CPU under ``TRITON_INTERPRET=1``).

    Returns:
        ``out [B, H, T, F]`` in ``q``'s dtype, and the :class:`TTTState` after the last token (float32,
        or float64 for float64 inputs). Any ``T`` works, and any split of a sequence into calls gives
        the same outputs and final state as one call. Under autocast, everything runs in float32.
    """
    return _run(
        _linear_partial,
        _linear_scan,
        q,
        k,
        v,
        lr,
        (W, b),
        ln_weight,
        ln_bias,
        mini_batch_size,
        token_scale,
        state,
        kernel,
    )


def ttt_mlp(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    W1: Tensor,
    b1: Tensor,
    W2: Tensor,
    b2: Tensor,
    ln_weight: Tensor,
    ln_bias: Tensor,
    *,
    mini_batch_size: int = 16,
    token_scale: Tensor | None = None,
    state: TTTState | None = None,
    kernel: str | None = None,
) -> tuple[Tensor, TTTState]:
    """TTT-MLP core (spec section 2): the inner model is ``gelu_tanh(x W1 + b1) W2 + b2``.

    Args as :func:`ttt_linear`, with ``W1 [H, F, D]``, ``b1 [H, D]``, ``W2 [H, D, F]``, ``b2 [H, F]``
    (``D = 4F`` in the paper; any ``D`` works).
    """
    return _run(
        _mlp_partial,
        _mlp_scan,
        q,
        k,
        v,
        lr,
        (W1, b1, W2, b2),
        ln_weight,
        ln_bias,
        mini_batch_size,
        token_scale,
        state,
        kernel,
    )
