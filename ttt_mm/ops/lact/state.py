"""The state a LaCT core carries from one call to the next."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..state_shapes import check_rows_of

Weights = tuple[Tensor, Tensor, Tensor]


@dataclass
class LaCTState:
    """Fast weights at the last chunk boundary plus what the open chunk has contributed since.

    Every tensor has a fixed shape, whatever the number of tokens seen, and a leading batch dim, so
    single rows can be restarted with ``torch.where`` (rows may then sit at different places in
    their chunks: ``count`` is per row).

    - ``weights``: ``(W0 [B, H, M, D], W1 [B, H, E, M], W2 [B, H, M, D])``, the SwiGLU fast weights
      ``f(x) = W1 (silu(W0 x) * (W2 x))`` that the open chunk's tokens are answered with.
    - ``grads``: same shapes: the step the open chunk asks for so far, ``sum_t lr_t * grad_t`` of the
      inner objective over its tokens (zeros when ``count == 0``). Apply-then-update makes every
      token's gradient depend only on ``weights``, so the sum is exact whatever the call boundaries.
    - ``velocity``: same shapes: the last chunk's update after momentum (the momentum buffer), or
      ``None`` for a core run without momentum.
    - ``gate_sum``: ``[B, H]``, the sum of the open chunk's momentum gates (``None`` without momentum).
    - ``count``: ``[B]`` int64, tokens of the open chunk seen, ``0 <= count < chunk_size``; on the
      CPU whatever the device: each call plans its chunks from it, which on a GPU would wait for it.
    """

    weights: Weights
    grads: Weights
    velocity: Weights | None
    gate_sum: Tensor | None
    count: Tensor

    @classmethod
    def initial(cls, weights: Weights, batch_size: int, dtype: torch.dtype, momentum: bool) -> LaCTState:
        """The state before the first token: the shared initial weights ``[H, ...]``, one copy per row.
        The copies stay attached to ``weights``, so a stream that starts in training trains them."""
        expanded = tuple(w.to(dtype).unsqueeze(0).expand(batch_size, *w.shape) for w in weights)
        zeros = tuple(torch.zeros_like(w) for w in expanded)
        H, device = weights[0].shape[0], weights[0].device
        return cls(
            expanded,
            zeros,
            tuple(torch.zeros_like(w) for w in expanded) if momentum else None,
            torch.zeros(batch_size, H, dtype=dtype, device=device) if momentum else None,
            torch.zeros(batch_size, dtype=torch.int64),  # (on the CPU: see ``count``)
        )

    def detach(self) -> LaCTState:
        """The same state cut from the autograd graph (for carrying state across training windows)."""

        def cut(ws):
            return None if ws is None else tuple(w.detach() for w in ws)

        return replace(
            self,
            weights=cut(self.weights),
            grads=cut(self.grads),
            velocity=cut(self.velocity),
            gate_sum=None if self.gate_sum is None else self.gate_sum.detach(),
        )

    def check_shapes(self, shapes: Sequence[Sequence[int]], batch_size: int) -> None:
        """Raises ValueError unless this state holds the initial fast weights' ``shapes`` (``[H, ...]``
        each) for ``batch_size`` rows: one from another batch, head count or fast-weight width."""
        held = {"fast weights": self.weights, "pending steps": self.grads}
        if self.velocity is not None:
            held["momentum buffers"] = self.velocity
        check_rows_of(held, shapes, batch_size)
        if self.count.shape != (batch_size,):
            raise ValueError(f"state.count must be [B] = [{batch_size}]; got {tuple(self.count.shape)}")
        if self.gate_sum is not None and self.gate_sum.shape != (batch_size, shapes[0][0]):
            raise ValueError(
                f"state.gate_sum must be [B, H] = {(batch_size, shapes[0][0])}; got {tuple(self.gate_sum.shape)}"
            )

    def check_continued_with(self, chunk_size: int) -> None:
        """Raises ValueError when a core with ``chunk_size`` cannot go on from this state (a row is
        further into its open chunk than such a chunk holds)."""
        counts = self.count.tolist()
        if not all(0 <= c < chunk_size for c in counts):
            raise ValueError(
                f"its rows are {counts} tokens into their open chunk, which chunk_size={chunk_size} cannot "
                "finish (it was made with a larger chunk_size)"
            )
