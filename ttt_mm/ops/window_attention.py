"""Causal sliding-window attention with RoPE over a key/value cache and new tokens, as batched
products with a backward written by hand that keeps only the inputs.

Queries come in blocks of ``Q``; block ``i`` scores the ``(R + 1) Q`` keys that end with its own (an
overlapping view of one padded key sequence), and a mask cuts each query's scores to its window.
Why not SDPA with that mask: autograd keeps SDPA's inputs, RoPE'd and padded copies of q, k and v
(6 KB per token at width 512), and its output until the backward. Here the backward rebuilds them
from the inputs and recomputes each block's softmax, so nothing of the sequence's size is kept
beyond the inputs (views of the layer's projection, which it keeps anyway): a LaCT layer's
training step keeps 22 KB per token instead of 31, at the same speed on the CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .eager import eager_under_compile
from .first_order import first_order_backward
from .precision import autocast_off
from .rope import apply_rope

# Queries per block: about a quarter of the window, a multiple of 32 in [32, 128]. A block scores
# ``(Q + window - 1) / window`` times the keys its band needs (about 1.25); smaller blocks waste less
# but make more, smaller products. Training steps of a layer at width 512 on the CPU (window 256 and
# 2048): a quarter of the window beat a half by 6-12% at 256, and 128 beat 256 and 64 at 2048.
QUERY_BLOCK_RANGE = (32, 128)
# Scores per batched product on the CPU, at most (unless one row's are more): rows of small blocks go
# through one product together, within the cache; a row whose scores are larger gets one product of its
# own, with no copy. On a GPU, few large products are what counts: all rows of a mask go together up to
# DEVICE_SCORE_BYTES.
SCORE_BYTES = 2 * 2**20
DEVICE_SCORE_BYTES = 2**30


def query_block(window: int) -> int:
    """Queries per block for a window; ``R = ceil((window - 1) / Q)`` earlier blocks are in reach."""
    low, high = QUERY_BLOCK_RANGE
    return max(low, min(high, -(-(window - 1) // 128) * 32))


@eager_under_compile
def window_attention(
    q: Tensor, k: Tensor, v: Tensor, cache_k: Tensor, cache_v: Tensor, cached: Tensor, rotation: Tensor
) -> Tensor:
    """Each new token attends to itself and the ``P = window - 1`` tokens before it (cache, then new).

    Args:
        q, k, v: ``[B, T, H, F]`` the new tokens' queries, keys (both before RoPE) and values.
        cache_k, cache_v: ``[B, H, P, F]`` keys (before RoPE) and values of the ``P`` slots before the
            new tokens, oldest first.
        cached: ``[B]`` int64, how many of the last cache slots hold tokens (the others are masked out).
        rotation: ``[P + T, F / 2]`` RoPE rotations (`ttt_mm.ops.rope.rope_rotation`) of the cache
            slots' and new tokens' positions, in that order.

    Returns ``o [B, T, H, F]`` in ``q``'s dtype, computed in float32 at least (the softmax included).
    Differentiable in q, k, v and both caches (once)."""
    B, T, H, F = q.shape
    P = cache_k.shape[2]
    if k.shape != q.shape or v.shape != q.shape or cache_k.shape != (B, H, P, F) or cache_v.shape != (B, H, P, F):
        raise ValueError(
            f"q, k, v must be [B, T, H, F] and the caches [B, H, P, F]; got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}, {tuple(cache_k.shape)}, {tuple(cache_v.shape)}"
        )
    if rotation.shape != (P + T, F // 2) or cached.shape != (B,):
        raise ValueError(
            f"rotation must be [P + T, F / 2] and cached [B]; got {tuple(rotation.shape)}, {tuple(cached.shape)}"
        )
    if T == 0:  # (no query: no block to lay out)
        return q.new_zeros(B, 0, H, F)
    return _WindowAttention.apply(q, k, v, cache_k, cache_v, cached, rotation)


class _Blocks:
    """The block layout of one call: ``nb`` blocks of ``Q`` queries; keys and values padded to
    ``(R + nb) Q`` slots (``front`` zeros, the cache, the new tokens, ``end`` zeros); and the groups
    of (batch row, head) rows that go through one batched product: rows of one mask, as many as keep
    a group's scores within ``SCORE_BYTES``."""

    def __init__(self, T: int, P: int, H: int, cached: list[int], device: torch.device, dtype: torch.dtype):
        self.P = P
        self.Q = Q = min(query_block(P + 1), T)
        self.nb, self.R = -(-T // Q), -(-P // Q)
        self.front = self.R * Q - P
        self.span = (self.R + 1) * Q
        # query j of a block sees span slots j + front .. j + R Q: itself and the P slots before it
        j = torch.arange(Q, device=device)[:, None]
        m = torch.arange(self.span, device=device)[None]
        band = (m >= j + self.front) & (m <= j + self.R * Q)
        slot = torch.arange((self.R + self.nb) * Q, device=device)

        def bias(allowed):  # 0 where allowed, -inf elsewhere
            return torch.zeros(allowed.shape, device=device, dtype=dtype).masked_fill_(~allowed, -math.inf)

        limit = SCORE_BYTES if device.type == "cpu" else DEVICE_SCORE_BYTES
        per_group = max(1, limit // (self.nb * Q * self.span * torch.finfo(dtype).bits // 8))
        runs = []  # (first batch row, end batch row, allowed): consecutive full caches share the band
        for b, c in enumerate(cached):
            if c == P and runs and runs[-1][2] is band:
                runs[-1] = (runs[-1][0], b + 1, band)
            else:
                filled = (slot >= self.R * Q - c).unfold(0, self.span, Q)[:, None]  # [nb, 1, span]
                runs.append((b, b + 1, band if c == P else band & filled))
        self.groups = []  # (first row, end row, bias [Q, span] or [rows nb, Q, span]) of rows b H + h
        for b0, b1, allowed in runs:
            mask = bias(allowed)
            if allowed is not band:  # [nb, Q, span] per row: once for a group's rows, sliced for a smaller one
                mask = mask.repeat(min(per_group, (b1 - b0) * H), 1, 1)
            for r0 in range(b0 * H, b1 * H, per_group):
                r1 = min(r0 + per_group, b1 * H)
                self.groups.append((r0, r1, mask if allowed is band else mask[: (r1 - r0) * self.nb]))

    def queries(self, q: Tensor, rotation: Tensor, dtype: torch.dtype) -> Tensor:
        """``q [B, T, H, F]`` -> RoPE'd ``[B H, nb Q, F]`` (zero rows after the last query)."""
        B, T, H, F = q.shape
        out = q.new_empty(B, H, self.nb * self.Q, F, dtype=dtype)
        out[:, :, T:].zero_()
        out[:, :, :T] = apply_rope(q.to(dtype), rotation[self.P :]).transpose(1, 2)
        return out.flatten(0, 1)

    def keys(self, cache: Tensor, new: Tensor, rotation: Tensor | None, dtype: torch.dtype) -> Tensor:
        """Cache ``[B, H, P, F]`` and new ``[B, T, H, F]`` -> ``[B H, (R + nb) Q, F]``, RoPE'd if ``rotation``."""
        B, T, H, F = new.shape
        P, front = self.P, self.front
        out = new.new_empty(B, H, (self.R + self.nb) * self.Q, F, dtype=dtype)
        out[:, :, :front].zero_()
        out[:, :, front + P + T :].zero_()
        cache, new = cache.to(dtype).transpose(1, 2), new.to(dtype)  # both [B, n, H, F]
        if rotation is not None:
            cache, new = apply_rope(cache, rotation[:P]), apply_rope(new, rotation[P:])
        out[:, :, front : front + P] = cache.transpose(1, 2)
        out[:, :, front + P : front + P + T] = new.transpose(1, 2)
        return out.flatten(0, 1)

    def blocks(self, x: Tensor) -> Tensor:
        """Rows ``[n, nb Q, F]`` -> ``[n nb, Q, F]``, a view."""
        return x.view(-1, self.Q, x.shape[-1])

    def windows(self, x: Tensor) -> Tensor:
        """Rows ``[n, (R + nb) Q, F]`` -> ``[n nb, span, F]``, each block's keys: a view for one row,
        else a copy (``R + 1`` times the rows' size)."""
        n, L, F = x.shape
        view = x.as_strided((n, self.nb, self.span, F), (L * F, self.Q * F, F, 1), x.storage_offset())
        return view.reshape(n * self.nb, self.span, F)

    def fold_into(self, out: Tensor, grad: Tensor) -> None:
        """Adds ``grad [n nb, span, F]`` (of `windows`) into rows ``out [n, (R + nb) Q, F]``: ``R + 1``
        shifted additions."""
        nb, Q, R = self.nb, self.Q, self.R
        out = out.view(-1, R + nb, Q, out.shape[-1])
        grad = grad.view(-1, nb, R + 1, Q, out.shape[-1])
        for i in range(R + 1):
            out[:, i : i + nb] += grad[:, :, i]


class _WindowAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cache_k, cache_v, cached, rotation):
        B, T, H, F = q.shape
        dtype = torch.promote_types(q.dtype, torch.float32)
        counts = cached.tolist()
        with autocast_off(q.device.type):
            blocks = _Blocks(T, cache_k.shape[2], H, counts, q.device, dtype)
            qs, ks = blocks.queries(q, rotation, dtype), blocks.keys(cache_k, k, rotation, dtype)
            vs = blocks.keys(cache_v, v, None, dtype)
            o = torch.empty_like(qs)
            for r0, r1, bias in blocks.groups:
                qb, kw = blocks.blocks(qs[r0:r1]), blocks.windows(ks[r0:r1])
                p = torch.baddbmm(bias, qb, kw.mT, alpha=F**-0.5).softmax(-1)
                torch.bmm(p, blocks.windows(vs[r0:r1]), out=blocks.blocks(o[r0:r1]))
        ctx.save_for_backward(q, k, v, cache_k, cache_v, rotation)
        ctx.counts = counts
        return o.unflatten(0, (B, H))[:, :, :T].transpose(1, 2).to(q.dtype)

    @staticmethod
    @first_order_backward
    def backward(ctx, grad):
        q, k, v, cache_k, cache_v, rotation = ctx.saved_tensors
        B, T, H, F = q.shape
        P = cache_k.shape[2]
        dtype = torch.promote_types(q.dtype, torch.float32)
        blocks = _Blocks(T, P, H, ctx.counts, q.device, dtype)
        qs, ks = blocks.queries(q, rotation, dtype), blocks.keys(cache_k, k, rotation, dtype)
        vs = blocks.keys(cache_v, v, None, dtype)
        do = qs.new_zeros(B, H, qs.shape[1], F)
        do[:, :, :T] = grad.transpose(1, 2)
        do = do.flatten(0, 1)
        dq, dk, dv = torch.empty_like(qs), torch.zeros_like(ks), torch.zeros_like(vs)
        scale = F**-0.5
        for r0, r1, bias in blocks.groups:
            qb, dob = blocks.blocks(qs[r0:r1]), blocks.blocks(do[r0:r1])
            kw, vw = blocks.windows(ks[r0:r1]), blocks.windows(vs[r0:r1])
            p = torch.baddbmm(bias, qb, kw.mT, alpha=scale).softmax(-1)  # [n nb, Q, span]
            blocks.fold_into(dv[r0:r1], torch.bmm(p.mT, dob))
            # o = p v, p = softmax(s): ds = p (dp - <p, dp>) with dp = do v^T; s = scale q k^T
            dp = torch.bmm(dob, vw.mT)
            ds = dp.sub_(torch.linalg.vecdot(p, dp).unsqueeze(-1)).mul_(p)
            torch.bmm(ds, kw, out=blocks.blocks(dq[r0:r1]))
            blocks.fold_into(dk[r0:r1], torch.bmm(ds.mT, qb))
        dq.mul_(scale)
        dk.mul_(scale)
        dq, dk, dv = (x.unflatten(0, (B, H)) for x in (dq, dk, dv))
        conj = rotation.conj()  # RoPE's inverse (and transpose): rotate back
        front = blocks.front
        d_q = apply_rope(dq[:, :, :T].transpose(1, 2), conj[P:])
        dk_all = apply_rope(dk[:, :, front : front + P + T].transpose(1, 2), conj)  # [B, P + T, H, F]
        dv_all = dv[:, :, front : front + P + T].transpose(1, 2)
        return (
            d_q.to(q.dtype),
            dk_all[:, P:].to(k.dtype),
            dv_all[:, P:].to(v.dtype),
            dk_all[:, :P].transpose(1, 2).to(cache_k.dtype),
            dv_all[:, :P].transpose(1, 2).to(cache_v.dtype),
            None,
            None,
        )
