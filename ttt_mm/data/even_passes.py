"""Evaluation passes of the same length on every process, which FSDP needs.

Each process evaluates its own share of the files (`ttt_mm.data.datasets.SequentialWindows`), so the
passes differ in length whenever the files do. Under FSDP every forward pass gathers each block's
parameters from all processes: one whose batches ran out would wait in the epoch's reduce while the
others wait for it in a gather, and the run hangs. `EvenPasses` keeps every process going until all
are out: a process without a batch of its own runs its last one again, marked ``padding`` (run for
the gathers, not scored: `ttt_mm.module.SequenceModel`). Each batch costs one all-reduce of a flag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor


class EvenPasses:
    """``batches``, then its last batch again (``batch["padding"] = True``) until every process is out.

    Args:
        batches: this process's evaluation batches (iterated once per pass).
        total: sums a tensor over all processes (every process calls it once per batch and once at the end).
    """

    def __init__(self, batches: Iterable[dict], total: Callable[[Tensor], Tensor]) -> None:
        self.batches, self.total = batches, total

    def __iter__(self) -> Iterator[dict]:
        mine, last = iter(self.batches), None
        while True:
            batch = next(mine, None)
            if float(self.total(torch.tensor(float(batch is not None)))) == 0:
                return  # (every process is out: all stop together)
            if batch is None:
                if last is None:
                    raise RuntimeError(
                        "this process has no evaluation batch of its own (its files failed) while others have: "
                        "under FSDP it cannot take part in their forward passes (they are listed now: resumed, "
                        "the run gives such a process a file another reads)"
                    )
                batch = {k: v for k, v in last.items() if k != "restarted"} | {"padding": True}
            else:
                last = batch
            yield batch
