"""The backbone state a streamed training run carries from one batch to the next, and through a
checkpoint, so that a resumed run goes on with each row's context where it stopped.

Each batch row walks its own clips window by window (`ttt_mm.data.training_order.StreamWindows`). Between
batches the state goes on in a row only when the batch follows the one before in the stream and the
row goes on in the same clip; anywhere else the row starts afresh, as it does at a clip's first window.
A checkpoint holds each process's part (`CarriedState.saved`); a resume hands each its own (`own_part`),
checked against the model's initial state, made under FSDP with the parameters gathered
(`gathered_initial_state`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torch.distributed.fsdp import FullyShardedDataParallel

from ..backbone import Backbone, BackboneState, with_leaves
from ..layers.mixer import state_leaves
from .checkpoint_io import in_memory

log = logging.getLogger(__name__)


class Place(NamedTuple):
    """Where a batch stands in the stream, in plain numbers: read on the CPU before the batch goes to
    the device (`SequenceModel.on_before_batch_transfer`), since reading it there would make every
    step wait for the device."""

    step: int | None  # the batch's place in the stream (None: the data does not say)
    reset: tuple[bool, ...]  # each row starts a clip
    rows: tuple[tuple[str, float] | None, ...]  # each row's clip and window start (None: not said)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def place_of(batch: Mapping[str, Any]) -> Place:
    """``batch``'s `Place`, from its ``reset``, ``stream_step``, ``path`` and ``start``."""
    reset = batch.get("reset")
    if reset is None:
        raise ValueError("carry_state=true needs batches with a 'reset' flag per row (a streaming data module)")
    step = batch.get("stream_step")
    reset = tuple(bool(r) for r in torch.as_tensor(reset).tolist())
    if "path" in batch:
        rows = tuple(zip(batch["path"], torch.as_tensor(batch["start"]).tolist(), strict=True))
    else:
        rows = (None,) * len(reset)
    return Place(None if step is None else int(step), reset, rows)


class CarriedState:
    """One process's carried state: the state after its last training batch, that batch's place in
    the stream (``stream_step``) and each row's clip and window start."""

    def __init__(self) -> None:
        self.state: BackboneState | None = None
        self.step: int | None = None
        self.rows: list[tuple[str, float] | None] = []  # None: a batch that does not say
        self._restored = False  # restored from a checkpoint: say how the first batch takes it

    def before(self, place: Place) -> tuple[BackboneState | None, Tensor | None]:
        """The state to run the batch at ``place`` from and the rows ``[B]`` that start afresh instead
        (those that start a clip or do not go on in theirs: the backbone's ``restart``); (None, None),
        every row afresh, when the batch does not follow the last one."""
        follows = place.step is None or (self.step is not None and place.step == self.step + 1)
        restored, self._restored = self._restored, False
        state, rows, last, self.step = self.state, self.rows, self.step, place.step
        if state is None or not follows or len(rows) != len(place.reset):
            if restored and rank_zero_only.rank == 0:  # (every process finds the same)
                log.info(
                    "the data does not go on from the checkpoint's last batch (stream batch %s of %d rows; this run "
                    "goes on at %s of %d: another batch size, number of processes or accumulate_grad_batches, or a "
                    "checkpoint saved inside a group of accumulate_grad_batches, which resumes at the group's start): "
                    "every row starts its clip's state afresh",
                    last,
                    len(rows),
                    place.step,
                    len(place.reset),
                )
            return None, None
        reset = torch.tensor(place.reset)
        moved = ~reset & ~_goes_on(rows, place.rows)
        if restored and bool(moved.any()):
            log.info(
                "%d of %d rows%s do not go on where the checkpoint left them (the data changed since: files "
                "added, removed or read differently, as said above): those rows start afresh",
                int(moved.sum()),
                len(reset),
                f" of process {rank_zero_only.rank}" if _distributed() else "",  # (each process its own rows)
            )
        elif restored and rank_zero_only.rank == 0:  # (the restore said it would, if the rows were where they stopped)
            going_on = int((~reset).sum())
            log.info(
                "the first batch after the resume goes on from the checkpoint's carried state in %d of %d rows%s%s",
                going_on,
                len(reset),
                " of process 0" if _distributed() else "",  # (each process its own rows: the others' alike, or said)
                "" if going_on == len(reset) else " (the others start a clip)",
            )
        return state, reset | moved

    def after(self, state: BackboneState, place: Place) -> None:
        """Keep the state after the batch at ``place`` (detached) and where each of its rows stands."""
        self.state = state.detach()
        self.rows = list(place.rows)

    def saved(self) -> dict | None:
        """What a checkpoint keeps of this process's state (plain leaves on the CPU), or None before
        the first batch."""
        if self.state is None:
            return None
        leaves = [leaf.cpu() if isinstance(leaf, Tensor) else leaf for leaf in state_leaves(self.state)]
        return {"step": self.step, "rows": self.rows, "leaves": leaves}

    def restore(self, saved: Mapping[str, Any], backbone: Backbone, template: BackboneState | None = None) -> None:
        """Take this process's part of a checkpoint (`saved`); the first batch after it checks that
        it goes on from there. Raises ValueError when the state is not one of ``backbone`` (another
        model, or one whose mixers cannot go on from it: `Backbone.check_state`). ``template``: the
        shapes of ``backbone.initial_state`` where it cannot make them itself (under FSDP:
        `gathered_initial_state`)."""
        if template is None:
            template = backbone.initial_state(len(saved["rows"]))
        state = with_leaves(template, saved["leaves"])
        backbone.check_state(state)
        self.state = state
        self.step, self.rows = saved["step"], saved["rows"]
        self._restored = True


def _goes_on(was: list[tuple[str, float] | None], now: tuple[tuple[str, float] | None, ...]) -> Tensor:
    """``[B]`` bool: whether each row's window is a later one of the clip it was in (true where
    either side does not say where the row stands)."""
    return torch.tensor(
        [a is None or b is None or (b[0] == a[0] and b[1] > a[1]) for a, b in zip(was, now, strict=True)],
        dtype=torch.bool,
    )


def gathered_initial_state(root: nn.Module, backbone: Backbone, batch_size: int) -> BackboneState:
    """``backbone.initial_state(batch_size)``, for its shapes, made under FSDP with each block's
    parameters gathered in turn (outside a forward pass they are flat shards; all at once, the whole
    model would be on each device), on every process together; ``root``: the model FSDP wraps. A wrap
    policy that does not make each block its own FSDP unit leaves no such turns: the whole model is
    gathered then. Its tensors may view parameters that are freed again on return."""
    if not all(isinstance(block, FullyShardedDataParallel) for block in backbone.blocks):
        with _full_parameters(root):
            return backbone.initial_state(batch_size)
    with _full_parameters(root, recurse=False):  # (FSDP sets itself up from its root, on first use)
        pass
    blocks = []
    for block in backbone.blocks:
        with _full_parameters(block):
            blocks.append(block.initial_state(batch_size))
    return BackboneState(blocks)


def _full_parameters(module: nn.Module, recurse: bool = True) -> contextlib.AbstractContextManager:
    if isinstance(module, FullyShardedDataParallel):
        return FullyShardedDataParallel.summon_full_params(module, recurse=recurse, writeback=False)
    return contextlib.nullcontext()


def own_part(parts: list | None, rank: int) -> tuple[int, dict | None] | None:
    """How many processes a checkpoint's carried state is for, and process ``rank``'s part of it,
    copied into memory (the rest stays in the mapped file: `MappedCheckpointIO`); None for a
    checkpoint without one."""
    if parts is None:
        return None
    return len(parts), in_memory(parts[rank]) if rank < len(parts) else None
