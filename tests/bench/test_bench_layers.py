"""The layer benchmark's worker measures every mixer it lists, LaCT included (a smoke run: nothing timed)."""

import json

import pytest
import torch

from ttt_mm.bench import layers


@pytest.mark.parametrize("name", layers.LAYERS)
def test_the_worker_reports_a_training_measurement_for_every_layer(name, capsys):
    argv = ["--dim", "32", "--heads", "2", "--work", "48", "--train", "--lact-chunk", "16", "--lact-window", "8"]
    assert layers.main([*argv, "--worker", name, "48"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["layer"] == name and row["T"] == 48
    assert row["tokens_per_s"] > 0 and row["seconds"] > 0 and row["peak_mib"] >= 0


def test_lact_is_built_with_the_chunk_window_and_fast_heads_asked_for():
    argv = ["--dim", "64", "--heads", "4", "--lact-chunk", "64", "--lact-window", "32", "--lact-fast-heads", "2"]
    layer = layers.build("lact", layers.parse(argv))
    assert (layer.chunk_size, layer.window, layer.num_heads, layer.fast_heads) == (64, 32, 4, 2)


def test_a_failing_row_is_reported_and_the_others_still_printed(monkeypatch, capsys):
    calls = []

    def fake(name, T, argv, env=None):
        calls.append(name)
        if name == "attention":
            raise RuntimeError("benchmark worker attention failed:\nCUDA out of memory")
        return {"layer": name, "T": T, "seconds": 0.5, "tokens_per_s": T / 0.5, "peak_mib": 1.0}

    monkeypatch.setattr(layers, "run_isolated", fake)
    argv = ["--layers", "ttt_linear", "attention", "--lengths", "64", "--rounds", "2"]
    assert layers.main(argv) == 1
    out = capsys.readouterr().out
    assert calls.count("attention") == 1  # not retried in the second round
    assert "| attention  |     64 | failed: RuntimeError: CUDA out of memory |" in out
    assert "| ttt_linear |     64 |" in out


def test_the_attention_column_is_the_median_of_ratios_within_a_round(monkeypatch, capsys):
    """It divided the two rows' median rounds, which may come from different rounds: one round in which
    the host slowed attention alone moved the whole column."""
    seconds = {"ttt_linear": [1.0, 2.0, 3.0], "attention": [3.0, 1.0, 2.0]}  # within a round: 3, 0.5, 0.667

    def fake(name, T, argv, env=None):
        s = seconds[name].pop(0)
        return {"layer": name, "T": T, "seconds": s, "tokens_per_s": T / s, "peak_mib": 1.0}

    monkeypatch.setattr(layers, "run_isolated", fake)
    monkeypatch.setattr(layers, "live_memory", lambda *a: 1.0)
    assert layers.main(["--layers", "ttt_linear", "attention", "--lengths", "64", "--rounds", "3"]) == 0
    rows = {
        line.split("|")[1].strip(): line.split("|")[-2].strip()
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ttt_linear ") or line.startswith("| attention ")
    }
    assert rows == {"ttt_linear": "0.67", "attention": "1.00"}  # (the medians' ratio: 32 / 32 = 1.00)


@pytest.mark.parametrize("failing, other", [("attention", "ttt_linear"), ("ttt_linear", "attention")])
def test_a_row_that_fails_in_a_later_round_is_one_failed_row(failing, other, monkeypatch, capsys):
    """It was printed twice: as a median of the rounds it passed and as failed, with nothing saying so.
    A layer's passed rounds were paired with all of attention's for the ratio: a zip of unequal lengths
    raised, and no table was printed (a GPU session's measurements lost)."""
    seen = []

    def fake(name, T, argv, env=None):
        seen.append(name)
        if name == failing and seen.count(failing) == 2:
            raise RuntimeError(f"benchmark worker {failing} failed:\nCUDA out of memory")
        return {"layer": name, "T": T, "seconds": 0.5, "tokens_per_s": T / 0.5, "peak_mib": 1.0}

    monkeypatch.setattr(layers, "run_isolated", fake)
    monkeypatch.setattr(layers, "live_memory", lambda *a: 1.0)
    assert layers.main(["--layers", "ttt_linear", "attention", "--lengths", "64", "--rounds", "3"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith(f"| {failing:<10} ")] == [
        f"| {failing:<10} |     64 | failed: RuntimeError: CUDA out of memory |"
    ]
    assert [line for line in out if line.startswith(f"| {other:<10} |     64 |      ")]  # (its timed row)


def test_threads_reach_every_timed_process_and_two_rounds_report_the_slower(monkeypatch, capsys):
    seen = []

    def fake(name, T, argv, env=None):
        seen.append(argv)
        seconds = 0.5 if len(seen) == 1 else 1.0  # the first round fast, the second slow
        return {"layer": name, "T": T, "seconds": seconds, "tokens_per_s": T / seconds, "peak_mib": 1.0}

    monkeypatch.setattr(layers, "run_isolated", fake)
    threads = torch.get_num_threads()
    try:
        assert layers.main(["--layers", "ttt_linear", "--lengths", "64", "--rounds", "2", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1 and all("--threads" in argv for argv in seen)
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "threads 1" in out and "| ttt_linear |     64 |          64 |" in out  # 64 tokens in 1.0 s


def test_a_layer_or_length_named_twice_is_measured_once_and_the_header_says_how(monkeypatch, capsys):
    """``--layers attention attention --lengths 256 256`` timed four samples and reported their median
    as one row; the header did not say the sample size, rounds, LaCT's fast heads or what bf16 means."""
    seen = []

    def fake(name, T, argv, env=None):
        seen.append((name, T))
        return {"layer": name, "T": T, "seconds": 1.0, "tokens_per_s": T, "peak_mib": 1.0}

    monkeypatch.setattr(layers, "run_isolated", fake)
    argv = ["--layers", "attention", "attention", "--lengths", "64", "64", "--rounds", "1", "--dtype", "bf16"]
    assert layers.main([*argv, "--work", "128"]) == 0
    assert seen == [("attention", 64)] * 2  # (the timed sample and the live-memory pass)
    header = capsys.readouterr().out.splitlines()[0]
    assert "bf16 autocast of the forward" in header and "fast heads 4" in header
    assert "samples of 128 tokens (ms: per sequence of T), median of 1 rounds" in header


def test_the_peak_is_one_untimed_sequences_and_the_timed_ones_start_warm(monkeypatch):
    """The first timed sequence faulted in the memory the others reuse, so a sample of one sequence
    (64k by default) paid for it alone; the peak was read after the whole sample, fragmentation of
    later sequences included."""
    lengths, reads = [], []
    monkeypatch.setattr(layers, "build", lambda name, args: RecordingLayer(lengths))
    monkeypatch.setattr(layers, "resident_mib", lambda field: reads.append(len(lengths)) or 100.0)
    clock = []
    monkeypatch.setattr(layers.time, "perf_counter", lambda: clock.append(len(lengths)) or float(len(lengths)))
    args = layers.parse(["--layers", "ttt_linear", "--dim", "8", "--heads", "2", "--work", "24576"])
    got = layers.measure("ttt_linear", 8192, args)
    assert lengths == [256, 8192, 8192, 8192, 8192]  # warm-up, the untimed sequence, the sample of three
    assert reads[-1] == 2 and clock == [2, 5]  # the peak read before the clock starts
    assert got["seconds"] == 1.0 and got["peak_mib"] == 0.0
    lengths.clear()
    layers.measure("ttt_linear", 64, layers.parse(["--dim", "8", "--heads", "2", "--work", "64"]))
    assert lengths == [32, 64, 64]  # (a full-length warm-up left the peak resident: about 0 MiB measured)


@pytest.mark.parametrize("train", [False, True])
def test_a_training_measurement_runs_the_layer_in_training_mode(train, monkeypatch):
    """A mixer that behaved differently in training (dropout, say) would otherwise be timed as at inference."""
    modes = []
    monkeypatch.setattr(layers, "build", lambda name, args: RecordingLayer([], modes))
    args = layers.parse(["--layers", "ttt_linear", "--dim", "8", "--heads", "2", "--work", "64"] + ["--train"] * train)
    layers.measure("ttt_linear", 32, args)
    assert modes and set(modes) == {train}


class RecordingLayer(torch.nn.Module):
    """A layer that notes the length of every input (and, given a list, whether it ran in training mode)."""

    def __init__(self, lengths: list[int], modes: list[bool] | None = None) -> None:
        super().__init__()
        self.lengths, self.modes = lengths, modes
        self.weight = torch.nn.Parameter(torch.ones(()))  # something for a training measurement's backward

    def forward(self, x):
        self.lengths.append(x.shape[1])
        if self.modes is not None:
            self.modes.append(self.training)
        return x * self.weight, None


def test_a_width_the_heads_do_not_divide_is_one_error_before_any_row_runs(monkeypatch, capsys):
    """It was a failed row of every length, each after starting a worker process."""
    monkeypatch.setattr(layers, "run_isolated", lambda *a, **k: pytest.fail("a worker started"))
    assert layers.main(["--layers", "lact", "--dim", "500", "--heads", "8", "--lengths", "64"]) == 2
    assert capsys.readouterr().err.startswith(
        "python -m ttt_mm.bench layers: error: lact: ValueError: dim (500) must split into num_heads (8) heads of "
        "even width"
    )


def test_ratios_keep_three_digits_below_a_tenth_and_never_go_scientific():
    assert [layers._ratio(x) for x in (13.923, 1.0, 0.756, 0.0041234, 1234.5)] == [
        "13.92",
        "1.00",
        "0.76",
        "0.00412",
        "1234.50",
    ]


def test_cost_per_token_against_length_is_a_median_of_ratios_within_rounds():
    """A ratio of two medians taken from different rounds carried a spell of the host into the 1.3x target."""
    row = [{"T": 8, "tokens_per_s": 1 / c} for c in (1.0, 3.0, 1.1)]  # (a spell in round 2)
    ref = [{"T": 4, "tokens_per_s": 1 / c} for c in (1.0, 1.0, 3.0)]  # (one in round 3)
    assert 1 / layers._speed_ratio(row, ref) == 1.0  # (per round: 1, 3, 0.37; the medians' ratio said 1.1)
    assert 1 / layers._speed_ratio(row[:2], ref[:2]) == 3.0  # (two rounds: the costlier)
