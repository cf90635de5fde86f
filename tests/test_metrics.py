"""Metric functions against values worked out by hand (in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ttt_mm.eval.metrics import LogBins, edge_masks, log_bin_edges, log_bin_index, mel_l1, psnr, ssim
from ttt_mm.eval.report import ModelReport
from ttt_mm.eval.scoring import FRAME_COLUMNS, HORIZON_FIELDS, ClipResult
from ttt_mm.tokenizers import AUDIO, VIDEO

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # 6.5025, 58.5225


def flat(value: float, shape=(3, 16, 16)) -> torch.Tensor:
    return torch.full(shape, float(value))


def test_psnr_by_hand():
    # MSE = (12 - 10)^2 = 4 -> 10 log10(255^2 / 4) = 42.1102 dB
    assert psnr(flat(12), flat(10)).item() == pytest.approx(10 * math.log10(65025 / 4), abs=1e-9)
    assert psnr(flat(12), flat(10)).item() == pytest.approx(42.1102, abs=1e-4)
    # half the pixels off by 255, half exact: MSE = 255^2 / 2 -> 10 log10(2) = 3.0103 dB
    a, b = torch.zeros(1, 2, 2), torch.tensor([[[0.0, 255.0], [255.0, 0.0]]])
    assert psnr(a, b).item() == pytest.approx(3.0103, abs=1e-4)
    # on a [0, 1] scale the same ratio gives the same number
    assert psnr(a / 255, b / 255, max_value=1.0).item() == pytest.approx(3.0103, abs=1e-4)


def test_psnr_is_per_frame_and_capped_for_identical_frames():
    frames = torch.stack([flat(10), flat(12)])  # [2, 3, 16, 16]
    out = psnr(frames, flat(10).expand(2, 3, 16, 16))
    assert out.shape == (2,)
    assert out[0].item() == 100.0  # identical: the floor on the MSE gives max_db, not infinity
    assert out[1].item() == pytest.approx(42.1102, abs=1e-4)
    assert psnr(flat(10).to(torch.uint8), flat(12).to(torch.uint8)).item() == pytest.approx(42.1102, abs=1e-4)


def test_ssim_of_identical_images_is_one():
    x = torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_ssim_of_flat_images_is_the_luminance_term():
    # no variance: SSIM = (2ab + c1) / (a^2 + b^2 + c1) = (2*100*120 + 6.5025) / (100^2 + 120^2 + 6.5025)
    expected = (2 * 100 * 120 + C1) / (100**2 + 120**2 + C1)
    assert ssim(flat(100), flat(120)).item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.983611, abs=1e-6)


def test_ssim_with_one_uniform_window_by_hand():
    # x = [[0, 0], [255, 255]], y = [[0, 255], [0, 255]]: both means 127.5, both variances 127.5^2,
    # covariance E[xy] - 127.5^2 = 65025 / 4 - 16256.25 = 0. The luminance terms cancel and
    # SSIM = c2 / (2 * 16256.25 + c2) = 58.5225 / 32571.0225 = 0.0017968
    x = torch.tensor([[0.0, 0.0], [255.0, 255.0]]).expand(3, 2, 2)
    y = torch.tensor([[0.0, 255.0], [0.0, 255.0]]).expand(3, 2, 2)
    value = ssim(x, y, window=2, sigma=None).item()
    assert value == pytest.approx(C2 / (2 * 16256.25 + C2), abs=1e-12)
    assert value == pytest.approx(0.0017968, abs=1e-7)
    # y = x: 1; y = 255 - x: covariance -var, so (2 m^2 + c1)(c2 - 2 var) / ((2 m^2 + c1)(2 var + c2))
    assert ssim(x, x, window=2, sigma=None).item() == pytest.approx(1.0)
    var = 127.5**2
    assert ssim(x, 255 - x, window=2, sigma=None).item() == pytest.approx((C2 - 2 * var) / (2 * var + C2), abs=1e-12)


def test_ssim_averages_windows_and_channels():
    # 3 x 2 image, 2 x 2 windows: two positions; channel 0 flat 100 vs 120, channel 1 identical
    x = torch.stack([torch.full((2, 3), 100.0), torch.arange(6.0).reshape(2, 3) * 40])
    y = torch.stack([torch.full((2, 3), 120.0), torch.arange(6.0).reshape(2, 3) * 40])
    flat_term = (2 * 100 * 120 + C1) / (100**2 + 120**2 + C1)
    assert ssim(x, y, window=2, sigma=None).item() == pytest.approx((flat_term + 1.0) / 2, abs=1e-12)


def test_ssim_falls_with_noise_and_rejects_small_frames():
    x = torch.rand(1, 3, 32, 32) * 255
    noisy = [ssim(x + s * torch.randn_like(x), x).item() for s in (5, 20, 60)]
    assert 1 > noisy[0] > noisy[1] > noisy[2]
    with pytest.raises(ValueError, match="smaller than the 11x11 SSIM window"):
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


def test_mel_l1_by_hand():
    a = torch.zeros(2, 4, 3)
    b = torch.zeros(2, 4, 3)
    b[0] += 1.5
    b[1, 0, 0] = 12.0  # 12 / 12 entries = 1
    assert mel_l1(a, b).tolist() == [1.5, 1.0]


def test_log_bin_index_and_edges_by_hand():
    x = np.array([0, 1, 2, 3, 4, 7, 8, 1000])
    # one bin per octave from 1: [0,1) [1,2) [2,4) [4,8) [8,16) ... 1000 in [512, 1024) = bin 10
    assert log_bin_index(x, start=1, per_octave=1).tolist() == [0, 1, 2, 2, 3, 3, 4, 10]
    assert log_bin_edges(3, start=1, per_octave=1) == (4.0, 8.0)
    assert log_bin_edges(0, start=1, per_octave=1) == (0.0, 1.0)
    # two per octave: edges 1, 1.414, 2, 2.828, 4, ...; 1.5 -> bin 2, 3 -> bin 4, 2.9 -> bin 4
    assert log_bin_index(np.array([1.0, 1.5, 2.0, 2.9, 3.0, 4.0]), 1, 2).tolist() == [1, 2, 3, 4, 4, 5]
    lo, hi = log_bin_edges(2, start=1, per_octave=2)
    assert (lo, hi) == (pytest.approx(math.sqrt(2)), pytest.approx(2.0))
    # seconds from 0.25 s: [0, .25) [.25, .5) [.5, 1) [1, 2) ...
    assert log_bin_index(np.array([0.0, 0.24, 0.25, 0.5, 0.99, 1.0, 59.9]), 0.25, 1).tolist() == [0, 0, 1, 2, 2, 3, 8]
    with pytest.raises(ValueError, match=">= 0"):
        log_bin_index(np.array([-1.0]))


def test_log_bins_means_by_hand():
    bins = LogBins(num_series=2, start=1, per_octave=1)
    bins.add(np.array([0, 2, 3]), np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]]))
    bins.add(np.array([5]), np.array([[7.0, 70.0]]))  # a later chunk reaching a new bin
    rows = bins.rows()
    assert [r["bin"] for r in rows] == [0, 2, 3]  # bin 1 ([1, 2)) is empty and left out
    assert [(r["lo"], r["hi"]) for r in rows] == [(0.0, 1.0), (2.0, 4.0), (4.0, 8.0)]
    assert [r["count"] for r in rows] == [1, 2, 1]
    assert [r["x_mean"] for r in rows] == [0.0, 2.5, 5.0]
    assert [r["means"] for r in rows] == [[1.0, 10.0], [3.0, 30.0], [7.0, 70.0]]


def test_edge_masks_take_the_first_and_last_tenth_of_the_span_scored():
    x = np.arange(1, 21) * 0.5  # 0.5 .. 10 s scored: first 10% is <= 1.45 s, last is >= 9.05 s
    first, last = edge_masks(x, 0.1)
    assert x[first].tolist() == [0.5, 1.0] and x[last].tolist() == [9.5, 10.0]
    with pytest.raises(ValueError):
        edge_masks(x, 0.6)


def test_edge_masks_of_a_few_steps_hold_the_first_and_the_last():
    """Scoring starts a step in: measured from the clip's start, the first tenth of a clip of ten
    steps held no scored step (its loss NaN) while the last held one."""
    x = np.arange(1, 10) * 0.25  # steps 1..9 of a 2.5 s clip of 0.25 s steps (step 0 is never scored)
    first, last = edge_masks(x, 0.1)
    assert x[first].tolist() == [0.25] and x[last].tolist() == [2.25]
    for n in (61, 71, 131, 161, 191):  # 40 ms steps whose edges fall on a step: rounding took it on one side only
        first, last = edge_masks(np.arange(1, n + 1) * 0.04, 0.1)
        assert first.sum() == last.sum(), n
    one, alone = edge_masks(np.array([3.0]), 0.1)
    assert one.tolist() == alone.tolist() == [True]
    assert [m.tolist() for m in edge_masks(np.zeros(0), 0.1)] == [[], []]


def _clip(seconds: list[float], model: list[float], copy: float, running: float, modality=None) -> ClipResult:
    n = len(seconds)
    losses = np.stack([model, [copy] * n, [running] * n], axis=1).astype(np.float32)
    modality = np.zeros(n, np.int8) if modality is None else np.array(modality, np.int8)
    return ClipResult(
        "a.wav", 0.0, 10.0, n, np.arange(n), np.array(seconds), modality, losses,
        np.zeros((0, len(FRAME_COLUMNS))), np.zeros((0, 2)), np.zeros((0, len(HORIZON_FIELDS))),
        np.zeros((0, len(HORIZON_FIELDS))), 0,
    )  # fmt: skip


def test_a_report_pools_each_edge_over_its_own_tokens_and_bins_seconds_from_one_step():
    """Five scored tokens in the clip's first tenth, one in its last: each edge's mean is its own."""
    seconds = [0.0, 0.2, 0.4, 0.6, 0.8, 2.0, 4.0, 6.0, 9.5]
    report = ModelReport("m", {}, (0,), seconds_per_step=0.25, rollout_steps=0, edge_fraction=0.1)
    report.add(_clip(seconds, [1.0] * 5 + [2.0] * 3 + [5.0], copy=3.0, running=1.5))
    out = report.to_dict()
    edges = out["length_extrapolation"]["all"]["model"]
    assert (edges["first"], edges["last"]) == (1.0, 5.0) and out["length_extrapolation"][
        "model_last_below_first"
    ] is False
    by_second = out["loss_vs_context"]["all"]["seconds"]
    assert by_second[0]["hi"] == 0.25 and by_second[0]["count"] == 2  # the first step alone, not the first second
    assert out["beats_both_baselines"] is False  # below the copy's 3.0, not below the running mean's 1.5


def test_a_reports_edges_are_whole_steps_of_audio_and_video():
    """Audio-visual steps of 0.5 s: the video tokens at each step's start, the audio tokens at 0 and 0.25 s
    into it. Each edge holds whole steps: timed by token, the last step's video was left out of the
    last tenth and the first step's later audio token out of the first, so the two edges compared
    other mixes of audio and video, not early and late context."""
    steps = [1, 2, 3]  # (scoring starts a step in)
    seconds = [0.5 * s + offset for s in steps for offset in (0.0, 0.0, 0.0, 0.25)]
    modality = [VIDEO, VIDEO, AUDIO, AUDIO] * len(steps)
    model = [1.0 if m == VIDEO else 3.0 for m in modality]  # the same at every step of the clip
    report = ModelReport("m", {}, (AUDIO, VIDEO), seconds_per_step=0.5, rollout_steps=0, edge_fraction=0.1)
    report.add(_clip(seconds, model, copy=3.0, running=1.5, modality=modality))
    edges = report.to_dict()["length_extrapolation"]["all"]["model"]
    assert (edges["first"], edges["last"], edges["last_over_first"]) == (2.0, 2.0, 1.0)


def test_a_report_with_nothing_scored_compares_nothing():
    """NaN losses made both comparisons False, as if the model had lost; they are null."""
    report = ModelReport("m", {}, (0,), seconds_per_step=0.25, rollout_steps=0, edge_fraction=0.1)
    report.add(_clip([], [], copy=3.0, running=1.5))
    out = report.to_dict()
    assert out["beats_both_baselines"] is None and out["length_extrapolation"]["model_last_below_first"] is None
