"""The sequence-mixer protocol every mixer in this package follows (and the backbone relies on).

A mixer is built by a factory that the backbone calls once per block with ``dim=`` (in the configs a
Hydra ``_partial_: true`` node, ``conf/model/<name>.yaml``), so adding a mixer is a new layer class
and a config file: the backbone, the LightningModule and the embed and evaluate code never compare
mixer names; they ask the questions below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import Tensor, nn


class Mixer(Protocol):
    """``forward(x [B, T, C], state | None) -> (y [B, T, C], state)``: ``None`` starts a sequence and
    passing the returned state continues it; any split of a sequence into calls gives the outputs of
    one call. The state is a dataclass with a ``detach()`` method."""

    bounded_state: bool
    """True when the state has a fixed size whatever the length (it can be carried across training
    windows, and rows restarted with `ttt_mm.backbone.reset_rows`); False for a growing cache."""

    def __call__(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]: ...

    def initial_state(self, batch_size: int) -> Any:
        """The state before the first token (the same as ``None``); for a bounded mixer, tensors whose
        shapes do not depend on how many tokens were seen."""
        ...

    def no_weight_decay(self) -> list[nn.Parameter]:
        """Parameters that take no weight decay beyond the generic rule (tensors of < 2 dims, norms)."""
        ...


MixerFactory = Callable[..., nn.Module]
"""Called as ``factory(dim=C)``; returns a new `Mixer` ``nn.Module``."""
