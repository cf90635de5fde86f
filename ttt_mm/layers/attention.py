"""Causal softmax attention (SDPA) with a KV cache: the quadratic baseline, same interface as TTTLayer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.rope import apply_rope, rope_rotation
from .mixer import INIT_STD, check_input, rope_head_width


@dataclass
class KVCache:
    """Keys and values of every token seen so far, ``[B, H, L, F]`` each (RoPE already applied)."""

    k: Tensor
    v: Tensor

    def detach(self) -> KVCache:
        return KVCache(self.k.detach(), self.v.detach())


class AttentionLayer(nn.Module):
    """Multi-head causal attention with RoPE at absolute positions; memory grows with the context."""

    bounded_state = False
    """The KV cache holds every token seen: it cannot be carried across training windows."""
    restart_unit = None

    def __init__(self, dim: int, num_heads: int, rope_theta: float = 10000.0):
        super().__init__()
        self.dim, self.num_heads, self.rope_theta = dim, num_heads, rope_theta
        self.head_dim = rope_head_width(dim, num_heads, rope_theta)
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        for lin in (self.wqkv, self.wo):
            nn.init.normal_(lin.weight, std=INIT_STD)

    def initial_state(self, batch_size: int) -> KVCache:
        """An empty cache (the same as passing ``None``)."""
        empty = self.wo.weight.new_zeros(batch_size, self.num_heads, 0, self.head_dim)
        return KVCache(empty, empty.clone())

    def check_state(self, state: KVCache) -> None:
        """Raises ValueError unless ``state`` caches keys and values of this layer's heads (its count and
        width); a cache of any length goes on (its keys carry their positions)."""
        B, H, F = state.k.shape[0], self.num_heads, self.head_dim
        if state.k.dim() != 4 or state.k.shape[1:2] + state.k.shape[3:] != (H, F) or state.v.shape != state.k.shape:
            raise ValueError(
                f"the cache holds keys {tuple(state.k.shape)} and values {tuple(state.v.shape)}; this layer caches "
                f"[{B}, {H}, tokens, {F}] each ({H} heads of {F}): a cache of another attention layer"
            )

    def no_weight_decay(self) -> list[nn.Parameter]:
        """Nothing beyond the generic rule (tensors of < 2 dims, norms)."""
        return []

    def forward(self, x: Tensor, state: KVCache | None = None) -> tuple[Tensor, KVCache]:
        check_input(x, self.dim, state, KVCache, self.wqkv.weight)
        if state is not None:
            self.check_state(state)
        B, T, C = x.shape
        H = self.num_heads
        qkv = self.wqkv(x).unflatten(-1, (3 * H, self.head_dim))  # [B, T, 3H, F]
        past = 0 if state is None else state.k.shape[2]
        rotation = rope_rotation(torch.arange(past, past + T, device=x.device), self.head_dim, self.rope_theta)
        qk, v = qkv.split([2 * H, H], dim=2)  # split, not slices: its backward fills no zeros
        qk = apply_rope(qk, rotation).transpose(1, 2)  # [B, 2H, T, F]
        q, k = qk[:, :H], qk[:, H:]
        v = v.transpose(1, 2)
        if state is not None:
            k, v = torch.cat([state.k.to(k.dtype), k], dim=2), torch.cat([state.v.to(v.dtype), v], dim=2)
        if past == 0:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # query i sits at absolute position past + i and sees keys 0 .. past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(o.transpose(1, 2).reshape(B, T, C)), KVCache(k, v)
