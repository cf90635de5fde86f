"""Lightning's checkpoint loading, memory-mapped: every process of a resumed run loads the whole
file, which for a streamed run holds every process's carried state (up to GiBs each for a large
LaCT); mapped, each process reads only the part it takes (`SequenceModel.on_load_checkpoint` copies
it out). Everything else is copied into memory at once: a mapping of a file that is later written
over in place (a checkpoint saved again under the same name) would change under the run, or fault.

Saving writes straight into a temporary name beside the file and renames it: Lightning's serialises
the whole checkpoint into memory first, then writes it in ``$TMPDIR`` (on a tmpfs, memory again) and
copies it over."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor

from ttt_mm.storage.atomic import replaced

MAPPED = "carried_state"
"""The checkpoint entry left mapped: one part per process, each taking its own."""


class MappedCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that maps a local checkpoint file instead of reading it into memory (a
    remote one is read as Lightning does, with ``map_location``). A mapped file's
    tensors come back on the CPU; Lightning moves what it restores to the device."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        if storage_options is not None or not _local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)  # (remote: Lightning's way)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with replaced(path) as partial:
            torch.save(checkpoint, partial)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if not _local(path):
            located = {} if map_location is None else {"map_location": map_location}  # (None: Lightning's, the CPU)
            return super().load_checkpoint(path, weights_only=weights_only, **located)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=weights_only)
        return {k: v if k == MAPPED else in_memory(v) for k, v in checkpoint.items()}


def _local(path) -> bool:
    """Whether ``path`` names a file on this machine (not a URL such as ``s3://``, which fsspec reads)."""
    return isinstance(path, (str, os.PathLike)) and "://" not in str(path)


def in_memory(value: Any) -> Any:
    """``value`` with each tensor copied out of the mapped file (a state dict keeps its ``_metadata``:
    the module versions ``load_state_dict`` passes to each module's loading)."""
    copied = apply_to_collection(value, Tensor, Tensor.clone)
    if hasattr(value, "_metadata"):
        copied._metadata = value._metadata
    return copied
