"""The fused CPU loops (`ttt_mm.ops.native`) against the PyTorch ops they replace, and their fallback."""

import logging
import shutil

import pytest
import torch

from ttt_mm.ops import ln, native
from ttt_mm.ops.native import build
from ttt_mm.ops.ttt import dual

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


@pytest.fixture
def pytorch_ops(monkeypatch):
    """Runs its callable with the fused loops turned off."""

    def run(fn, *args, **kwargs):
        with monkeypatch.context() as m:
            m.setattr(build, "library", lambda: None)
            return fn(*args, **kwargs)

    return run


def close(a, b, dtype):
    tol = 2e-5 if dtype == torch.float32 else 1e-12
    return torch.allclose(a, b, rtol=tol, atol=tol)


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gelu_loops_match_pytorch(dtype, pytorch_ops):
    x1 = torch.randn(3, 8, 40, dtype=dtype) * 3  # rows [:, :4] are blocks of a larger tensor
    for x in (x1, x1[:, :4]):
        y, slope = dual.gelu_tanh_with_slope(x)
        y_ref, slope_ref = pytorch_ops(dual.gelu_tanh_with_slope, x)
        assert native.gelu_tanh(x, slope=True) is not None
        assert close(y, y_ref, dtype) and close(slope, slope_ref, dtype)
        assert close(dual.gelu_tanh(x), y_ref, dtype)
        assert close(dual.gelu_tanh_curvature(x), pytorch_ops(dual.gelu_tanh_curvature, x), dtype)
    far = torch.tensor([-1e4, -60.0, -12.0, 12.0, 60.0, 1e4], dtype=dtype)  # saturated: finite, like the ops
    for fn in (dual.gelu_tanh, dual.gelu_tanh_curvature):
        assert torch.isfinite(fn(far)).all()
    assert torch.allclose(dual.gelu_tanh(far)[far > 0], far[far > 0], rtol=1e-6)  # gelu(x) = x far right


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_norm_loops_match_pytorch(dtype, pytorch_ops):
    G, R, F = 3, 5, 16
    z, offset, s = (torch.randn(G, R, F, dtype=dtype) for _ in range(3))
    w_sq = torch.rand(G, 1, F, dtype=dtype) + 0.5
    assert native.ln_l2_grad(z, w_sq, offset, ln.EPS) is not None
    assert close(ln.ln_l2_grad(z, w_sq, offset), pytorch_ops(ln.ln_l2_grad, z, w_sq, offset), dtype)
    g, recorded = ln.ln_l2_grad_recorded(z, w_sq, offset)
    g_ref, recorded_ref = pytorch_ops(ln.ln_l2_grad_recorded, z, w_sq, offset)
    assert all(close(a, b, dtype) for a, b in zip((g, *recorded), (g_ref, *recorded_ref)))

    backward = ln.LnL2GradBackward.of(z, g_ref, recorded_ref, w_sq)
    dz_ref, de_ref = pytorch_ops(backward, s)
    out = torch.zeros(G, 2 * R, F, dtype=dtype)  # written in place: the first R rows of each group
    dz, de = backward(s, out=out[:, :R])
    assert dz.data_ptr() == out.data_ptr() and torch.equal(out[:, R:], torch.zeros_like(out[:, R:]))
    assert close(dz, dz_ref, dtype) and close(de, de_ref, dtype)


def test_tensors_autograd_tracks_take_the_pytorch_ops():
    x = torch.randn(2, 4, 8, requires_grad=True)
    assert native.gelu_tanh(x) is None and native.gelu_tanh_curvature(x) is None
    y, slope = dual.gelu_tanh_with_slope(x)
    assert y.grad_fn is not None and slope.grad_fn is not None  # differentiable: autograd saw the ops
    with torch.no_grad():
        assert native.gelu_tanh(x) is not None or build.library() is None


def test_without_a_compiler_the_ops_fall_back_with_one_log_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path / "cache"))
    build.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=build.__name__):
            x = torch.randn(2, 4, 8)
            assert native.gelu_tanh(x) is None and native.gelu_tanh(x) is None
            y, _ = dual.gelu_tanh_with_slope(x)
        assert torch.isfinite(y).all()
        assert len([r for r in caplog.records if "unavailable" in r.message]) == 1
    finally:
        build.library.cache_clear()


@needs_cc
def test_the_library_is_built_once_into_the_cache_without_leftovers(monkeypatch, tmp_path):
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path))
    build.library.cache_clear()
    try:
        assert build.library() is not None
        built = list(tmp_path.iterdir())
        assert len(built) == 1 and built[0].name.startswith("kernels-") and built[0].suffix == ".so"
        stamp = built[0].stat().st_mtime_ns
        build.library.cache_clear()
        assert build.library() is not None and built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    finally:
        build.library.cache_clear()
