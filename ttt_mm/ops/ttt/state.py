"""The state a TTT core carries from one call to the next."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..state_shapes import check_rows_of


@dataclass
class TTTState:
    """Inner model at the last mini-batch boundary plus the partial mini-batch seen since.

    ``params`` are the inner weights at the last boundary, per batch row and head:
    ``(W [B, H, F, F], b [B, H, F])`` for TTT-Linear and
    ``(W1 [B, H, F, 4F], b1 [B, H, 4F], W2 [B, H, 4F, F], b2 [B, H, F])`` for TTT-MLP.
    ``grads`` has the same shapes: the sums ``sum_j lr_j * grad_j`` over the tokens already seen in
    the current, unfinished mini-batch (zeros when ``pos == 0``). ``pos`` is how many tokens of that
    mini-batch were seen, ``0 <= pos < K``. The state never grows with the sequence length.
    ``mini_batch_size`` is the K of that open mini-batch, which a call with another K cannot finish
    (None: none is open, or not recorded, for a state built by hand). At a boundary the state holds
    nothing tied to K, so it records none there: states of cores with different Ks are alike (a row
    restarted in a batch merges with them), as are those of checkpoints that recorded one.
    """

    params: tuple[Tensor, ...]
    grads: tuple[Tensor, ...]
    pos: int
    mini_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.pos == 0:
            self.mini_batch_size = None

    @classmethod
    def initial(cls, params: tuple[Tensor, ...], batch_size: int, dtype: torch.dtype) -> TTTState:
        """The state before the first token: the shared initial weights, copied for each batch row."""
        expanded = tuple(p.to(dtype).unsqueeze(0).expand(batch_size, *p.shape) for p in params)
        return cls(expanded, tuple(torch.zeros_like(p) for p in expanded), 0)

    def detach(self) -> TTTState:
        """The same state cut from the autograd graph (for carrying state across training windows)."""
        return replace(self, params=tuple(p.detach() for p in self.params), grads=tuple(g.detach() for g in self.grads))

    def check_shapes(self, shapes: Sequence[Sequence[int]], batch_size: int) -> None:
        """Raises ValueError unless this state holds the initial inner weights' ``shapes`` (``[H, ...]``
        each) for ``batch_size`` rows: one from another batch, head count or inner model."""
        check_rows_of({"inner weights": self.params, "pending steps": self.grads}, shapes, batch_size)

    def check_continued_with(self, mini_batch_size: int) -> None:
        """Raises ValueError when a core with ``mini_batch_size`` cannot go on from this state (its
        open mini-batch is of another size)."""
        K = mini_batch_size
        if not 0 <= self.pos < K and self.mini_batch_size in (None, K):
            raise ValueError(f"state.pos must be in [0, {K}); got {self.pos}")
        if not 0 <= self.pos < K or (self.pos and self.mini_batch_size not in (None, K)):
            raise ValueError(
                f"the state holds {self.pos} tokens of a mini-batch of {self.mini_batch_size or 'unrecorded size'}, "
                f"which mini_batch_size={K} cannot finish (go on with the mini_batch_size the sequence started with)"
            )
