"""The LaCT core (large-chunk test-time training, Zhang et al., ICLR 2026) in plain PyTorch.

What it computes, per batch row and head, for chunks of ``C`` tokens:

- Fast weights ``W0 [M, D]``, ``W1 [E, M]``, ``W2 [M, D]`` define ``f(x) = W1 (silu(W0 x) * (W2 x))``.
- Apply, then update: every token of a chunk is answered with the weights from before that chunk,
  ``o_t = f(q_t)``. Output ``t`` therefore never depends on a later token, inside a chunk included.
- Inner objective: the dot product ``<f(k_t), v_t>`` (the inner loss is its negative). At the end
  of a chunk the step is ``G_i = sum_t lr_{t,i} d<f(k_t), v_t>/dW_i``, one learned step size per
  token and weight, with all gradients taken at the weights from before the chunk.
- Momentum (optional): ``G <- G + mean_t(gate_t) * G_prev`` where ``G_prev`` is the previous
  chunk's ``G`` after momentum and ``gate_t`` a per-token gate in [0, 1].
- Muon (optional): ``G <- orthogonalize(G)``, each weight's update on its own (Newton-Schulz).
- ``W <- W + G``, then every row of every weight is rescaled to the L2 norm that row had in the
  initial weights (``w0, w1, w2``), which keeps the fast weights from growing without bound.

This matches the released ``block_causal_lact_swiglu`` (LaCT's language-model code) with these
deliberate differences: a chunk that ends the input still updates the weights (the release skips
that last update because its outputs do not need it; a stream does); a trailing partial chunk is
kept as exact partial sums in the state; the Newton-Schulz steps run in float32/64, not bfloat16.

Speed: each chunk is a handful of large products over all ``C`` tokens (W0 and W2 are stacked
into one ``[2M, D]`` matrix, so one product gives both), so the Python loop runs ``T / C`` times,
not ``T`` times. A chunk's outputs and step are `step.swiglu_chunk`, whose backward is written by
hand, as is Muon's (`muon.orthogonalize`); autograd differentiates only the few ops per chunk
between them (momentum, the row renormalisation) on weight-sized tensors. Layout inside this
module: batch and heads flattened to one leading dim ``BH``; ``W02 [BH, 2M, D]`` is ``W0`` over ``W2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..eager import eager_under_compile
from ..precision import autocast_off, exact_dtype
from .muon import orthogonalize
from .state import LaCTState
from .step import swiglu_chunk

# Added to a row's norm before rescaling it to its initial norm (as released).
RENORM_EPS = 1e-5


def _renorm(W: Tensor, norms: Tensor) -> Tensor:
    return W * (norms / (torch.linalg.vector_norm(W, dim=-1, keepdim=True) + RENORM_EPS))


def _update(W, G, velocity, gate_mean, norms, muon: bool):
    """One chunk's update of ``W = (W02, W1)`` by the step ``G`` (same layout); returns the new
    weights and the new momentum buffer (``velocity`` is ``None`` without momentum)."""
    if velocity is not None:
        scale = gate_mean[:, None, None]
        G = tuple(g + scale * m for g, m in zip(G, velocity))
        velocity = G
    if muon:
        G02, G1 = G
        BH, M2, D = G02.shape
        G0_G2 = G02.reshape(BH * 2, M2 // 2, D)  # each weight on its own
        if G1.shape[1:] == G0_G2.shape[1:]:  # all three the same shape (square fast weights): one batch
            orthogonal = orthogonalize(torch.cat([G0_G2, G1]))
            G = (orthogonal[: BH * 2].reshape(BH, M2, D), orthogonal[BH * 2 :])
        else:
            G = (orthogonalize(G0_G2).reshape(BH, M2, D), orthogonalize(G1))
    W = tuple(_renorm(w + g, n) for w, g, n in zip(W, G, norms))
    return W, velocity


def _scan(W, G, velocity, gate_sum, pos: int, q, k, v, lr, gate, norms, C: int, muon: bool):
    """All tokens of one call for rows that share ``pos`` (tokens already in their open chunk):
    finish the open chunk, take whole chunks, then open the next. ``G`` and ``gate_sum`` are the
    open chunk's partial sums; returns the outputs and the updated ``(W, G, velocity, gate_sum)``."""
    T = q.shape[1]
    first = min(C - pos, T)
    sizes = [first] + [C] * ((T - first) // C) + ([(T - first) % C] if (T - first) % C else [])
    # split (not slicing) so that the backward concatenates instead of zero-filling per piece
    pieces = zip(*(x.split(sizes, dim=1) for x in (q, k, v, lr)))
    gates = gate.split(sizes, dim=1) if gate is not None else [None] * len(sizes)
    outs = []
    for (q_, k_, v_, lr_), gate_ in zip(pieces, gates):
        out, G02, G1 = swiglu_chunk(*W, q_, k_, v_, lr_)
        outs.append(out)
        G = (G[0] + G02, G[1] + G1) if pos else (G02, G1)
        if gate_ is not None:
            gate_sum = gate_sum + gate_.sum(1) if pos else gate_.sum(1)
        pos += q_.shape[1]
        if pos == C:  # the chunk is complete
            W, velocity = _update(W, G, velocity, None if gate_ is None else gate_sum / C, norms, muon)
            G = (torch.zeros_like(W[0]), torch.zeros_like(W[1]))
            gate_sum = None if gate_ is None else torch.zeros_like(gate_sum)
            pos = 0
    return torch.cat(outs, dim=1), (W, G, velocity, gate_sum)


def _scan_by_place(carried, counts: list[int], inputs, norms, H: int, C: int, muon: bool):
    """`_scan` for rows at different places in their chunks (after some rows restarted): one scan
    per place, each over its rows' heads, then every row put back where it was."""

    def tree_map(fn, tree):
        if tree is None:
            return None
        return tuple(tree_map(fn, t) for t in tree) if isinstance(tree, tuple) else fn(tree)

    def head_rows(rows):  # indices into [B * H, ...] of all heads of batch rows `rows`, in that order
        device = inputs[0].device
        return (torch.tensor(rows, device=device)[:, None] * H + torch.arange(H, device=device)).flatten()

    def merge(trees, index):  # concatenate same-structured trees along dim 0, then reorder the rows
        if trees[0] is None:
            return None
        if isinstance(trees[0], tuple):
            return tuple(merge([t[i] for t in trees], index) for i in range(len(trees[0])))
        return torch.cat(trees).index_select(0, index)

    parts, order = [], []
    for pos in sorted(set(counts)):
        rows = [b for b, c in enumerate(counts) if c == pos]
        index = head_rows(rows)

        def pick(x, index=index):
            return x.index_select(0, index)

        parts.append(_scan(*tree_map(pick, carried), pos, *tree_map(pick, inputs), tree_map(pick, norms), C, muon))
        order += rows
    out, state = merge(parts, head_rows(torch.argsort(torch.tensor(order)).tolist()))
    return out, state


def _check(q, k, v, lr, w0, w1, w2, momentum, chunk_size, state) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"q, k must be [B, H, T, D] and v [B, H, T, E]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not q.is_floating_point():  # (it works in float32 and would round its outputs back to integers)
        raise ValueError(f"q, k, v must be floating point; got {q.dtype}")
    B, H, T, D = q.shape
    E = v.shape[-1]
    if lr.shape != (B, H, T, 3):
        raise ValueError(f"lr must be [B, H, T, 3] = {(B, H, T, 3)}; got {tuple(lr.shape)}")
    M = w1.shape[-1]
    if w0.shape != (H, M, D) or w2.shape != (H, M, D) or w1.shape != (H, E, M):
        raise ValueError(
            f"w0, w2 must be [H, M, D] and w1 [H, E, M] with H={H}, D={D}, E={E}; "
            f"got {tuple(w0.shape)}, {tuple(w1.shape)}, {tuple(w2.shape)}"
        )
    if momentum is not None and momentum.shape != (B, H, T):
        raise ValueError(f"momentum must be [B, H, T] = {(B, H, T)}; got {tuple(momentum.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a whole number >= 1; got {chunk_size!r}")
    if state is not None:
        if (state.velocity is None) != (momentum is None):
            raise ValueError(
                "state and call disagree on momentum: pass momentum gates exactly when the state has a "
                "momentum buffer (velocity)"
            )
        state.check_shapes([w0.shape, w1.shape, w2.shape], B)


@eager_under_compile
def lact_swiglu(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    w0: Tensor,
    w1: Tensor,
    w2: Tensor,
    momentum: Tensor | None = None,
    *,
    chunk_size: int = 2048,
    muon: bool = False,
    state: LaCTState | None = None,
) -> tuple[Tensor, LaCTState]:
    """LaCT with SwiGLU fast weights, causal: apply with the weights from before each chunk, then update.

    Args:
        q, k: ``[B, H, T, D]`` queries (answered by the fast weights) and keys (their inputs in the
            inner objective); LaCT L2-normalises both per head beforehand.
        v: ``[B, H, T, E]`` values (what ``f(k)`` is pulled towards).
        lr: ``[B, H, T, 3]`` per-token step sizes of ``W0``, ``W1``, ``W2`` (e.g. a softplus).
        w0, w1, w2: ``[H, M, D]``, ``[H, E, M]``, ``[H, M, D]``: the initial fast weights. They start
            a sequence when ``state`` is None, and their row norms are what every update is rescaled
            to, in every call.
        momentum: ``[B, H, T]`` per-token momentum gates in [0, 1] (their mean over a chunk scales the
            previous update), or ``None`` for plain steps. Neither these nor ``lr`` are checked (that
            would make every call wait for the GPU): the layer makes them with a sigmoid and a softplus.
        chunk_size: ``C``, tokens per update. Any ``T`` works: a partial chunk waits in the state.
        muon: orthogonalise each update (Newton-Schulz) before adding it.
        state: what an earlier call returned, to continue the same sequences; ``None`` starts them.

    Returns:
        ``out [B, H, T, E]`` in ``q``'s dtype, and the :class:`LaCTState` after the last token (float32,
        or float64 for float64 inputs). Any split of a sequence into calls gives the same outputs and
        state as one call. Rows whose open chunks differ in length (after a restart of some rows)
        are run in groups, one per length. Under autocast, everything runs in float32.
    """
    _check(q, k, v, lr, w0, w1, w2, momentum, chunk_size, state)
    B, H, T, D = q.shape
    dtype = exact_dtype(q.dtype)
    with autocast_off(q.device.type):
        if state is None:
            state = LaCTState.initial((w0, w1, w2), B, dtype, momentum is not None)
        if T == 0:
            return q.new_zeros(B, H, 0, v.shape[-1]), state

        def flat(x):  # [B, H, ...] -> [BH, ...] in the working dtype, contiguous (as the step's fused loops read it)
            return None if x is None else x.to(dtype).reshape(B * H, *x.shape[2:]).contiguous()

        def stacked(ws):  # (W0, W1, W2) -> (W02, W1)
            return None if ws is None else (torch.cat([flat(ws[0]), flat(ws[2])], dim=1), flat(ws[1]))

        M = w1.shape[-1]
        norms = tuple(
            torch.linalg.vector_norm(w.to(dtype), dim=-1, keepdim=True).repeat(B, 1, 1)
            for w in (torch.cat([w0, w2], dim=1), w1)
        )  # [BH, 2M, 1], [BH, E, 1]
        inputs = tuple(flat(x) for x in (q, k, v, lr, momentum))
        carried = (stacked(state.weights), stacked(state.grads), stacked(state.velocity), flat(state.gate_sum))

        state.check_continued_with(chunk_size)
        counts = state.count.tolist()
        if len(set(counts)) <= 1:  # (none: an empty batch)
            out, (W, G, vel, gate_sum) = _scan(*carried, counts[0] if counts else 0, *inputs, norms, chunk_size, muon)
        else:
            out, (W, G, vel, gate_sum) = _scan_by_place(carried, counts, inputs, norms, H, chunk_size, muon)

    def unstack(ws):  # (W02, W1) [BH, ...] -> (W0, W1, W2) [B, H, ...]
        if ws is None:
            return None
        W02, W1 = (w.reshape(B, H, *w.shape[1:]) for w in ws)
        return W02[:, :, :M], W1, W02[:, :, M:]

    new_state = LaCTState(
        unstack(W),
        unstack(G),
        unstack(vel),
        None if gate_sum is None else gate_sum.reshape(B, H),
        (state.count + T) % chunk_size,
    )
    return out.unflatten(0, (B, H)).to(q.dtype), new_state
