"""The GPU benchmark's correctness check: it reports every core's result and never stops the run."""

import pytest
import torch

from ttt_mm.bench import kernels
from ttt_mm.ops.ttt import fused


def test_the_check_reports_each_core_and_survives_a_failing_one(monkeypatch):
    def agrees(kernel, T, device):
        return [torch.ones(3)]

    def disagrees(kernel, T, device):
        return [torch.ones(3) * (2 if kernel == "triton" else 1)]

    def cannot_compile(kernel, T, device):
        if kernel == "triton":
            raise RuntimeError("out of resource: shared memory\nmore detail")
        return [torch.ones(3)]

    def nan_gradient(kernel, T, device):
        return [torch.ones(3), torch.full((3,), float("nan") if kernel == "triton" else 1.0)]

    checks = (
        ("agrees", agrees),
        ("disagrees", disagrees),
        ("cannot compile", cannot_compile),
        ("NaN after a match", nan_gradient),
    )
    monkeypatch.setattr(kernels, "CHECKS", checks)
    results = kernels.check("cpu")
    assert results == {
        "agrees": "0.00e+00",
        "disagrees": "5.00e-01 FAIL",
        "cannot compile": "FAIL RuntimeError: out of resource: shared memory",
        "NaN after a match": "inf FAIL",  # max() alone would have passed it (nan > 0 is False)
    }


def test_a_forced_launch_holds_for_the_run_only():
    """``--launch``: the forward's launch mode is forced inside the run and chosen by rows again after."""
    rows = torch.zeros(2, 32, 16)  # on the CPU `parallel_spans` always says two launches
    with kernels.forced_launch("one-pass"):
        assert fused.parallel_spans(rows) is False
    assert fused.parallel_spans(rows) is True
    with kernels.forced_launch("spans"):
        assert fused.parallel_spans(rows) is True
    with kernels.forced_launch("auto"):
        assert fused.parallel_spans(rows) is True
    with pytest.raises(ValueError, match="launch must be one of"):
        kernels.forced_launch("fast")
