"""The shape check shared by the cores' carried states."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor


def check_rows_of(groups: Mapping[str, Sequence[Tensor]], shapes: Sequence[Sequence[int]], batch_size: int) -> None:
    """Raises ValueError unless every group of tensors (by name: the weights, their pending step, ...)
    holds the initial ``shapes`` (``[H, ...]`` each) for ``batch_size`` rows: a state carried from
    another batch, head count or width would otherwise fail deep inside a kernel, or broadcast silently."""
    want = [(batch_size, *shape) for shape in shapes]
    for name, group in groups.items():
        got = [tuple(t.shape) for t in group]
        if got != want:
            raise ValueError(
                f"the state's {name} are {got}; these inputs continue {want} (batch, heads, ...): "
                "continue a sequence with the batch and the model it was started with"
            )
