"""Token ranges that the LaCT functions with hand-written backward passes work through one at a time."""

from __future__ import annotations

import torch


def token_tiles(n: int, size: int, device: torch.device) -> list[slice]:
    """``n`` tokens in tiles of ``size`` on the CPU, where a tile's temporaries then stay in cache; on
    a GPU in one tile (its caches are not the point there; kernel launches are)."""
    size = size if device.type == "cpu" else max(n, 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
