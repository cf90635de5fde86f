"""Checkpoints are loaded memory-mapped: a process reads only the pages it uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ttt_mm.training.carried_state import own_part
from ttt_mm.training.checkpoint_io import MappedCheckpointIO


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def measure(folder: Path) -> None:
    """Every process of a resumed run loads the whole file, with every process's carried state."""
    parts = [{"leaves": [torch.full((16, 2**18), float(rank))]} for rank in range(4)]  # 16 MiB a process
    path = folder / "last.ckpt"
    torch.save({"carried_state": parts, "global_step": 7}, path)
    before = resident_mib()
    mapped = MappedCheckpointIO().load_checkpoint(path, weights_only=True)
    grew = resident_mib() - before
    assert grew < 16, f"{grew:.1f} MiB resident after loading"  # (not the 64 MiB of the file)
    before = resident_mib()
    count, own = own_part(mapped["carried_state"], rank=2)  # what a process takes, copied out
    grew = resident_mib() - before  # its pages read from the mapping, and the copy of them
    assert count == 4 and 14 < grew < 40, f"{grew:.1f} MiB resident after taking one 16 MiB part"
    path.write_bytes(b"")  # the file written over in place (a save under the same name): the copy stays
    assert torch.equal(own["leaves"][0], parts[2]["leaves"][0])
    assert mapped["global_step"] == 7
    torch.save({"carried_state": parts, "global_step": 7}, path)
    before = resident_mib()
    read = TorchCheckpointIO().load_checkpoint(path, weights_only=True)  # what Lightning does: all of it read
    grew = resident_mib() - before
    assert grew > 48 and read["global_step"] == 7, f"{grew:.1f} MiB resident after reading all 64 MiB"


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc")
def test_a_checkpoint_is_mapped_not_read_and_gives_back_what_was_saved(tmp_path):
    """Measured in a fresh interpreter: in the suite's own, the allocator hands back pages that earlier
    tests freed, and a full read then grows the resident set by less than it reads."""
    run = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def test_a_state_dict_keeps_the_module_versions_it_was_saved_with(tmp_path):
    """``load_state_dict`` passes each module its saved version (``_metadata``), which a copy of the
    dict's tensors alone would drop."""
    state_dict = torch.nn.BatchNorm1d(4).state_dict()
    torch.save({"state_dict": state_dict}, tmp_path / "c.ckpt")
    loaded = MappedCheckpointIO().load_checkpoint(tmp_path / "c.ckpt", weights_only=True)["state_dict"]
    assert loaded._metadata == state_dict._metadata and loaded._metadata[""]["version"] == 2


def test_a_remote_checkpoint_is_read_with_its_map_location(monkeypatch):
    """A remote path went to Lightning's reader without the map_location it was given."""
    with fsspec.open("memory://remote/c.ckpt", "wb") as f:
        torch.save({"w": torch.ones(2)}, f)
    seen = []
    loaded = MappedCheckpointIO().load_checkpoint(
        "memory://remote/c.ckpt", map_location=lambda s, where: seen.append(where) or s
    )
    assert seen == ["cpu"] and torch.equal(loaded["w"], torch.ones(2))
    asked = []  # none given, as Lightning's strategy loads: Lightning's own default (the CPU), not torch.load's None
    monkeypatch.setattr(TorchCheckpointIO, "load_checkpoint", lambda self, path, **kwargs: asked.append(kwargs) or {})
    MappedCheckpointIO().load_checkpoint("memory://remote/c.ckpt", weights_only=True)
    assert asked == [{"weights_only": True}]


def test_a_checkpoint_is_written_beside_its_name_not_in_memory_nor_in_tmpdir(tmp_path, monkeypatch):
    """Lightning's save serialised the whole checkpoint into memory, wrote it in $TMPDIR (a tmpfs: memory
    again) and copied it over: twice a large carried state's size, and a full-size orphan if killed."""
    import tempfile

    from ttt_mm.training import checkpoint_io

    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    written = []
    save = torch.save
    monkeypatch.setattr(checkpoint_io.torch, "save", lambda obj, f: (written.append(f), save(obj, f)))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"  # (its folder made as Lightning's does)
    MappedCheckpointIO().save_checkpoint({"weights": torch.arange(4.0)}, path)
    assert [Path(f).parent for f in written] == [path.parent] and Path(written[0]).name != path.name
    assert torch.equal(torch.load(path)["weights"], torch.arange(4.0)) and [p.name for p in path.parent.iterdir()] == [
        "last.ckpt"
    ]
    assert not any(scratch.iterdir())


def test_a_missing_checkpoint_is_named():
    with pytest.raises(FileNotFoundError, match="no/such.ckpt"):
        MappedCheckpointIO().load_checkpoint("/no/such.ckpt")


if __name__ == "__main__":
    measure(Path(sys.argv[1]))
