"""Pre-norm residual blocks and the embedding-agnostic ``Backbone`` stack, with explicit streaming state.

The sequence mixer is injected: the backbone calls a factory (``mixer(dim=C)``) once per block and
then only asks the mixers the questions of `ttt_mm.layers.Mixer` (is the state bounded, which
parameters take no weight decay), so it never knows which mixer it holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import CausalDepthwiseConv, MixerFactory, SwiGLU
from .layers.mixer import RestartUnit, check_input, state_leaves
from .messages import check_count, check_positive

VARIANTS = ("transformer", "mamba")


@dataclass
class BlockState:
    mixer: Any  # the mixer's own state dataclass (e.g. TTTLayerState, KVCache)
    conv: Tensor | None = None  # cache of the mamba variant's pre-mixer conv

    def detach(self) -> BlockState:
        return BlockState(self.mixer.detach(), None if self.conv is None else self.conv.detach())


@dataclass
class BackboneState:
    """Per-block state; pass it back in to continue the same sequence (fixed size for bounded mixers)."""

    blocks: list[BlockState] = field(default_factory=list)

    def detach(self) -> BackboneState:
        return BackboneState([b.detach() for b in self.blocks])


def state_tensors(state) -> list[Tensor]:
    """Every tensor inside a (nested) state, in a fixed order: to measure a state or compare two."""
    return [leaf for leaf in state_leaves(state) if isinstance(leaf, Tensor)]


def with_leaves(template, leaves: list[Any]):
    """``template`` (a state of the same model and batch size) holding ``leaves`` instead of its own,
    e.g. a state saved as plain leaves in a checkpoint. Raises ValueError when they do not fit it."""
    rest = iter(leaves)

    def rebuild(node):
        if dataclasses.is_dataclass(node):
            return dataclasses.replace(
                node, **{f.name: rebuild(getattr(node, f.name)) for f in dataclasses.fields(node)}
            )
        if isinstance(node, (list, tuple)):
            return type(node)(rebuild(item) for item in node)
        leaf = next(rest, _MISSING)
        if isinstance(node, Tensor) != isinstance(leaf, Tensor) or (
            isinstance(node, Tensor) and node.shape != leaf.shape
        ):
            raise ValueError(
                "the leaves are not those of this state (another model or batch size; or an attention cache, "
                "whose length grows with every token: not kept this way)"
            )
        return leaf.to(device=node.device) if isinstance(leaf, Tensor) else leaf

    state = rebuild(template)
    if next(rest, _MISSING) is not _MISSING:
        raise ValueError("the leaves are not those of this state (another model or batch size)")
    return state


_MISSING = object()


class Restart:
    """The batch rows ``[B]`` (bool) whose state starts afresh in a forward pass (a new stream starts
    in them while the others go on), with the mask's copy on each device the state is on, made once
    (a state has dozens of tensors, some kept on the CPU; a copy for each made every step wait for
    the device as often)."""

    def __init__(self, rows: Tensor):
        self.rows = rows.to(dtype=torch.bool)
        self.all, self.any = bool(self.rows.all()), bool(self.rows.any())
        self._copies = {self.rows.device: self.rows}

    def on(self, device: torch.device) -> Tensor:
        if device not in self._copies:
            self._copies[device] = self.rows.to(device)
        return self._copies[device]


def _merge_rows(old, fresh, rows: Restart):
    if isinstance(old, Tensor):
        keep_shape = rows.on(old.device).view(-1, *[1] * (old.dim() - 1))
        return torch.where(keep_shape, fresh.to(device=old.device, dtype=old.dtype), old)
    if dataclasses.is_dataclass(old):
        merged = {
            f.name: _merge_rows(getattr(old, f.name), getattr(fresh, f.name), rows) for f in dataclasses.fields(old)
        }
        return dataclasses.replace(old, **merged)
    if isinstance(old, (list, tuple)):
        return type(old)(_merge_rows(a, b, rows) for a, b in zip(old, fresh, strict=True))
    if rows.any and old != fresh:  # a plain-int field (e.g. a position in a TTT mini-batch): shared by all rows
        raise ValueError(
            f"cannot restart some rows of a batch in the middle of the mixer's restart unit (position {old}); "
            "use windows whose token count is a multiple of it (the mixer's restart_unit)"
        )
    return old


class Block(nn.Module):
    """``x += mixer(RMSNorm(x)); x += SwiGLU(RMSNorm(x))``; the mamba variant first adds
    ``x += conv(RMSNorm(x))`` with a depthwise causal conv."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_hidden: int, pre_conv: bool = False, conv_kernel: int = 4):
        super().__init__()
        self.conv_norm = nn.RMSNorm(dim, eps=1e-6) if pre_conv else None
        self.conv = CausalDepthwiseConv(dim, conv_kernel) if pre_conv else None
        self.mixer_norm = nn.RMSNorm(dim, eps=1e-6)
        self.mixer = mixer
        self.mlp_norm = nn.RMSNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, mlp_hidden)

    def initial_state(self, batch_size: int) -> BlockState:
        conv = None
        if self.conv is not None:
            conv = self.conv.conv.weight.new_zeros(
                batch_size, self.conv.kernel_size - 1, self.conv.conv.weight.shape[0]
            )
        return BlockState(self.mixer.initial_state(batch_size), conv)

    def restarted(self, state: BlockState, rows: Restart) -> BlockState:
        """``state`` with ``rows`` replaced by the initial state. Made in the block's forward pass, where
        FSDP has gathered the block's parameters (outside it, they are flat shards). The merge runs even
        when no row restarts, so that the initial state's parameters take part in every training step
        (with zero gradient), as data-parallel training requires."""
        fresh = self.initial_state(rows.rows.shape[0])
        return fresh if rows.all else _merge_rows(state, fresh, rows)

    def forward(
        self, x: Tensor, state: BlockState | None = None, restart: Restart | None = None
    ) -> tuple[Tensor, BlockState]:
        if state is not None and restart is not None:
            state = self.restarted(state, restart)
        conv_cache = None
        if self.conv is not None:
            h, conv_cache = self.conv(self.conv_norm(x), None if state is None else state.conv)
            x = x + h
        h, mixer_state = self.mixer(self.mixer_norm(x), None if state is None else state.mixer)
        x = x + h
        x = x + self.mlp(self.mlp_norm(x))
        return x, BlockState(mixer_state, conv_cache)


class Backbone(nn.Module):
    """A stack of blocks mapping ``[B, T, C]`` vectors to ``[B, T, C]``; knows nothing of modalities.

    Args:
        dim: width ``C``. depth: number of blocks (both from ``conf/size``).
        mixer: the sequence-mixer factory, called as ``mixer(dim=dim)`` once per block (see
            `ttt_mm.layers.Mixer`; in the configs a ``_partial_`` node of ``conf/model/<name>.yaml``,
            in Python e.g. ``functools.partial(TTTLayer, num_heads=4, inner="mlp")``).
        variant: ``"transformer"`` (plain pre-norm blocks) or ``"mamba"`` (a causal depthwise conv
            before each mixer, as in the release's Mamba backbone; the TTT configs also give the mixer
            its shared-qk convs and output gate then).
        mlp_ratio: SwiGLU hidden width over ``dim``.
        checkpoint_activations: recompute each block in the backward pass to save memory.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        mixer: MixerFactory,
        variant: Literal["transformer", "mamba"] = "transformer",
        mlp_ratio: float = 4.0,
        checkpoint_activations: bool = False,
    ):
        super().__init__()
        if isinstance(mixer, str) or not callable(mixer):
            raise ValueError(
                f"unknown mixer {mixer!r}: the mixer is a factory, chosen with model=<name> "
                "(conf/model/<name>.yaml: ttt_linear, ttt_mlp, attention, lact), or in Python e.g. "
                "functools.partial(TTTLayer, num_heads=4)"
            )
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
        check_count(depth=depth, dim=dim)
        check_positive(mlp_ratio=mlp_ratio)
        self.dim, self.depth, self.checkpoint_activations = dim, depth, checkpoint_activations
        hidden = int(round(mlp_ratio * dim))
        if hidden < 1:
            raise ValueError(f"mlp_ratio ({mlp_ratio}) leaves the MLP no hidden unit at dim {dim}")
        self.blocks = nn.ModuleList(
            Block(dim, mixer(dim=dim), hidden, pre_conv=variant == "mamba") for _ in range(depth)
        )
        self.norm = nn.RMSNorm(dim, eps=1e-6)

    @property
    def bounded_state(self) -> bool:
        """True when every mixer's state has a fixed size (it can be carried across training windows)."""
        return all(block.mixer.bounded_state for block in self.blocks)

    @property
    def restart_unit(self) -> RestartUnit | None:
        """Tokens the mixers' state restarts single rows in (`RestartUnit`, None: any); every block's
        mixer is built by one factory, so the first says it."""
        return self.blocks[0].mixer.restart_unit

    @property
    def mixer_name(self) -> str:
        """The mixers' kind in a word, as the model configs name it (``ttt_linear``, ``ttt_mlp``, ``attention``,
        ``lact``): a default name for a run. (A TTT layer named ``ttt`` alone made TTT-Linear and TTT-MLP,
        evaluated side by side, read as two runs of one model.)"""
        mixer = self.blocks[0].mixer
        kind = type(mixer).__name__.removesuffix("Layer").lower()
        return f"{kind}_{mixer.inner}" if isinstance(getattr(mixer, "inner", None), str) else kind

    def no_weight_decay(self) -> list[nn.Parameter]:
        """The mixers' parameters that take no weight decay (beyond tensors of < 2 dims and norms)."""
        return [p for block in self.blocks for p in block.mixer.no_weight_decay()]

    def initial_state(self, batch_size: int) -> BackboneState:
        """The state before the first token, the same as passing ``None``."""
        return BackboneState([block.initial_state(batch_size) for block in self.blocks])

    def check_state(self, state: BackboneState) -> None:
        """Raises ValueError when a mixer cannot go on from its part of ``state`` (`Mixer.check_state`), or
        the state is of another number of blocks."""
        if len(state.blocks) != self.depth:
            raise ValueError(f"the state is of {len(state.blocks)} blocks; this backbone has {self.depth}")
        for block, block_state in zip(self.blocks, state.blocks, strict=True):
            block.mixer.check_state(block_state.mixer)

    def forward(
        self, x: Tensor, state: BackboneState | None = None, restart: Tensor | None = None
    ) -> tuple[Tensor, BackboneState]:
        """``x [B, T, C]`` -> ``y [B, T, C]`` (after the final norm) and the state after ``x``. ``restart
        [B]`` (bool, best on the CPU): rows of ``state`` that start afresh instead (`Block.restarted`; with
        attention, whose cache grows, every row or none)."""
        y, _, state = self.forward_intermediates(x, state, layers=(), restart=restart)
        return y, state

    def forward_intermediates(
        self,
        x: Tensor,
        state: BackboneState | None = None,
        layers: tuple[int, ...] | None = None,
        restart: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor], BackboneState]:
        """Like :meth:`forward`, also returning the outputs of the blocks in ``layers`` (indices from
        ``-depth`` to ``depth - 1``; ``None`` = all), for embedding and probing: in block order, once each."""
        if layers is not None and (bad := [i for i in layers if not -self.depth <= i < self.depth]):
            raise ValueError(f"layers must be block indices from {-self.depth} to {self.depth - 1}; got {bad}")
        if state is not None:
            if not isinstance(state, BackboneState):
                raise TypeError(
                    f"state must be a BackboneState (what a call returned) or None; got {type(state).__name__}"
                )
            if len(state.blocks) != self.depth:
                raise ValueError(f"the state is of {len(state.blocks)} blocks; this backbone has {self.depth}")
        check_input(x, self.dim, state, weights=self.norm.weight)
        if restart is not None and tuple(restart.shape) != (x.shape[0],):
            raise ValueError(f"restart must be [batch] = [{x.shape[0]}] (a flag per row); got {tuple(restart.shape)}")
        if restart is not None and restart.dtype != torch.bool:  # (0.3 would restart its row: no flag at all)
            raise ValueError(f"restart must be a bool tensor (a flag per row); got {restart.dtype}")
        wanted = set(range(self.depth)) if layers is None else {i % self.depth for i in layers}
        rows = None if restart is None or state is None else Restart(restart)
        if rows is not None and not self.bounded_state and not rows.all:  # (a cache of each row's whole past)
            if rows.any:
                raise ValueError(
                    "restart: attention's cache grows with each row's past, so single rows cannot start afresh "
                    "in a batch: restart every row or none (TTT and LaCT states restart by row)"
                )
            rows = None
        hidden, new_states = [], []
        for i, block in enumerate(self.blocks):
            block_state = None if state is None else state.blocks[i]
            if self.checkpoint_activations and self.training and torch.is_grad_enabled():
                x, block_state = checkpoint(block, x, block_state, rows, use_reentrant=False)
            else:
                x, block_state = block(x, block_state, rows)
            new_states.append(block_state)
            if i in wanted:
                hidden.append(x)
        return self.norm(x), hidden, BackboneState(new_states)
