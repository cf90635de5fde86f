"""The GPU benchmark's correctness check: it reports every core's result and never stops the run."""

from functools import partial

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

    rows = [
        ("agrees", agrees, 1e-3),
        ("disagrees", disagrees, 1e-3),
        ("cannot compile", cannot_compile, 1e-3),
        ("NaN after a match", nan_gradient, 1e-3),
        ("within its own tolerance", disagrees, 1.0),
    ]
    monkeypatch.setattr(kernels, "checks", lambda F, K: rows)
    results = kernels.check("cpu")
    assert results == {
        f"{what}, {launch}": said
        for launch in ("spans", "one-pass")  # (both forward launches, whatever the run's)
        for what, said in {
            "agrees": "0.00e+00",
            "disagrees": "1.00e+00 FAIL",
            "cannot compile": "FAIL RuntimeError: out of resource: shared memory",
            "NaN after a match": "inf FAIL",  # max() alone would have passed it (nan > 0 is False)
            "within its own tolerance": "1.00e+00",
        }.items()
    }


def test_the_check_runs_the_forward_in_two_launches_and_in_one(monkeypatch):
    """Its six rows alone took two launches under ``--launch auto``: the one-pass forward, which the
    batched rows take, went unchecked."""
    launches = []

    def records(kernel, T, device):
        launches.append(fused.parallel_spans(torch.zeros(2, 32, 16)))  # (on the CPU: two, unless forced)
        return [torch.ones(3)]

    monkeypatch.setattr(kernels, "checks", lambda F, K: [("records", records, 1e-3)])
    with kernels.forced_launch("spans"):  # (the run's own choice does not decide the check's)
        kernels.check("cpu")
    assert launches == [True, True, False, False]  # (PyTorch's then Triton's, per launch)


def test_the_check_measures_each_tensors_error_against_its_own_size(monkeypatch):
    """A final state whose values are all about 0.05 passed an error of 2% of them over ``1 + max``."""

    def small_state_off(kernel, T, device):
        return [torch.full((3,), 0.05 * (1.02 if kernel == "triton" else 1.0))]

    monkeypatch.setattr(kernels, "checks", lambda F, K: [("small state", small_state_off, 1e-3)])
    assert kernels.check("cpu")["small state, spans"] == "2.00e-02 FAIL"


def test_the_check_covers_the_timed_shape_and_bf16_inputs(monkeypatch):
    """It checked float32 inputs at F = 64, K = 16 only, whatever ``--head-dim`` and ``--mini-batch`` the
    rows were timed at, and every timed row runs on bf16 inputs (single-pass TF32 products)."""
    names = [what for what, _, _ in kernels.checks(F=32, K=32)]
    assert names == [
        f"{core} fwd+bwd, F=32, K=32, {dtype}" for dtype in ("float32", "bf16") for core in ("TTT-Linear", "TTT-MLP")
    ]
    assert len(kernels.checks(F=64, K=16)) == 6  # (TTT-MLP also at F = 32, the single-pass width)
    lengths = []
    monkeypatch.setattr(kernels, "checks", lambda F, K: [("records", lambda kernel, T, device: lengths.append(T), 1)])
    kernels.check("cpu", F=32, K=64)  # (37 mini-batches and 5 tokens at the timed K: 3 weight checkpoints)
    assert set(lengths) == {64 * 37 + 5}


@pytest.mark.parametrize("core", ["TTT-Linear", "TTT-MLP"])
def test_a_bf16_row_compares_triton_on_bf16_with_pytorch_on_the_same_values_in_float32(core):
    """In the interpreter the products are exact: what is left is bf16's rounding of outputs and gradients."""
    what, fn, tolerance = next(r for r in kernels.checks(F=16, K=16) if r[0].startswith(core) and "bf16" in r[0])
    reference, triton_ = fn("torch", T=16 * 2 + 3, device="cpu"), fn("triton", T=16 * 2 + 3, device="cpu")
    assert reference[0].dtype == torch.float32 and triton_[0].dtype == torch.bfloat16
    assert kernels._compare(partial(fn, T=16 * 2 + 3, device="cpu")) <= tolerance


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


@pytest.mark.parametrize(
    "argv,rows",
    [
        ([], [(1, 4096), (1, 16384), (1, 65536), (1, 262144), (8, 4096)]),
        (["--quick"], [(1, 4096), (8, 4096)]),
        (["--lengths", "65536", "65536", "--batched-length", "0"], [(1, 65536)]),
        (["--lengths", "1024", "--batched-length", "2048"], [(1, 1024), (8, 2048)]),
    ],
)
def test_the_rows_timed_follow_the_lengths_given(argv, rows, monkeypatch):
    """The batch-8 rows were always added, and a repeated length was timed twice (GPU minutes are few)."""
    timed = []
    monkeypatch.setattr(kernels, "_run", lambda args: timed.extend(kernels.cases(args)) or 0)
    assert kernels.main(argv) == 0
    assert timed == rows


def test_the_lact_row_takes_the_layer_benchmarks_shape(monkeypatch):
    """Its fast-weight heads could not be set: a run of `bench layers --lact-fast-heads 8` had no
    kernel-benchmark row to compare with."""
    given = []
    monkeypatch.setattr(kernels, "_run", lambda args: given.append(args) or 0)
    assert kernels.main(["--lact-fast-heads", "8", "--lact-chunk", "1024", "--lact-window", "128"]) == 0
    assert (given[0].lact_fast_heads, given[0].lact_chunk, given[0].lact_window) == (8, 1024, 128)


@pytest.mark.parametrize(
    "argv,said",
    [
        (["--quick", "--lengths", "65536"], "give --lengths or --quick, not both"),
        (["--batched-length", "-1"], "must be >= 0"),
        (["--torch-max", "-5"], "must be >= 0"),
    ],
)
def test_conflicting_or_negative_options_are_usage_errors(argv, said, capsys):
    """--quick silently dropped the lengths given with it; a negative length made a row of T < 0."""
    with pytest.raises(SystemExit) as exit:
        kernels.main(argv)
    assert exit.value.code == 2 and said in capsys.readouterr().err


def test_a_timed_training_repeat_makes_fresh_gradients_and_adds_into_none():
    """Each repeat of a fwd+bwd row costs what a step after ``zero_grad()`` does: nothing read from the last."""
    inputs = kernels.core_inputs(1, 2, 32, 8, torch.float32, "cpu", grad=True)
    for _ in range(2):
        kernels._fwd_bwd(kernels.ttt_linear, inputs, 16, "torch")
    assert all(x.grad is None for x in inputs)


def test_the_layer_row_names_the_core_the_layer_runs():
    """Where Triton cannot run, the layer falls back to the PyTorch scan with a log line alone: its row
    timed that against attention under the same name."""
    assert kernels.layer_core(64, 16, "cuda") == ("triton" if fused.triton is not None else "torch")
    assert kernels.layer_core(48, 16, "cuda") == "torch"  # (a head width the kernels do not tile)
    assert kernels.layer_core(64, 16, "cpu") == "torch"
