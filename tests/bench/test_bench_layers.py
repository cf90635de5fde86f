"""The layer benchmark's worker measures every mixer it lists, LaCT included (a smoke run: nothing timed)."""

import json

import pytest

from ttt_mm.bench import layers


@pytest.mark.parametrize("name", layers.LAYERS)
def test_the_worker_reports_a_training_measurement_for_every_layer(name, capsys):
    argv = ["--dim", "32", "--heads", "2", "--work", "48", "--train", "--lact-chunk", "16", "--lact-window", "8"]
    assert layers.main([*argv, "--worker", name, "48"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["layer"] == name and row["T"] == 48
    assert row["tokens_per_s"] > 0 and row["seconds"] > 0 and row["peak_mib"] >= 0


def test_lact_is_built_with_the_chunk_and_window_asked_for():
    layer = layers.build(
        "lact", layers.parse(["--dim", "64", "--heads", "4", "--lact-chunk", "64", "--lact-window", "32"])
    )
    assert (layer.chunk_size, layer.window, layer.num_heads) == (64, 32, 4)
