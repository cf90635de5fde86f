"""Lightning's checkpoint loading, memory-mapped: every process of a resumed run loads the whole
file, which for a streamed run holds every process's carried state (up to GiBs each for a large
LaCT); mapped, each process reads only the pages it uses, and the processes share them."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class MappedCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that maps a local checkpoint file instead of reading it into memory (a
    remote one, or a file object, is read as Lightning does). Its tensors come back on the CPU;
    Lightning moves what it restores to the device."""

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if not isinstance(path, (str, os.PathLike)) or "://" in str(path):
            return super().load_checkpoint(path, weights_only=weights_only)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return torch.load(path, map_location="cpu", mmap=True, weights_only=weights_only)
