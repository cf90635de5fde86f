"""The GPU benchmark's correctness check: it reports every core's result and never stops the run."""

import torch

from ttt_mm.bench import kernels


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
