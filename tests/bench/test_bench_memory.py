"""The CPU benchmarks' memory readings belong to what ran since the reading started."""

from __future__ import annotations

import torch

from ttt_mm.bench.memory import reset_peak, resident_mib


def test_a_reset_peak_forgets_an_earlier_larger_peak():
    big = torch.ones(64 * 2**20)  # 256 MiB, resident, then returned to the system
    del big
    assert resident_mib("VmHWM") - resident_mib("VmRSS") > 200
    assert reset_peak()
    assert resident_mib("VmHWM") - resident_mib("VmRSS") < 16
