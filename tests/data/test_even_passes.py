"""Evaluation passes of the same length on every process (FSDP gathers in every forward pass)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies import FSDPStrategy

from ttt_mm.data import MediaDataModule, SyntheticSource
from ttt_mm.data.even_passes import EvenPasses
from ttt_mm.data.restarts import RestartingLoader


def others_have(counts: list[int]):
    """``total`` for a process whose peers have ``counts`` batches each."""
    step = iter(range(10**6))

    def total(flag: torch.Tensor) -> torch.Tensor:
        k = next(step)
        return flag + sum(k < n for n in counts)

    return total


def test_a_short_pass_repeats_its_last_batch_as_padding_until_every_process_is_out():
    mine = [{"x": 0}, {"x": 1, "restarted": True}]
    got = list(EvenPasses(mine, others_have([4, 1])))
    assert [b["x"] for b in got] == [0, 1, 1, 1]
    assert [b.get("padding", False) for b in got] == [False, False, True, True]
    assert not any(b.get("restarted") for b in got[2:])  # a padding copy voids no scores
    assert [b["x"] for b in EvenPasses(mine, others_have([1]))] == [0, 1]  # the longest: as it is


def test_a_process_with_no_batch_of_its_own_says_why_it_cannot_take_part():
    with pytest.raises(RuntimeError, match="no evaluation batch of its own"):
        list(EvenPasses([], others_have([2])))
    assert list(EvenPasses([], others_have([0]))) == []


def one_process(rank: int, store: str, counts: list[int], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=len(counts))
    try:

        def total(t):
            dist.all_reduce(t)
            return t

        got = [(b["x"], b.get("padding", False)) for b in EvenPasses([{"x": i} for i in range(counts[rank])], total)]
        torch.save(got, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_stop_together(tmp_path):
    # (a file store: a free port found first can be taken by another process before the group binds it)
    mp.spawn(one_process, args=(str(tmp_path / "store"), [3, 1], str(tmp_path / "got")), nprocs=2)
    assert torch.load(tmp_path / "got.0") == [(0, False), (1, False), (2, False)]
    assert torch.load(tmp_path / "got.1") == [(0, False), (0, True), (0, True)]


def test_evaluation_is_even_across_processes_under_fsdp_only():
    env = LightningEnvironment()
    env.set_world_size(2)
    fsdp = FSDPStrategy(cluster_environment=env, parallel_devices=[torch.device("cpu")] * 2)
    dm = MediaDataModule(SyntheticSource(num_clips=4, duration=2.0), ["audio"], 1.0, val_fraction=0.5)
    dm.setup("validate")
    dm.trainer = SimpleNamespace(global_step=0, strategy=fsdp)
    assert isinstance(dm.val_dataloader(), EvenPasses) and isinstance(dm.test_dataloader(), EvenPasses)
    dm.trainer = SimpleNamespace(global_step=0, strategy=SimpleNamespace(world_size=2))  # (DDP: no gathers)
    assert isinstance(dm.val_dataloader(), RestartingLoader)
