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
