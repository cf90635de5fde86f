"""Checkpoints are loaded memory-mapped: a process reads only the pages it uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ttt_mm.training.checkpoint_io import MappedCheckpointIO


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc")
def test_a_checkpoint_is_mapped_not_read_and_gives_back_what_was_saved(tmp_path):
    """Every process of a resumed run loads the whole file, with every process's carried state."""
    parts = [{"leaves": [torch.full((16, 2**18), float(rank))]} for rank in range(4)]  # 16 MiB a process
    path = tmp_path / "last.ckpt"
    torch.save({"carried_state": parts, "global_step": 7}, path)
    before = resident_mib()
    mapped = MappedCheckpointIO().load_checkpoint(path, weights_only=True)
    grew = resident_mib() - before
    assert grew < 16, f"{grew:.1f} MiB resident after loading"  # (not the 64 MiB of the file)
    assert mapped["global_step"] == 7 and torch.equal(mapped["carried_state"][2]["leaves"][0], parts[2]["leaves"][0])
    before = resident_mib()
    read = TorchCheckpointIO().load_checkpoint(path, weights_only=True)  # what Lightning does: all of it read
    assert resident_mib() - before > 48 and read["global_step"] == 7


def test_a_missing_checkpoint_is_named():
    with pytest.raises(FileNotFoundError, match="no/such.ckpt"):
        MappedCheckpointIO().load_checkpoint("/no/such.ckpt")
