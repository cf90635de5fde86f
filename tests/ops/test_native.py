"""The fused CPU loops (`ttt_mm.ops.native`) against the PyTorch ops they replace, and their fallback."""

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from ttt_mm.ops import ln
from ttt_mm.ops.native import build
from ttt_mm.ops.native import ttt as native
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


@needs_cc
def test_the_loops_write_into_given_outputs_and_the_fallback_does_too(pytorch_ops):
    x = torch.randn(2, 6, 32) * 2
    z, offset = torch.randn(2, 6, 16), torch.randn(2, 6, 16)
    w_sq = torch.rand(2, 1, 16) + 0.5
    y_ref, slope_ref = pytorch_ops(dual.gelu_tanh_with_slope, x)
    g_ref, recorded_ref = pytorch_ops(ln.ln_l2_grad_recorded, z, w_sq, offset)
    for run in (lambda fn, *a, **k: fn(*a, **k), pytorch_ops):
        buffers = torch.zeros(2, *x.shape)
        y, slope = run(dual.gelu_tanh_with_slope, x, out=tuple(buffers))
        assert y.data_ptr() == buffers[0].data_ptr() and slope.data_ptr() == buffers[1].data_ptr()
        assert close(buffers[0], y_ref, x.dtype) and close(buffers[1], slope_ref, x.dtype)
        rows = z.new_zeros(2, 6, 1)
        out = (torch.zeros_like(z), torch.zeros_like(z), rows, rows.clone(), torch.zeros_like(z))
        g, recorded = run(ln.ln_l2_grad_recorded, z, w_sq, offset, out=out)
        assert g.data_ptr() == out[0].data_ptr() and [r.data_ptr() for r in recorded] == [o.data_ptr() for o in out[1:]]
        assert all(close(a, b, z.dtype) for a, b in zip(out, (g_ref, *recorded_ref)))


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_loops_give_the_same_values_on_one_thread_and_on_several(dtype):
    """Large enough to be split across threads; the split must not change a value (beyond rounding: a
    thread's first values may take the scalar path where one thread took the vector path)."""
    x = torch.randn(4, 32, 256, dtype=dtype)[:, :16] * 3  # strided blocks: the split crosses their boundaries
    z, offset, s = (torch.randn(8, 32, 64, dtype=dtype) for _ in range(3))
    w_sq = torch.rand(8, 1, 64, dtype=dtype) + 0.5

    def run():
        g, recorded = ln.ln_l2_grad_recorded(z, w_sq, offset)
        backward = ln.LnL2GradBackward.of(z, g, recorded, w_sq)
        return (*dual.gelu_tanh_with_slope(x), dual.gelu_tanh_curvature(x), g, *recorded, *backward(s))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(3)
        several = run()
    finally:
        torch.set_num_threads(threads)
    assert all(close(a, b, dtype) for a, b in zip(one, several))


@needs_cc
def test_a_compiler_without_openmp_gives_the_single_threaded_build(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "OPENMP", ("-fno-such-option-ttt-mm",))  # the OpenMP build fails to compile
    build.library.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger=build.__name__):
            assert build.library() is not None
        assert any("without OpenMP" in r.message for r in caplog.records)
        assert len(list(tmp_path.iterdir())) == 1  # the plain build, no leftovers of the failed one
        x = torch.randn(3, 8, 40)
        assert close(native.gelu_tanh(x), x * torch.sigmoid(x * (dual._GELU_A + dual._GELU_B * x * x)), x.dtype)
    finally:
        build.library.cache_clear()


@needs_cc
@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_the_scans_run_every_loop_they_can(inner, monkeypatch):
    """Each call the TTT scans make (forward, recompute, reverse pass) must take the fused loops: one
    input in an unexpected layout would silently fall back to the slower PyTorch ops."""
    from ttt_mm.ops import ttt_linear, ttt_mlp

    fell_back, ran = [], set()
    for name in ("gelu_tanh", "gelu_tanh_curvature", "ln_l2_grad", "ln_l2_grad_backward"):
        loop = getattr(native, name)

        def spy(*args, _loop=loop, _name=name, **kwargs):
            result = _loop(*args, **kwargs)
            (ran.add if result is not None else fell_back.append)(_name)
            return result

        monkeypatch.setattr(native, name, spy)
    B, H, T, F, D = 1, 2, 64, 8, 16
    q, k, v = (torch.randn(B, H, T, F, requires_grad=True) for _ in range(3))
    lr = torch.rand(B, H, T) * 0.1
    norm = (torch.ones(H, F), torch.zeros(H, F))
    if inner == "linear":
        out, _ = ttt_linear(q, k, v, lr, torch.randn(H, F, F) * 0.1, torch.zeros(H, F), *norm)
    else:
        weights = (torch.randn(H, F, D) * 0.1, torch.zeros(H, D), torch.randn(H, D, F) * 0.1, torch.zeros(H, F))
        out, _ = ttt_mlp(q, k, v, lr, *weights, *norm)
    out.square().mean().backward()
    assert fell_back == [] and q.grad is not None
    expected = {"ln_l2_grad", "ln_l2_grad_backward"} | (
        {"gelu_tanh", "gelu_tanh_curvature"} if inner == "mlp" else set()
    )
    assert ran == expected  # and the scans do reach the loops


def test_tensors_autograd_tracks_take_the_pytorch_ops():
    x = torch.randn(2, 4, 8, requires_grad=True)
    assert native.gelu_tanh(x) is None and native.gelu_tanh_curvature(x) is None
    y, slope = dual.gelu_tanh_with_slope(x)
    assert y.grad_fn is not None and slope.grad_fn is not None  # differentiable: autograd saw the ops
    # (without autograd tracks the loops do run: test_gelu_loops_match_pytorch)


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
    """A build found in the cache is loaded as it is, and its time refreshed: another machine sharing the
    cache prunes the builds by that time, and must not delete one still in use."""
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path))
    build.library.cache_clear()
    try:
        assert build.library() is not None
        built = list(tmp_path.iterdir())
        assert len(built) == 1 and built[0].name.startswith("kernels-") and built[0].suffix == ".so"
        inode = built[0].stat().st_ino
        old = time.time() - (build.STALE_DAYS + 1) * 86400
        os.utime(built[0], (old, old))
        build.library.cache_clear()
        assert build.library() is not None and built[0].stat().st_ino == inode  # reused, not rebuilt
        assert built[0].stat().st_mtime > time.time() - 3600
    finally:
        build.library.cache_clear()


@needs_cc
def test_a_cache_that_cannot_be_written_builds_for_the_process_alone(monkeypatch, tmp_path, caplog):
    """The kernels were turned off (the OpenMP build and the plain one both failed to make the folder),
    with a log line blaming OpenMP."""
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path / "a file" / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    build.library.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger=build.__name__):
            assert build.library() is not None
        assert not any("unavailable" in r.message for r in caplog.records)
        assert any("cannot be written" in r.message for r in caplog.records)
        built = [p.suffix for folder in (tmp_path / "tmp").iterdir() for p in folder.iterdir()]  # (removed at exit)
        assert built == [".so"]  # (one folder per build tried: with OpenMP, else without; no leftovers)
    finally:
        build.library.cache_clear()


@pytest.mark.parametrize("value", ["0", "false", "Off", "no"])
def test_ttt_mm_native_turns_the_library_off_in_the_words_people_use(value, monkeypatch, tmp_path):
    monkeypatch.setenv("TTT_MM_NATIVE", value)
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path))
    build.library.cache_clear()
    try:
        assert build.library() is None and not any(tmp_path.iterdir())  # (nothing built)
    finally:
        build.library.cache_clear()


@needs_cc
def test_loading_the_library_leaves_the_process_its_denormal_numbers(monkeypatch, tmp_path):
    """Linked with -ffast-math, GCC 12 added crtfastmath.o, whose constructor turned on flush-to-zero for
    the whole process: every CPU computation after the first kernel call rounded numbers below 2.2e-308
    to zero, PyTorch's and Python's own."""
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path))
    build.library.cache_clear()
    try:
        assert build.library() is not None
        tiny, half = sys.float_info.min, float(len("ab")) / 4  # (computed when run: no constant folding)
        assert tiny * half > 0.0
        assert (torch.tensor([tiny], dtype=torch.float64) * half).item() > 0.0
    finally:
        build.library.cache_clear()


@needs_cc
def test_a_compiler_command_with_arguments_builds_and_a_damaged_build_is_made_again(monkeypatch, tmp_path):
    """``CC="ccache gcc"`` was taken for one program's name (no compiler found), and a build in the cache
    that does not load (written over, or cut short by a power cut) was loaded as it was, every run."""
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "env cc")
    build.library.cache_clear()
    try:
        built = []  # (built, not loaded: a loaded one is not written over)
        for extra in (build.OPENMP, ()):
            with contextlib.suppress(RuntimeError):  # (a compiler without OpenMP)
                built.append(build._compile("env cc", extra)[0])
        for path in built:
            path.write_bytes(b"damaged")
        lib = build.library()
        assert lib is not None and Path(lib._name) in built and Path(lib._name).read_bytes() != b"damaged"
        assert not list(tmp_path.glob(f"{build.BUILDING}*"))  # (no build folder left)
    finally:
        build.library.cache_clear()


@pytest.mark.skipif(os.name != "posix", reason="the stand-in compiler is a shell script")
def test_a_changed_header_gives_another_build(monkeypatch, tmp_path):
    """Both C files include the header: a change there alone must not load a build of the old one. (A
    stand-in compiler that writes an empty file: only the naming in the cache is under test.)"""
    cc = tmp_path / "cc"
    cc.write_text('#!/bin/sh\necho stand-in 1.0\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && : > "$2"; shift; done\n')
    cc.chmod(0o755)
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path / "cache"))
    first, _ = build._compile(str(cc))
    assert first.exists() and first.parent == tmp_path / "cache"
    copies = []
    for header in build.HEADERS:
        copies.append(tmp_path / header.name)
        shutil.copy(header, copies[-1])
    monkeypatch.setattr(build, "HEADERS", copies)
    assert build._compile(str(cc)) == (first, True)  # the same text: the same build, from the cache
    with copies[0].open("a") as f:
        f.write("#define TTT_MM_TEST_CHANGE 1\n")
    changed, _ = build._compile(str(cc))
    assert changed != first and changed.exists() and changed.parent == first.parent


@needs_cc
def test_a_new_build_deletes_the_builds_not_loaded_for_a_month(monkeypatch, tmp_path):
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path))
    stale, recent, other = tmp_path / "kernels-0000.so", tmp_path / "kernels-1111.so", tmp_path / "notes.so"
    for path in (stale, recent, other):
        path.write_bytes(b"")
    old = time.time() - (build.STALE_DAYS + 1) * 86400
    for path in (stale, other):
        os.utime(path, (old, old))
    build.library.cache_clear()
    try:
        assert build.library() is not None
        left = sorted(p.name for p in tmp_path.iterdir())
        assert stale.name not in left and recent.name in left and other.name in left and len(left) == 3
    finally:
        build.library.cache_clear()


def lact_map_results(dtype, generator_seed=0, T=13):
    """LaCT's feature maps and one chunk step (tiles of 5 tokens), forward and every gradient, in
    ``dtype``, for ``T`` tokens; ``lr`` is a token slice of a longer tensor (rows of groups apart, as the
    core passes it)."""
    from ttt_mm.ops.lact import features
    from ttt_mm.ops.lact.step import swiglu_chunk

    g = torch.Generator().manual_seed(generator_seed)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()

    B, H, D, M = 2, 3, 8, 6
    qkv, scale, offset = randn(B, T, 3 * H * D, scale=2), randn(2, H * D), randn(2, H * D, scale=0.3)
    o, weight, gate = randn(B, H, T, D), randn(D), randn(B, T, H, scale=3)
    W02, W1 = randn(B * H, 2 * M, D, scale=0.5), randn(B * H, D, M, scale=0.5)
    q, k, v = (randn(B * H, T, D) for _ in range(3))
    lr_all = torch.rand(B * H, T + 4, 3, generator=g, dtype=dtype).requires_grad_()
    outs = [
        *features.fast_inputs(qkv, scale, offset, H, 1e-5),
        features.gated_rms_norm(o, weight, gate, 1e-6),
        *swiglu_chunk(W02, W1, q, k, v, lr_all[:, 2 : T + 2]),
    ]
    cotangents = [torch.randn(y.shape, generator=g, dtype=dtype) for y in outs]
    leaves = [qkv, scale, offset, o, weight, gate, W02, W1, q, k, v, lr_all]
    return [*outs, *torch.autograd.grad(outs, leaves, cotangents)]


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lact_loops_match_pytorch(dtype, pytorch_ops, monkeypatch):
    from ttt_mm.ops.lact import step

    monkeypatch.setattr(step, "TILE_TOKENS", 5)
    fused = lact_map_results(dtype)
    reference = pytorch_ops(lact_map_results, dtype)
    for a, b in zip(fused, reference, strict=True):
        assert a.shape == b.shape and b.abs().max() > 0
        assert close(a, b, dtype), (a - b).abs().max().item()


def test_the_pytorch_lact_maps_keep_float32_under_autocast(pytorch_ops):
    """Autocast runs ``vecdot`` in bfloat16: the maps' norms would be off by about 0.4% (where the loops
    do not run: on a GPU). The core turns autocast off itself."""
    from ttt_mm.ops.lact import features

    g = torch.Generator().manual_seed(0)
    B, T, H, D = 2, 13, 3, 8
    qkv, scale, offset = torch.randn(B, T, 3 * H * D, generator=g), torch.randn(2, H * D), torch.randn(2, H * D)
    o, weight, gate = torch.randn(B, H, T, D, generator=g), torch.randn(D), torch.randn(B, T, H)
    leaves = [x.requires_grad_() for x in (qkv, scale, offset, o, weight, gate)]

    def maps(autocast):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outs = [*features.fast_inputs(qkv, scale, offset, H, 1e-5), features.gated_rms_norm(o, weight, gate, 1e-6)]
            return [*outs, *torch.autograd.grad(outs, leaves, [torch.ones_like(y) for y in outs])]

    for a, b in zip(pytorch_ops(maps, True), pytorch_ops(maps, False), strict=True):
        assert a.dtype == b.dtype == torch.float32 and close(a, b, torch.float32), (a - b).abs().max().item()


@needs_cc
def test_lact_loops_give_the_same_values_on_one_thread_and_on_several():
    """The per-thread sums of the parameters' gradients, added at the end, must not change them. 240
    tokens: every loop has at least the ``PARALLEL_MIN`` (8192) values it takes to split across threads
    (2 x 240 x 24 in the feature maps, 6 x 240 x 6 in the SwiGLU chains)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lact_map_results(torch.float64, T=240)
        torch.set_num_threads(3)
        several = lact_map_results(torch.float64, T=240)
    finally:
        torch.set_num_threads(threads)
    assert all(close(a, b, torch.float64) for a, b in zip(one, several, strict=True))


@needs_cc
@pytest.mark.parametrize("batch", [1, 2])
def test_the_lact_layer_runs_every_loop_it_can(batch, monkeypatch):
    """A LaCT layer's forward and backward must take every fused loop of `native.lact` (a tensor in an
    unexpected layout would silently fall back to the slower PyTorch ops; with one row, reshapes that
    copy for several keep views)."""
    from ttt_mm.layers import LaCTLayer
    from ttt_mm.ops.native import lact as native_lact

    names = ["fast_inputs", "fast_inputs_backward", "gated_rms_norm", "gated_rms_norm_backward"]
    names += ["swiglu", "swiglu_step", "swiglu_backward", "swiglu_step_backward"]
    ran = []
    for name in names:
        loop = getattr(native_lact, name)

        def spy(*args, _loop=loop, _name=name, **kwargs):
            result = _loop(*args, **kwargs)
            ran.append((_name, result is not None))
            return result

        monkeypatch.setattr(native_lact, name, spy)
    layer = LaCTLayer(32, 4, chunk_size=8, window=6, fast_heads=2)
    x = torch.randn(batch, 21, 32, requires_grad=True)
    y, _ = layer(x)
    y.square().mean().backward()
    assert sorted({name for name, _ in ran}) == sorted(names)
    assert [name for name, fused in ran if not fused] == []


@needs_cc
def test_lact_loops_refuse_tensors_of_the_wrong_shape():
    """The loops read raw pointers at the shapes they expect: any other shape must fall back (None)."""
    from ttt_mm.ops.native import lact as native_lact

    qkv, scale = torch.randn(1, 5, 24), torch.randn(2, 8)
    assert native_lact.fast_inputs(qkv, scale, scale.clone(), 2, 1e-5) is not None
    assert native_lact.fast_inputs(qkv, scale[:, :6], scale[:, :6], 2, 1e-5) is None
    assert native_lact.fast_inputs(qkv, scale, scale.clone(), 3, 1e-5) is None  # 8 channels in 3 heads
    o, weight, gate = torch.randn(1, 2, 5, 4), torch.randn(4), torch.randn(1, 5, 2)
    assert native_lact.gated_rms_norm(o, weight, gate, 1e-6) is not None
    assert native_lact.gated_rms_norm(o, weight[:3], gate, 1e-6) is None
    assert native_lact.gated_rms_norm(o, weight, gate[:, :4], 1e-6) is None
    ab, dh, lr = torch.randn(2, 5, 8), torch.randn(2, 5, 4), torch.rand(2, 5, 3)
    assert native_lact.swiglu_step(ab, dh, lr) is not None
    assert native_lact.swiglu_step(ab, dh[:, :4], lr) is None
    assert native_lact.swiglu_step(ab, dh, lr[:, :4]) is None
    assert native_lact.swiglu_backward(ab, torch.randn(2, 5, 3)) is None
    assert native_lact.swiglu_step_backward(ab, dh, ab[:, :4], dh, lr, torch.empty(2, 5, 3)) is None
