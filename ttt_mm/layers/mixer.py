"""The sequence-mixer protocol every mixer in this package follows (and the backbone relies on).

A mixer is built by a factory that the backbone calls once per block with ``dim=`` (in the configs a
Hydra ``_partial_: true`` node, ``conf/model/<name>.yaml``), so adding a mixer is a new layer class
and a config file: the backbone, the LightningModule and the embed and evaluate code never compare
mixer names; they ask the questions below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..messages import check_count, check_positive

INIT_STD = 0.02
"""Standard deviation of the mixers' projection weights at initialisation (as GPT-2's)."""


@dataclass(frozen=True)
class RestartUnit:
    """The unit of tokens a bounded mixer steps in, as carried training windows see it: a batch row
    whose file ends restarts (`ttt_mm.backbone.Block.restarted`) at a window boundary while the others go on."""

    tokens: int
    name: str  # what the units are called in messages, e.g. "TTT mini-batches"
    argument: str  # the mixer's constructor argument that sets ``tokens`` (its config key under the mixer's node)
    required: bool
    """True: a row can restart alone only between units (a window must hold whole ones); False: it
    can restart anywhere, but rows restarted between units run together (faster)."""
    applied_after: bool = False
    """True when a unit's update reaches only the tokens after the unit (LaCT's apply-then-update),
    so that a training window must hold more than one unit for the update's step sizes to learn."""


class Mixer(Protocol):
    """``forward(x [B, T, C], state | None) -> (y [B, T, C], state)``: ``None`` starts a sequence and
    passing the returned state continues it; any split of a sequence into calls gives the outputs of
    one call. The state is a dataclass with a ``detach()`` method, and every tensor in it has the batch
    axis first (so that single rows can be restarted, and a state checked against its input)."""

    bounded_state: bool
    """True when the state has a fixed size whatever the length (it can be carried across training
    windows, and rows restarted with `ttt_mm.backbone.Block.restarted`); False for a growing cache."""

    restart_unit: RestartUnit | None
    """How a bounded mixer steps through tokens (None: token by token, so rows restart anywhere)."""

    def __call__(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]: ...

    def initial_state(self, batch_size: int) -> Any:
        """The state before the first token (the same as ``None``); for a bounded mixer, tensors whose
        shapes do not depend on how many tokens were seen."""
        ...

    def check_state(self, state: Any) -> None:
        """Raises ValueError when this mixer cannot go on from ``state``, one made with other settings
        (another head count or width; TTT's part way through a mini-batch of another size; LaCT's
        further into its open chunk than its chunk holds: a chunk's sums record no size): a carried
        state restored from a checkpoint into a mixer configured otherwise."""
        ...

    def no_weight_decay(self) -> list[nn.Parameter]:
        """Parameters that take no weight decay beyond the generic rule (tensors of < 2 dims, norms)."""
        ...


def state_leaves(state) -> list[Any]:
    """Every leaf of a (nested) state in a fixed order: tensors, and the plain values beside them
    (a position in a TTT mini-batch, an absent cache's None)."""
    if dataclasses.is_dataclass(state):
        state = [getattr(state, f.name) for f in dataclasses.fields(state)]
    if isinstance(state, (list, tuple)):
        return [leaf for item in state for leaf in state_leaves(item)]
    return [state]


def rope_head_width(dim: int, num_heads: int, rope_theta: float) -> int:
    """The width of each of a mixer's ``num_heads`` heads of ``dim``, which RoPE rotates in pairs: whole
    and even, or a clear error when the mixer is built (not a shape error at its first call); and
    RoPE's base, which must be positive (0 or less makes every rotation NaN)."""
    check_count(dim=dim, num_heads=num_heads)
    check_positive(rope_theta=rope_theta)
    if dim % num_heads or (dim // num_heads) % 2:
        raise ValueError(
            f"dim ({dim}) must split into num_heads ({num_heads}) heads of even width (RoPE rotates pairs); "
            f"got {dim / num_heads:g}"
        )
    return dim // num_heads


def check_input(
    x: Tensor, dim: int, state: Any = None, state_type: type | None = None, weights: Tensor | None = None
) -> None:
    """Raises ValueError unless ``x`` is ``[B, T, dim]`` of the dtype of ``weights`` (a weight of the
    module: any dtype under autocast) and ``state`` (None: a new sequence) holds the same ``B`` rows,
    TypeError unless ``state`` is a ``state_type`` (another mixer's state, say): mistakes caught here
    instead of as a shape, dtype or attribute error deep inside a layer."""
    if state is not None and state_type is not None and not isinstance(state, state_type):
        raise TypeError(
            f"state must be a {state_type.__name__} (what this layer returned) or None; got {type(state).__name__}"
        )
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"the input must be [batch, tokens, {dim}]; got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"the input must be floating point (token embeddings); got {x.dtype}")
    if weights is not None and x.dtype != weights.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f"the input is {x.dtype} and the weights {weights.dtype}: move one to the other's dtype "
            f"(x.to({weights.dtype}) or module.to({x.dtype})), or run under torch.autocast"
        )
    rows = {leaf.shape[0] for leaf in state_leaves(state) if isinstance(leaf, Tensor)}
    if rows and rows != {x.shape[0]}:
        raise ValueError(
            f"the state holds {' or '.join(map(str, sorted(rows)))} batch rows; the input has {x.shape[0]} "
            "(continue a sequence with the batch it was started with)"
        )


MixerFactory = Callable[..., nn.Module]
"""Called as ``factory(dim=C)``; returns a new `Mixer` ``nn.Module``."""
