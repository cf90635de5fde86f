import pytest
import torch


@pytest.fixture(autouse=True)
def nan_empty(monkeypatch):
    """Uninitialised memory reads as NaN in ops tests, so a kernel that reads before writing fails."""
    empty, new_empty = torch.empty, torch.Tensor.new_empty

    def nan_filled(t):
        if t.is_floating_point() or t.is_complex():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan_filled(empty(*a, **k)))
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: nan_filled(new_empty(self, *a, **k)))
