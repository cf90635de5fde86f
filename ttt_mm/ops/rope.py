"""Rotary position embedding on interleaved pairs ``(2i, 2i+1)`` rotating with frequency ``i``.

Each pair is treated as one complex number, so the rotation is a single complex multiply.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .precision import exact_dtype


def rope_rotation(positions: Tensor, head_dim: int, theta: float = 10000.0) -> Tensor:
    """Unit complex numbers ``exp(i * pos * theta^(-2j/F))``, ``[T, F/2]`` (complex128; cast on use)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate ``x [B, T, n, F]`` (``n`` heads) by ``rotation [T, F/2]``; returns ``x``'s dtype."""
    real = exact_dtype(x.dtype)
    pairs = torch.view_as_complex(x.to(real).unflatten(-1, (-1, 2)))  # [B, T, n, F/2]
    return torch.view_as_real(pairs * rotation.to(pairs.dtype)[:, None, :]).flatten(-2).to(x.dtype)
