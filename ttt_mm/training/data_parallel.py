"""Lightning's DDP strategy with buffers synchronised once, at the start, not before every forward.

The modules' buffers are constants (normalisation statistics, RoPE tables), so syncing them before
each forward only makes every forward a collective, which a rank with no validation batches (its
files unreadable) would never join. PyTorch 2.14 renamed the setting (``forward_sync_buffers``;
``broadcast_buffers`` is deprecated and warned about in every process); older versions know only the
old name.
"""

from __future__ import annotations

import inspect
from typing import Any

from lightning.pytorch.strategies import DDPStrategy
from torch.nn.parallel import DistributedDataParallel


def buffers_synced_at_start() -> dict[str, bool]:
    """The DistributedDataParallel keyword that turns off the per-forward buffer sync, in this PyTorch."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def data_parallel(**kwargs: Any) -> DDPStrategy:
    """``DDPStrategy(**kwargs)`` with `buffers_synced_at_start`, unless ``kwargs`` set buffer syncing
    themselves (``conf/trainer/ddp.yaml``)."""
    given = {"broadcast_buffers", "forward_sync_buffers"} & kwargs.keys()
    return DDPStrategy(**({} if given else buffers_synced_at_start()), **kwargs)
