"""The TTT-Linear and TTT-MLP cores: the public entry points and the driver that picks a path.

A call finishes the mini-batch an earlier call left open, scans the whole mini-batches, and opens
the next one with what is left, so that any split of a sequence gives the same result. Whole
mini-batches go to one of three paths:

- ``"triton"`` (`fused`): the Triton kernels, forward and backward; the default on CUDA where they apply.
- ``"torch"`` (`dual` + `backward`): the PyTorch scan, with a hand-written backward pass when gradients
  are needed; the default everywhere else.
- ``"autograd"``: the same PyTorch scan with autograd recording it: slow and memory-hungry in
  training, kept as the reference the hand-written backward is tested against.

The open and partial mini-batches at the ends of a call always run in PyTorch under autograd (at most
two per call).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

import torch
from torch import Tensor

from ..eager import eager_under_compile
from ..precision import autocast_off, exact_dtype
from . import backward, dual, fused
from .state import TTTState

log = logging.getLogger(__name__)

Params = tuple[Tensor, ...]
Partial = Callable[..., tuple[Tensor, TTTState]]
KERNELS = (None, "torch", "autograd", "triton")

# Mini-batches per vectorised scan. Longer sequences are scanned chunk by chunk: the per-chunk
# temporaries stay a few MiB, are reused from the allocator instead of being freshly page-faulted
# (which made the cost per token grow with T), and inference memory stays flat beyond the outputs.
SCAN_CHUNK = 128


@functools.cache
def _log_torch_fallback(F: int, dtype: torch.dtype, K: int, hidden: int | None) -> None:
    log.info(
        "TTT core: the Triton kernels do not run head dim %d, %s, K=%d, MLP width %s; using the PyTorch scan "
        "(`ttt_mm.ops.ttt.fused.supported` says which shapes they take)",
        F,
        dtype,
        K,
        hidden,
    )


def _fused_wanted(kernel: str | None, q: Tensor, K: int, params: Params) -> bool:
    """``kernel=None`` picks Triton on CUDA where it applies; ``"triton"`` insists (e.g. on the CPU under
    ``TRITON_INTERPRET=1``), ``"torch"`` and ``"autograd"`` never use it."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    hidden = params[0].shape[-1] if len(params) == 4 else None
    usable = fused.supported(q, K, hidden)
    if kernel == "triton" and not usable:
        raise ValueError(
            "kernel='triton' needs Triton, 16/32-bit floats and a head dim, mini-batch size (and MLP width) that "
            f"are powers of two >= 16, with K <= {fused.MAX_K}, and head dim <= {fused.LINEAR_MAX_F} (TTT-Linear) or "
            f"head dim <= {fused.MLP_MAX_F}, MLP width <= 4 x head dim and K x head dim <= {fused.MLP_MAX_KF} "
            "(TTT-MLP); "
            f"got {q.dtype}, head dim {q.shape[-1]}, K={K}" + ("" if hidden is None else f", MLP width {hidden}")
        )
    if kernel == "triton" and not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            "kernel='triton' runs on CUDA tensors, or on the CPU in Triton's interpreter: TRITON_INTERPRET=1 in "
            "the environment before ttt_mm is imported"
        )
    if kernel is None and q.is_cuda and not usable:
        _log_torch_fallback(q.shape[-1], q.dtype, K, hidden)  # once per shape, whatever the length
    return kernel == "triton" or (kernel is None and usable and q.is_cuda)


@eager_under_compile
def _run(partial: Partial, q, k, v, lr, params: Params, ln_weight, ln_bias, K, token_scale, state, kernel, span):
    """Shared driver: check shapes, then finish the open mini-batch, scan the whole ones and start the
    next. The PyTorch steps run in float32/64; the fused scan reads the inputs in their own dtype."""
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must all be [B, H, T, F]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not q.is_floating_point():  # (it works in float32 and would round its outputs back to integers)
        raise ValueError(f"q, k, v must be floating point; got {q.dtype}")
    B, H, T, F = q.shape
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"mini_batch_size must be a whole number >= 1; got {K!r}")
    if lr.shape != (B, H, T):
        raise ValueError(f"lr must be [B, H, T] = {(B, H, T)}; got {tuple(lr.shape)}")
    D = params[0].shape[-1]  # (TTT-MLP's hidden width)
    want = [(H, F, F), (H, F)] if len(params) == 2 else [(H, F, D), (H, D), (H, D, F), (H, F)]
    if [tuple(p.shape) for p in params] != want:
        got = ", ".join(str(tuple(p.shape)) for p in params)
        raise ValueError(
            f"the initial inner weights must be {', '.join(map(str, want))} for q of {(B, H, T, F)}; got {got}"
        )
    if ln_weight.shape != (H, F) or ln_bias.shape != (H, F):
        raise ValueError(f"ln_weight and ln_bias must be [H, F] = {(H, F)}; got {tuple(ln_weight.shape)}")
    if token_scale is not None and token_scale.shape != (K,):
        raise ValueError(f"token_scale must be [mini_batch_size] = [{K}]; got {tuple(token_scale.shape)}")
    if state is not None:
        state.check_shapes([p.shape for p in params], B)
        state.check_continued_with(K)
    if span < 1:
        raise ValueError(f"checkpoint_span must be >= 1 mini-batch; got {span}")

    dtype = exact_dtype(q.dtype)
    with autocast_off(q.device.type):
        if token_scale is None:
            tau = 1.0 / torch.arange(1, K + 1, device=q.device, dtype=dtype)
        else:
            tau = token_scale.to(dtype).clamp_min(0)
        if state is None:
            state = TTTState.initial(params, B, dtype)
        inputs = (q, k, v, lr, ln_weight, ln_bias, tau, *state.params, *state.grads)
        training = torch.is_grad_enabled() and any(x.requires_grad for x in inputs)
        use_fused = _fused_wanted(kernel, q, K, state.params)
        hand_written = training and kernel != "autograd"

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
            if hand_written:
                out, params = backward.scan(*seq(s), tau, ln_w, ln_b, inner.params, span)
            else:
                scan = dual.mlp_scan if len(inner.params) == 4 else dual.linear_scan
                out, params, _ = scan(dual.MiniBatches.of(*seq(s), K), tau, ln_w, ln_b, inner.params)
            inner = TTTState(params, inner.grads, 0)
            outs.append(out.to(q.dtype))
            t = s.stop
        if t < T:  # open a new mini-batch with the remaining tokens
            s = slice(t, T)
            out, inner = partial(*seq(s), tau[: T - t], ln_w, ln_b, inner, K)
            outs.append(out.to(q.dtype))

    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1) if outs else q.new_zeros(B * H, 0, F)

    def unflat(x):
        return x.reshape(B, H, *x.shape[1:])

    new_state = TTTState(tuple(unflat(p) for p in inner.params), tuple(unflat(g) for g in inner.grads), inner.pos, K)
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
    checkpoint_span: int = backward.SPAN,
) -> tuple[Tensor, TTTState]:
    """TTT-Linear core: mini-batch TTT of Sun et al. 2024 (arXiv 2407.04620), ``out_t = q_t + LN(q_t W_t' + b_t')``.

    Args:
        q, k, v: ``[B, H, T, F]`` queries, keys (inner inputs) and values (``v - k`` is the inner target).
        lr: ``[B, H, T]`` per-token inner learning rate.
        W, b: ``[H, F, F]``, ``[H, F]`` initial inner weights (ignored when ``state`` is given).
        ln_weight, ln_bias: ``[H, F]`` inner LayerNorm.
        mini_batch_size: ``K``, tokens per inner gradient step.
        token_scale: ``[K]`` scale of position ``p`` inside a mini-batch (clamped at 0); ``None`` is ``1/(p+1)``.
        state: what an earlier call returned, to continue the same sequence; ``None`` starts it.
        kernel: ``None`` uses the Triton kernels of `fused` on CUDA where they apply and the PyTorch scan
            elsewhere; ``"torch"``, ``"triton"`` or ``"autograd"`` (the PyTorch scan recorded by autograd, the
            reference for the hand-written backward) forces one. Triton runs on the CPU under ``TRITON_INTERPRET=1``.
        checkpoint_span: in training on the PyTorch path, mini-batches between the inner weights kept for the
            backward pass, which recomputes one span at a time: memory for ``T / (K span)`` weight copies plus
            one span's activations.

    Returns:
        ``out [B, H, T, F]`` in ``q``'s dtype, and the :class:`TTTState` after the last token (float32,
        or float64 for float64 inputs). Any ``T`` works, and any split of a sequence into calls gives
        the same outputs and final state as one call. Under autocast the state and its sums stay in
        float32; the PyTorch scan computes in float32, the Triton kernels' products of 16-bit inputs run
        in TF32 (`fused.precision`).
    """
    return _run(
        dual.linear_partial,
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
        checkpoint_span,
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
    checkpoint_span: int = backward.SPAN,
) -> tuple[Tensor, TTTState]:
    """TTT-MLP core (the same paper): the inner model is ``gelu_tanh(x W1 + b1) W2 + b2``.

    Args as :func:`ttt_linear`, with ``W1 [H, F, D]``, ``b1 [H, D]``, ``W2 [H, D, F]``, ``b2 [H, F]``
    (``D = 4F`` in the paper; any ``D`` works).
    """
    return _run(
        dual.mlp_partial,
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
        checkpoint_span,
    )
