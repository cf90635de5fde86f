"""The LaCT layer (large-chunk test-time training, Zhang et al., ICLR 2026): causal sliding-window
attention and SwiGLU fast weights updated once per chunk, read from the same projections and summed.

As released (``LaCTSWIGLULayer`` of the language-model code, with its 760M/3B configs):

- One ``[C, 3C]`` projection gives q, k, v. Attention heads use them with RoPE and a causal window
  of ``window`` tokens (a token sees itself and the ``window - 1`` before it).
- The fast-weight path reads the same q, k, v: q and k get a learned per-channel scale and offset,
  then q, k, v a SiLU, then q and k an L2 norm per fast head. Per-token step sizes
  ``softplus(x W_lr + b + softplus^-1(base_lr))``, one per fast head and weight; momentum gates
  ``sigmoid(x W_m + b)`` per fast head. The core is :func:`ttt_mm.ops.lact_swiglu`.
- Its output is RMS-normed per fast head and scaled by ``silu(x W_s + b)`` per fast head, added to
  the attention output, and the sum goes through the output projection.

Deliberate differences, for causal streaming over unbounded recordings:

- Strictly causal inside a chunk: a token's fast-weight output uses only the weights from before
  its chunk (the release's language model does the same; its view-synthesis layers, which see every
  view at once, apply a chunk's own update to it, which here would leak later tokens into earlier
  outputs).
- No RoPE on the fast path (the release's ``ttt_nope`` option, which its authors report works as
  well): the fast weights then hold no absolute positions, so a state carried over hours of media
  means the same as one over a minute. Order inside the window comes from the attention.
- Attention RoPE uses positions relative to each call (the cache holds keys before RoPE), which is
  exact because attention scores depend only on position differences.
- Full-rank initial fast weights (the 760M/3B configs use a rank-32 factorisation plus identity
  to save parameters) and no q/k RMSNorm before attention (those configs turn it off).

Chunk and window are independent, and any combination streams exactly. With ``window >= chunk_size``
every earlier token is seen by attention or by the fast weights; with a smaller window, a token
also misses the tokens of its own chunk that lie more than ``window - 1`` back.

Choosing them (in tokens, so they follow the token rate; ``conf/model/lact.yaml`` has a table):
a chunk of about a quarter of the training window, a whole number of tokenizer steps that divides
the window's token count, so that several updates land inside every window (the step sizes learn
from an update only when later tokens of its window use it) and rows restarted at window
boundaries stay aligned; a window of one chunk, or less where attention dominates the cost. For
32 s training windows that is an 8 s chunk: 128 tokens for the default synthetic video (16
tokens/s), 288 for its 32 px audio-visual version (36 tokens/s), 200 for audio alone (25
tokens/s), 2208 for 128 px audio-visual (276 tokens/s, with a window of 256 to 2208: at 256,
about 1 s, attention costs about what the fast weights do; at 2208 several times that).

Speed: the fast path's feature maps and its gated output norm (`ttt_mm.ops.lact.features`) and
the core's chunk step have hand-written backward passes (their elementwise chains fused C loops on the
CPU), and so has the window attention (`ttt_mm.ops.window_attention`), which keeps only its inputs;
the core's backward rebuilds the fast path's q, k, v from the projection rather than keep them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..messages import check_count, check_positive
from ..ops import LaCTState, lact_swiglu
from ..ops.lact.features import fast_inputs, gated_rms_norm
from ..ops.precision import exact_dtype
from ..ops.recompute import recomputed
from ..ops.rope import rope_rotation
from ..ops.window_attention import window_attention
from .mixer import INIT_STD, RestartUnit, check_input, rope_head_width
from .pieces import in_pieces, piece_tokens

# Tokens per internal step of a long input on the CPU (rounded up to whole chunks; other devices take
# longer pieces: `piece_tokens`); exact, since the layer streams exactly. Small pieces keep every
# activation a few MiB: at 8192 tokens a piece's [T, 3C] activations outgrow what glibc recycles and
# are page-faulted in afresh, and 16k-token training ran 13% slower.
PIECE_TOKENS = 2048
# Added to a vector's norm before the L2 normalisation of fast q and k (as released).
L2_EPS = 1e-5


@dataclass
class LaCTLayerState:
    """Everything a LaCT layer carries between calls; fixed size whatever the length.

    ``fast``: the core's state (fast weights, momentum, the open chunk's partial step).
    ``keys``, ``values``: ``[B, H, window - 1, F]``, attention keys (before RoPE) and values of the
    last ``window - 1`` tokens, oldest first. ``cached``: ``[B]`` int64, how many of those slots (the
    last ones) hold tokens of the current sequence; fewer than ``window - 1`` only near its start; on the
    CPU, as the core's ``count`` is (each call plans its blocks from it).
    """

    fast: LaCTState
    keys: Tensor
    values: Tensor
    cached: Tensor

    def detach(self) -> LaCTLayerState:
        return replace(self, fast=self.fast.detach(), keys=self.keys.detach(), values=self.values.detach())


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class LaCTLayer(nn.Module):
    """Sequence mixer: sliding-window attention plus large-chunk test-time-trained SwiGLU fast weights.

    Args:
        dim: model width ``C``.
        num_heads: attention heads (head dim ``C / num_heads``, even for RoPE).
        chunk_size: tokens per fast-weight update (default 2048, as released). Large chunks make few
            large matrix products; a chunk should be well under the training window when the state
            is carried across windows (the gradient reaches the step sizes only through updates
            that land inside one window), and a chunk that divides that window keeps every row at
            the same place in its chunk (rows restarted mid-chunk are run in separate groups).
        window: tokens each query attends to, itself included (default 2048, as released; ``>= 1``).
            ``window >= chunk_size`` leaves no blind spot; attention costs ``O(T * window)``.
        fast_heads: heads of the fast-weight path (width ``C / fast_heads`` each: the release uses
            few, wide ones).
        fast_hidden_mult: SwiGLU hidden width of the fast weights over their head width.
        momentum: gated momentum on the fast-weight updates.
        muon: orthogonalise each update (Newton-Schulz), the paper's best variant.
        base_lr: the step size at initialisation (softplus offset).
        rope_theta: RoPE base of the attention.
    """

    bounded_state = True

    def __init__(
        self,
        dim: int,
        num_heads: int,
        chunk_size: int = 2048,
        window: int = 2048,
        fast_heads: int = 4,
        fast_hidden_mult: float = 1.0,
        momentum: bool = True,
        muon: bool = True,
        base_lr: float = 1e-3,
        rope_theta: float = 10000.0,
    ):
        super().__init__()
        head_dim = rope_head_width(dim, num_heads, rope_theta)
        check_count(fast_heads=fast_heads)
        if dim % fast_heads:
            raise ValueError(f"dim ({dim}) must be divisible by fast_heads ({fast_heads})")
        check_count(chunk_size=chunk_size, window=window)
        check_positive(base_lr=base_lr, fast_hidden_mult=fast_hidden_mult)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.fast_heads, self.fast_dim = fast_heads, dim // fast_heads
        self.fast_hidden = max(1, round(self.fast_dim * fast_hidden_mult))
        self.chunk_size, self.window, self.momentum, self.muon = chunk_size, window, momentum, muon
        self.restart_unit = RestartUnit(chunk_size, "LaCT chunks", "chunk_size", required=False, applied_after=True)
        self.lr_offset, self.rope_theta = _inv_softplus(base_lr), rope_theta
        Hf, Df, M = fast_heads, self.fast_dim, self.fast_hidden

        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.qk_scale = nn.Parameter(torch.ones(2, dim))  # fast q, fast k
        self.qk_offset = nn.Parameter(torch.zeros(2, dim))
        self.lr_proj = nn.Linear(dim, 3 * Hf)  # per fast head: step sizes of W0, W1, W2
        self.momentum_proj = nn.Linear(dim, Hf) if momentum else None
        self.fast_scale_proj = nn.Linear(dim, Hf)
        self.w0 = nn.Parameter(torch.empty(Hf, M, Df))
        self.w1 = nn.Parameter(torch.empty(Hf, Df, M))
        self.w2 = nn.Parameter(torch.empty(Hf, M, Df))
        self.fast_shapes = [(Hf, M, Df), (Hf, Df, M), (Hf, M, Df)]  # (FSDP may flatten the weights)
        self.fast_norm = nn.RMSNorm(Df, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Projections ~ N(0, 0.02) with zero biases; fast weights ~ N(0, 1 / fan-in), as released; the
        fast-weight output norm and the fast q/k scale and offset the identity."""
        for lin in (self.wqkv, self.wo, self.lr_proj, self.momentum_proj, self.fast_scale_proj):
            if lin is not None:
                nn.init.normal_(lin.weight, std=INIT_STD)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
        nn.init.normal_(self.w0, std=self.fast_dim**-0.5)
        nn.init.normal_(self.w2, std=self.fast_dim**-0.5)
        nn.init.normal_(self.w1, std=self.fast_hidden**-0.5)
        nn.init.ones_(self.qk_scale)
        nn.init.zeros_(self.qk_offset)
        self.fast_norm.reset_parameters()

    def no_weight_decay(self) -> list[nn.Parameter]:
        """The initial fast weights (their row norms are what every update is rescaled to) and the
        per-channel scale and offset of fast q and k."""
        return [self.w0, self.w1, self.w2, self.qk_scale, self.qk_offset]

    def check_state(self, state: LaCTLayerState) -> None:
        """Raises ValueError when this layer cannot go on from ``state``: one made with another window
        (its cache's length), head count or width (its cache's heads), momentum setting or fast-weight
        shape, or further into its open chunk than this chunk holds."""
        if state.keys.shape[2] != self.window - 1:
            raise ValueError(
                f"the state caches {state.keys.shape[2]} tokens (made with window={state.keys.shape[2] + 1}); "
                f"this layer has window={self.window}"
            )
        heads = (self.num_heads, self.head_dim)
        if any((cache.shape[1], cache.shape[3]) != heads for cache in (state.keys, state.values)):
            raise ValueError(
                f"the state caches attention heads of shape {tuple(state.keys.shape[1::2])} (heads, width); this "
                f"layer has {heads}"
            )
        if (state.fast.velocity is not None) != self.momentum:
            raise ValueError(
                f"the state was made with momentum={state.fast.velocity is not None}; this layer has "
                f"momentum={self.momentum}"
            )
        state.fast.check_shapes(self.fast_shapes, state.fast.count.shape[0])
        state.fast.check_continued_with(self.chunk_size)

    def initial_state(self, batch_size: int) -> LaCTLayerState:
        """The state before the first token (``None`` passed to ``forward`` means the same). The fast
        weights stay attached to the initial ones, so a stream restarted in training trains them."""
        dtype = exact_dtype(self.w0.dtype)  # as the core's own
        fast = LaCTState.initial((self.w0, self.w1, self.w2), batch_size, dtype, self.momentum)
        cache = self.w0.new_zeros(batch_size, self.num_heads, self.window - 1, self.head_dim, dtype=dtype)
        cached = torch.zeros(batch_size, dtype=torch.int64)  # (on the CPU: `LaCTLayerState`)
        return LaCTLayerState(fast, cache, cache.clone(), cached)

    def forward(self, x: Tensor, state: LaCTLayerState | None = None) -> tuple[Tensor, LaCTLayerState]:
        """``x [B, T, C]`` (the block's normed input) -> ``y [B, T, C]`` and the state after ``x``."""
        check_input(x, self.dim, state, LaCTLayerState, self.wqkv.weight)
        if state is None:
            state = self.initial_state(x.shape[0])
        else:
            self.check_state(state)
        if x.shape[1] == 0:
            return self.wo(x), state
        tokens = piece_tokens(x, PIECE_TOKENS)
        return in_pieces(self._forward, x, state, -(-tokens // self.chunk_size) * self.chunk_size)

    def _forward(self, x: Tensor, state: LaCTLayerState) -> tuple[Tensor, LaCTLayerState]:
        qkv = self.wqkv(x)  # [B, T, 3C]
        o, keys, values, cached = self._window_attention(*qkv.chunk(3, dim=-1), state)
        fast, fast_state = self._fast_weights(x, qkv, state.fast)
        y = self.wo(o + fast)
        return y, LaCTLayerState(fast_state, keys, values, cached)

    def _fast_weights(self, x: Tensor, qkv: Tensor, state: LaCTState) -> tuple[Tensor, LaCTState]:
        Hf = self.fast_heads
        fq, fk, fv = fast_inputs(qkv, self.qk_scale, self.qk_offset, Hf, L2_EPS)  # [B, Hf, T, Df] each
        wide = torch.promote_types(x.dtype, torch.float32)  # step sizes and gates at least in float32
        lr = F.softplus(self.lr_proj(x).to(wide) + self.lr_offset)  # [B, T, 3 Hf]
        lr = lr.unflatten(-1, (Hf, 3)).transpose(1, 2)  # [B, Hf, T, 3]
        gate = None
        if self.momentum_proj is not None:
            gate = torch.sigmoid(self.momentum_proj(x).to(wide)).transpose(1, 2)  # [B, Hf, T]
        # the core's backward rebuilds its q, k, v (6 KB per token at width 512) from qkv, kept anyway
        args = (qkv.detach(), self.qk_scale.detach(), self.qk_offset.detach(), Hf, L2_EPS)
        with recomputed(fq, lambda: fast_inputs(*args)[0]):
            out, state = lact_swiglu(
                fq, fk, fv, lr, self.w0, self.w1, self.w2, gate, chunk_size=self.chunk_size, muon=self.muon, state=state
            )
        norm = self.fast_norm
        return gated_rms_norm(out.to(x.dtype), norm.weight, self.fast_scale_proj(x), norm.eps), state

    def _window_attention(self, q: Tensor, k: Tensor, v: Tensor, state: LaCTLayerState):
        """``o [B, T, C]`` of the causal sliding-window attention, and the new ``keys``, ``values``, ``cached``."""
        B, T, C = q.shape
        H, Fh, P = self.num_heads, self.head_dim, self.window - 1
        q, k, v = (t.unflatten(-1, (H, Fh)) for t in (q, k, v))  # [B, T, H, F]
        rotation = rope_rotation(torch.arange(-P, T, device=q.device), Fh, self.rope_theta)
        o = window_attention(q, k, v, state.keys, state.values, state.cached, rotation)
        slots = ((state.keys, k), (state.values, v))
        keys, values = (_last_slots(cache, new, P, exact_dtype(self.w0.dtype)) for cache, new in slots)
        return o.reshape(B, T, C), keys, values, torch.clamp(state.cached + T, max=P)


def _last_slots(cache: Tensor, new: Tensor, P: int, dtype: torch.dtype) -> Tensor:
    """The cache ``[B, H, P, F]`` after the new tokens ``[B, T, H, F]``: their last ``P``, in ``dtype`` (a
    cache carried from a layer of another dtype is not kept in it)."""
    T = new.shape[1]
    new = new.to(dtype).transpose(1, 2)
    return new[:, :, T - P :].contiguous() if T >= P else torch.cat([cache[:, :, T:].to(dtype), new], dim=2)
