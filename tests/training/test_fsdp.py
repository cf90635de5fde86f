"""The carried state under FSDP, on two CPU processes: outside a block's forward pass its parameters
are flat shards, so a state made there (a restarted row's, a checkpoint's template) had their shapes."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from ttt_mm.backbone import Backbone, Block
from ttt_mm.layers import LaCTLayer, TTTLayer
from ttt_mm.training.carried_state import CarriedState, Place, gathered_initial_state

MIXERS = {
    "ttt_linear": partial(TTTLayer, num_heads=2, mini_batch_size=8),
    "lact": partial(LaCTLayer, num_heads=2, chunk_size=8, window=6),
}


def backbone(mixer: str) -> Backbone:
    torch.manual_seed(0)
    return Backbone(dim=32, depth=2, mixer=MIXERS[mixer]).double()


def one_process(rank: int, store: str, mixer: str, per_block: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        plain = backbone(mixer)
        sharded = FullyShardedDataParallel(
            backbone(mixer),
            auto_wrap_policy=ModuleWrapPolicy({Block}) if per_block else None,
            use_orig_params=True,
            device_id=torch.device("cpu"),
        )
        model = sharded.module
        assert model.blocks[0].mixer.wo.weight.shape != (32, 32)  # a flat shard, outside the forward pass
        a, b = torch.randn(2, 16, 32, dtype=torch.float64), torch.randn(2, 16, 32, dtype=torch.float64)
        _, plain_state = plain(a)
        saved = CarriedState()
        saved.after(plain_state, Place(1, (False, False), (None, None)))

        with pytest.raises(ValueError, match="another model"):
            CarriedState().restore(saved.saved(), model)  # the template made from shards
        restored = CarriedState()  # as a resumed run does, before any forward pass
        restored.restore(saved.saved(), model, gathered_initial_state(sharded, model, 2))
        torch.testing.assert_close(sharded(b, restored.state)[0], plain(b, plain_state)[0])

        restart = torch.tensor([True, False])
        _, state = sharded(a)
        got, _ = sharded(b, state, restart)  # the restarted row's state is made inside each block's forward
        want, _ = plain(b, plain_state, restart)
        torch.testing.assert_close(got, want)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("mixer", ["ttt_linear", "lact"])
def test_restarted_rows_and_a_restored_state_under_fsdp_match_the_unsharded_model(mixer, tmp_path):
    mp.spawn(one_process, args=(str(tmp_path / "group"), mixer, True), nprocs=2)  # (a file: no port to race for)


@pytest.mark.slow
def test_a_restored_state_fits_a_model_whose_blocks_are_not_fsdp_units_of_their_own(tmp_path):
    """A wrap policy of the user's own may shard the whole model as one unit: its blocks then have
    no parameters of their own to gather (each resume was refused as being from another model)."""
    mp.spawn(one_process, args=(str(tmp_path / "group"), "ttt_linear", False), nprocs=2)
