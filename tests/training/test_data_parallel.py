"""The DDP strategy of ``trainer=ddp``: buffers synced once, in this PyTorch's words (every process
printed PyTorch 2.14's deprecation warning for ``broadcast_buffers``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch.distributed as dist
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn
from torch.nn.parallel import DistributedDataParallel

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_the_ddp_config_syncs_buffers_once_without_a_deprecation_warning(tmp_path):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp"])
    strategy = instantiate(cfg.trainer.strategy)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (a FutureWarning fails the test)
            ddp = DistributedDataParallel(nn.BatchNorm1d(2), **strategy._ddp_kwargs)
    finally:
        dist.destroy_process_group()
    synced = getattr(ddp, "forward_sync_buffers", None)
    assert (synced if synced is not None else ddp.broadcast_buffers) is False  # not before every forward


def test_a_buffer_setting_given_in_the_config_is_kept():
    from ttt_mm.training.data_parallel import data_parallel

    assert data_parallel(broadcast_buffers=True)._ddp_kwargs == {"broadcast_buffers": True}
