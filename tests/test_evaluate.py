"""Long-clip evaluation: streamed scores equal one pass, rollouts feed back exactly, and the command
writes every output and skips bad files. Models are tiny audio-visual ones saved by hand."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from mediafiles import tone, write_video, write_wav
from omegaconf import OmegaConf

from ttt_mm.checkpoint import load_model, resolve_device
from ttt_mm.data import ClipInfo, MediaError, ReadSpec, SkipList, SyntheticClip, iter_windows
from ttt_mm.data.clip_record import clip_record
from ttt_mm.data.media import TensorMedia
from ttt_mm.eval import loop as evaluate_loop
from ttt_mm.eval import plots
from ttt_mm.eval.loop import model_info, time_left
from ttt_mm.eval.report import ModelReport
from ttt_mm.eval.rollout import rollout
from ttt_mm.eval.scoring import HORIZON_FIELDS, ClipScorer
from ttt_mm.eval.tables import SKIP_LIST, remove_earlier_figures, skip_list_set_aside
from ttt_mm.module import SequenceModel
from ttt_mm.tasks import evaluate as evaluate_task
from ttt_mm.tasks.common import CONF_DIR, ConfigError, Interrupted
from ttt_mm.tasks.evaluate import load_models, read_otherwise, report, run, warn_if_incomparable
from ttt_mm.tasks.held_out import from_anywhere
from ttt_mm.tasks.run_folders import trained_on_files
from ttt_mm.tokenizers import VIDEO

REPO = Path(__file__).resolve().parents[1]
SPEC = ReadSpec(("audio", "video"), size=32)
STEP = 9  # 5 audio + (32 / 16)^2 video tokens per 0.25 s step


def tiny_model(mixer: str = "ttt_linear", stream: str | None = None) -> SequenceModel:
    """An audio-visual model, or one of ``stream`` (audio or video) alone."""
    dim = 16
    streams = {
        "audio": {"_target_": "ttt_mm.tokenizers.AudioTokenizer", "dim": dim, "frames_per_token": 5},
        # pixel targets: fed back, true targets give the very frames that were read (see the rollout tests)
        "video": {"_target_": "ttt_mm.tokenizers.VideoTokenizer", "dim": dim, "size": 32, "target_pool": 1},
    }
    tokenizer = streams[stream] if stream else {"_target_": "ttt_mm.tokenizers.AVTokenizer", "dim": dim, **streams}
    layer = {
        "ttt_linear": {"_target_": "ttt_mm.layers.TTTLayer", "mini_batch_size": 4},
        "attention": {"_target_": "ttt_mm.layers.AttentionLayer"},
        "lact": {"_target_": "ttt_mm.layers.LaCTLayer", "chunk_size": 8, "window": 6, "fast_heads": 2},
    }[mixer]
    backbone = {
        "_target_": "ttt_mm.backbone.Backbone",
        "dim": dim,
        "depth": 1,
        "mixer": layer | {"_partial_": True, "num_heads": 2},
    }
    return SequenceModel(tokenizer, backbone).eval()


def save(model: SequenceModel, path: Path, split: dict | None = None, trained: list[ClipInfo] | None = None) -> Path:
    """A checkpoint as training saves it (``split``: the fractions its run split the data with;
    ``trained``: the clips it trained on)."""
    ckpt = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    if split is not None:
        ckpt.setdefault("MediaDataModule", {})["split"] = split
    if trained is not None:
        ckpt.setdefault("MediaDataModule", {})["training clips"] = clip_record(trained)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def model() -> SequenceModel:
    torch.manual_seed(0)
    return tiny_model()


@pytest.fixture(scope="module")
def clip_windows():
    clip = SyntheticClip(0, 3, 3.0)
    return list(iter_windows(clip, 0.75, SPEC)), next(iter_windows(clip, 3.0, SPEC))


def scores(model, windows, rollout_steps=0, keep_plot=False):
    scorer = ClipScorer(model, "clip", rollout_steps=rollout_steps, keep_plot=keep_plot)
    for batch in windows:
        scorer.push(batch)
    return scorer.finish()


def test_seconds_are_written_as_the_steps_make_them_not_with_float_noise():
    """files.csv said 3.2800000000000002 s for 82 steps of 0.04 s."""
    torch.manual_seed(0)
    audio = tiny_model(stream="audio")  # (0.05 s a step)
    clip = SyntheticClip(0, 3, 2.05)
    result = scores(audio, iter_windows(clip, 2.05, ReadSpec(("audio",))))
    assert str(result.duration) == "2.05"  # (41 steps: 2.0500000000000003)
    report = ModelReport("m", {}, (0,), 0.04, 82)  # (modality 0: audio)
    assert [row["seconds"] for row in report.horizons()][-2:] == [3.24, 3.28]


def test_a_clip_scored_is_as_long_as_its_media_not_its_last_step_rounded_up(model):
    """Sound that ends 0.17 s into a step gave a step of tokens, counted whole: 1.25 s scored of a 1.17 s
    clip (a video whose audio ends first), longer than the file and than what embed says of it."""
    frames = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)  # 1.25 s at 8 fps
    media = TensorMedia(samples=torch.zeros(round(1.17 * 16000)), frames=frames, sample_rate=16000, fps=8.0)
    result = scores(model, iter_windows(media, 0.5, SPEC))
    assert result.duration == 1.17 and result.tokens > 4 * STEP  # (the last step's tokens are still scored)
    scorer = ClipScorer(model, "hand-made")  # a batch made by hand, without lengths or rates: all data, at the model's
    assert scorer._window_seconds({"audio": torch.zeros(1, 8000), "video": torch.zeros(1, 8, 3, 32, 32)}) == 0.5


def test_a_video_scored_is_as_long_as_the_file_not_its_frames_counted_whole(tmp_path):
    """A 1.16 s video read at 8 fps gives 10 frames, the last shown from 1.125 s: 1.25 s was said."""
    path = write_video(tmp_path / "a.mp4", seconds=1.16, fps=25, width=32, height=32, audio_rate=None)
    result = scores(tiny_model(stream="video"), iter_windows(str(path), 0.5, ReadSpec(("video",), size=32)))
    assert result.duration == 1.16 and result.tokens == 5 * 4  # (five steps of 2 frames; decord's float32 times)


def test_a_clip_is_as_long_whatever_the_windows_it_is_read_in():
    """A clip's last window too short for a step of tokens (0.05 s of 1.55 s, in windows of 0.5 s) was not
    counted: 1.5 s, and 1.55 s read in one window."""
    torch.manual_seed(0)
    video = tiny_model(stream="video")  # (two frames a step at 8 fps: 0.25 s)
    spec, clip = ReadSpec(("video",), size=32), SyntheticClip(0, 3, 1.55)
    whole, windowed = (scores(video, iter_windows(clip, seconds, spec)) for seconds in (4.0, 0.5))
    assert whole.duration == windowed.duration == 1.55 and whole.tokens == windowed.tokens


@pytest.mark.parametrize("mixer", ["ttt_linear", "lact"])
def test_streamed_scores_equal_one_pass(mixer, model, clip_windows):
    windows, whole = clip_windows  # 0.75 s windows = 27 tokens: mini-batches of 4 and chunks of 8 straddle them
    if mixer != "ttt_linear":
        torch.manual_seed(0)
        model = tiny_model(mixer)
    result = scores(model, windows)
    with torch.no_grad():
        tokens, pred, _ = model(whole)
        loss, copy, n, copied = model.losses(tokens, pred)
    assert len(result.losses) == int(n) == int(copied) == 12 * STEP - STEP
    assert result.losses[:, 0].mean() == pytest.approx((loss / n).item(), rel=1e-5)
    assert result.losses[:, 1].mean() == pytest.approx((copy / copied).item(), rel=1e-5)
    assert result.position.tolist() == list(range(STEP, 12 * STEP))
    assert result.seconds[:5].tolist() == pytest.approx([0.25, 0.30, 0.35, 0.40, 0.45])  # audio tokens of step 1
    assert result.duration == 3.0 and result.tokens == 12 * STEP

    # running mean, brute force: token t is predicted by the mean of tokens t - P, t - 2P, ...
    targets = tokens.targets[0].double()
    brute = []
    for t in range(STEP, targets.shape[0]):
        guess = targets[t % STEP : t - STEP + 1 : STEP].mean(0)
        dim = 400 if t % STEP < 5 else 1536  # audio tokens: 5 frames x 80 mels are real
        brute.append(float((guess[:dim] - targets[t, :dim]).square().mean()))
    assert result.losses[:, 2] == pytest.approx(np.array(brute), rel=1e-4, abs=1e-6)


def test_a_last_window_shorter_than_a_step_adds_nothing_and_times_are_exact_far_into_a_file(model):
    windows = list(iter_windows(SyntheticClip(0, 3, 3.1), 0.75, SPEC))  # the fifth window is 0.1 s: no token
    assert len(windows) == 5 and model.tokenizer(windows[-1]).mask.shape[1] == 0
    whole, cut = scores(model, windows), scores(model, windows[:-1])
    np.testing.assert_array_equal(whole.losses, cut.losses)
    # an hour into a file, a token's time from the clip start is still exact (log bins start at token edges)
    late = [dict(w, start=w["start"] + 3600.0) for w in windows]
    np.testing.assert_allclose(scores(model, late).seconds, whole.seconds, rtol=0, atol=1e-9)


def test_frames_and_mel_are_scored(model, clip_windows):
    result = scores(model, clip_windows[0])
    assert result.frames.shape == (11 * 2, 6)  # steps 1..11, 2 frames per tubelet
    assert result.frames[:, 0].tolist() == list(range(2, 24))
    assert np.isfinite(result.frames).all()
    assert (result.frames[:, 4:] <= 1).all()  # SSIM
    assert result.mel.shape == (11 * 5, 2) and (result.mel > 0).all()


def test_a_silent_track_read_in_place_of_sound_is_input_but_never_scored(model, clip_windows):
    """A video without usable sound is read with silence (``missing_audio: silence``): predicting it is
    trivial, so its audio tokens would flatter every audio metric and the pooled loss."""
    windows, whole = clip_windows
    silent = [dict(w, audio_silent=torch.tensor([True])) for w in windows]
    heard, quiet = scores(model, windows, rollout_steps=2), scores(model, silent, rollout_steps=2)
    video = heard.modality == VIDEO
    assert (quiet.modality == VIDEO).all() and len(quiet.losses) == int(video.sum()) > 0
    np.testing.assert_allclose(quiet.losses, heard.losses[video], rtol=1e-6)  # the input is the same
    np.testing.assert_array_equal(quiet.frames, heard.frames)
    assert len(heard.mel) > 0 and len(quiet.mel) == 0
    mel = HORIZON_FIELDS.index("mel_l1_model")
    assert heard.horizon_counts[:, mel].sum() > 0 and quiet.horizon_counts[:, mel].sum() == 0
    with torch.no_grad():  # training and validation losses leave it out too
        tokens, pred, _ = model(dict(whole, audio_silent=torch.tensor([True])))
        n = model.losses(tokens, pred).scored
    assert int(n) == int(video.sum()) and tokens.mask.all()


def test_a_model_that_predicts_the_last_step_scores_as_that_step(clip_windows):
    """The model's frame and mel columns go through the same inversion and metrics as the baselines': a
    model whose prediction for the next step is the step it just read scores as the copy-last-step mel
    baseline, and its frames as the frames of that step, decoded."""
    from ttt_mm.eval.metrics import psnr

    copier = tiny_model()
    forward = copier.forward

    def predict_the_last_step(batch, state=None):
        tokens, _, state = forward(batch, state)
        return tokens, tokens.targets.clone(), state  # next_step: the prediction made at t is for t + P

    copier.forward = predict_the_last_step
    result = scores(copier, clip_windows[0])
    assert len(result.frames) == 22 and len(result.mel) == 55
    frames = clip_windows[1]["video"][0]  # [24, 3, 32, 32] uint8
    last_step = psnr(frames[0:22].reshape(11, 2, 3, 32, 32), frames[2:24].reshape(11, 2, 3, 32, 32)).reshape(-1)
    np.testing.assert_allclose(result.frames[:, 2], last_step.numpy(), atol=1e-6)  # PSNR of the model
    # copy-last-frame: a step's first frame from the frame just before it (closer than the last step's first
    # frame), its second from the same frame as the last step's (both two frames back)
    assert (result.frames[0::2, 3] > result.frames[0::2, 2]).all()
    np.testing.assert_allclose(result.frames[1::2, 3], result.frames[1::2, 2], atol=1e-9)
    np.testing.assert_allclose(result.mel[:, 0], result.mel[:, 1], atol=1e-9)
    assert not np.allclose(scores(tiny_model(), clip_windows[0]).frames[:, 2], result.frames[:, 3])


def test_copy_baseline_frames_are_the_last_frame_seen(model, clip_windows):
    """The copy-last-frame PSNR equals a PSNR computed directly on the decoded frames: both frames of a
    step (a tubelet of 2) against the second frame of the step before, the last one the model saw."""
    from ttt_mm.eval.metrics import psnr

    result = scores(model, clip_windows[0])
    frames = clip_windows[1]["video"][0]  # [24, 3, 32, 32] uint8
    last_seen = frames[1:23:2].repeat_interleave(2, dim=0)  # frames 1, 1, 3, 3, ..., 21, 21
    direct = psnr(last_seen.reshape(11, 2, 3, 32, 32), frames[2:24].reshape(11, 2, 3, 32, 32)).reshape(-1)
    assert result.frames[:, 3] == pytest.approx(direct.numpy(), abs=1e-6)


def test_rollouts_leave_the_stream_unchanged(model, clip_windows):
    plain = scores(model, clip_windows[0])
    rolled = scores(model, clip_windows[0], rollout_steps=3, keep_plot=True)
    assert np.array_equal(plain.losses, rolled.losses)
    assert rolled.rollouts == 4  # after every window
    # origins at steps 2, 5, 8 are scored at all 3 horizons (the one at 11 runs past the clip)
    # their losses pool the tokens, as every mean does (each rollout's mean counted once gave a step with
    # fewer scored tokens, an audio-visual clip's silent track, the weight of a whole one)
    assert rolled.horizon_counts[:, 0].tolist() == [3 * STEP] * 3
    assert rolled.horizon_counts[:, 2].tolist() == [6, 6, 6]  # PSNR: 2 frames per step
    assert np.isfinite(rolled.horizon_sums).all()
    assert rolled.plot is not None and len(rolled.plot["rollout"]) == 3
    assert rolled.plot["origin_seconds"] == 2.25  # the last whole rollout, where no time is asked for
    for near, origin in ((1.4, 1.5), (0.0, 0.75), (1.875, 2.25)):  # (a clip's middle: its end may fade out)
        scorer = ClipScorer(model, "clip", rollout_steps=3, keep_plot=True, plot_near=near)
        for batch in clip_windows[0]:
            scorer.push(batch)
        assert scorer.finish().plot["origin_seconds"] == origin


def test_a_rollout_longer_than_a_window_is_scored_at_every_horizon(model, clip_windows):
    """Windows of 3 steps and rollouts of 4: a rollout's last horizon falls in the window after next."""
    rolled = scores(model, clip_windows[0], rollout_steps=4)
    assert rolled.horizon_counts[:, 0].tolist() == [3 * STEP] * 3 + [2 * STEP]  # from steps 2, 5, 8 (8 ends at 3)


def test_rollout_fed_the_truth_is_teacher_forcing(model, clip_windows):
    whole = clip_windows[1]
    with torch.no_grad():
        tokens, pred, _ = model(whole)
        _, state = model.backbone(tokens.embeddings[:, : 4 * STEP])  # context: steps 0..3
        step4 = slice(4 * STEP, 5 * STEP)
        out = rollout(model, state, tokens.targets[:, step4], tokens.target_stats[:, step4], steps=2)
    # horizon 2 was predicted from the fed-back true step 4: the one-pass prediction made at step 4
    assert torch.allclose(out[:, 1], pred[:, step4], atol=1e-4)
    with pytest.raises(ValueError, match="at least one step; got 0"):  # (it returned one step, not none)
        rollout(model, state, tokens.targets[:, step4], tokens.target_stats[:, step4], steps=0)


def test_mismatched_data_fails_with_the_numbers(tmp_path, model):
    ckpt = save(model, tmp_path / "tiny.ckpt")
    cfg = compose_evaluate(f"ckpt={ckpt}", f"output={tmp_path}", f"paths.output_dir={tmp_path}", "data.size=64")
    with pytest.raises(
        ConfigError, match="data.size=64 conflicts with checkpoint ttt_linear, which was trained on size=32"
    ):
        run(cfg)
    cfg = compose_evaluate(
        f"ckpt={ckpt}", f"output={tmp_path}", f"paths.output_dir={tmp_path}", "data.modalities=video"
    )
    with pytest.raises(ConfigError, match=r"^data.modalities must be a list \(of a string each\); got 'video'$"):
        run(cfg)  # (said: data.modalities=[d,e,i,o,v] conflicts with checkpoint ttt_linear)
    cfg = compose_evaluate(f"ckpt={ckpt}", f"output={tmp_path}", f"paths.output_dir={tmp_path}", "ssim_window=33")
    with pytest.raises(ConfigError, match=r"ssim_window must be a whole number from 1 to the frame size \(32 px\)"):
        run(cfg)  # before any file is read


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rollout_steps=-1", r"^rollout_steps must be a whole number >= 0 \(0: no rollout\); got -1$"),
        ("bins_per_octave=0", r"^bins_per_octave must be a whole number >= 1; got 0$"),
        ("plot_clips=-1", r"^plot_clips must be a whole number >= 0 \(0: no figures of single clips\); got -1$"),
        ("edge_fraction=0.7", r"^edge_fraction must lie in \(0, 0.5\], .*; got 0.7$"),
        ("edge_fraction=0", r"^edge_fraction must lie in \(0, 0.5\], .*; got 0$"),
        ("max_files=0", r"^max_files must be a whole number >= 1 \(or null for all\); got 0$"),
    ],
)
def test_each_option_out_of_range_is_named_before_anything_is_written(tmp_path, model, override, message):
    """(one line named all four options whatever was wrong; max_files was refused after every file was
    probed and the list of skipped files written; plot_clips=-1 passed)"""
    ckpt = save(model, tmp_path / "tiny.ckpt")
    cfg = compose_evaluate(f"ckpt={ckpt}", f"output={tmp_path / 'out'}", f"paths.output_dir={tmp_path}", override)
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not (tmp_path / "out").exists()


def test_an_ssim_window_for_a_model_without_video_says_what_it_takes(tmp_path):
    ckpt = save(tiny_model(stream="audio"), tmp_path / "audio.ckpt")
    cfg = compose_evaluate(f"ckpt={ckpt}", f"output={tmp_path}", f"paths.output_dir={tmp_path}", "ssim_window=0")
    with pytest.raises(ConfigError, match=r"^ssim_window must be a whole number >= 1; got 0$"):  # (not "(None px)")
        run(cfg)


def test_checkpoints_that_read_different_streams_are_refused_without_a_warning_first(tmp_path, caplog):
    """They make different tokens too: the warning that their losses are on different scales came first,
    for a run that the next line refused."""
    audio, video = (save(tiny_model(stream=s), tmp_path / f"{s}.ckpt") for s in ("audio", "video"))
    cfg = compose_evaluate(f"ckpt=[{audio},{video}]", f"output={tmp_path}", f"paths.output_dir={tmp_path}")
    with pytest.raises(ConfigError, match="the checkpoints read different modalities"):
        run(cfg)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_val_and_test_splits_are_those_of_the_checkpoints_run(tmp_path, model, monkeypatch, caplog):
    """With the data config's own fractions (0.02 for the synthetic data), split=test scored files that
    the checkpoint's run had trained on."""
    run_split = {"val_fraction": 0.25, "test_fraction": 0.5}
    ckpt = save(model, tmp_path / "m.ckpt", split=run_split)
    evaluated, evaluate = [], evaluate_task.evaluate
    monkeypatch.setattr(
        evaluate_task, "evaluate", lambda m, clips, *a: evaluated.append(clips) or evaluate(m, clips, *a)
    )
    data = ["data.source.num_clips=12", "data.source.duration=1.0", "plots=false", "rollout_steps=0"]
    for split in ("all", "test"):
        out = tmp_path / split
        with caplog.at_level(logging.INFO, logger="ttt_mm.tasks.evaluate"):
            run(compose_evaluate(f"ckpt={ckpt}", f"output={out}", f"paths.output_dir={out}", f"split={split}", *data))
    every, test = evaluated
    assert test and [c.name for c in test] == [c.name for c in every if c.split_of(0.25, 0.5) == "test"]
    changed = "data.val_fraction=0.02 -> 0.25, data.test_fraction=0.02 -> 0.5"
    assert f"split=test: the checkpoint's test files, as its run split them ({changed})" in caplog.text

    other = save(model, tmp_path / "o.ckpt", split={"val_fraction": 0.25, "test_fraction": 0.0})
    both = [f"ckpt=[{ckpt},{other}]", f"output={tmp_path}", f"paths.output_dir={tmp_path}", *data]
    with pytest.raises(ConfigError, match=r"trained on different splits \(ttt: val_fraction=0.25 test_fraction=0.5, "):
        run(compose_evaluate(*both, "names=[ttt,other]", "split=val"))
    with pytest.raises(ConfigError, match=r"no clips in split 'test' of the data config \(data.test_fraction=0\)"):
        run(
            compose_evaluate(f"ckpt={other}", f"output={tmp_path}", f"paths.output_dir={tmp_path}", "split=test", *data)
        )


@pytest.mark.parametrize("stream", ["audio", "video"])
def test_a_checkpoint_of_one_stream_sets_only_that_streams_keys_and_is_evaluated(tmp_path, stream, monkeypatch):
    """The checkpoint holds null for the keys of the stream it does not read: passed on to the data
    module, they failed in its media clock."""
    ckpt = save(tiny_model(stream=stream), tmp_path / "tiny.ckpt")
    cfg = compose_evaluate(
        f"ckpt={ckpt}", f"output={tmp_path}", f"paths.output_dir={tmp_path}", "max_files=1", "plots=false"
    )
    decoded, decoding = [], evaluate_task.checkpoint_decoding
    monkeypatch.setattr(evaluate_task, "checkpoint_decoding", lambda *a: decoded.append(decoding(*a)) or decoded[-1])
    out = run(cfg)
    own = {"audio": {"sample_rate": 16000}, "video": {"fps": 8.0, "size": 32}}[stream]
    assert decoded == [{"modalities": [stream], **own}]  # (the other stream's keys: data.*'s, unused)
    scored = out["models"]["ttt_linear"]
    assert scored["files"] == 1 and scored["tokens_scored"] > 0 and np.isfinite(scored["loss"]["model"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.clip_seconds=x", "data.clip_seconds must be a number; got 'x'"),
        ("plots=no", "plots must be true or false; got 'no'"),
        ("window_seconds=abc", "window_seconds must be a number of seconds > 0 (or null for the data's validation"),
        ("window_seconds=0", "window_seconds must be a number of seconds > 0"),  # not the default in disguise
        ("window_seconds=-4", "window_seconds must be a number of seconds > 0"),
        ("threads=0", "threads must be a whole number >= 1 (or null for torch's default); got 0"),
    ],
)
def test_a_value_of_the_wrong_kind_is_a_config_error_naming_its_key(tmp_path, model, override, message):
    ckpt = save(model, tmp_path / "tiny.ckpt")
    cfg = compose_evaluate(f"ckpt={ckpt}", f"output={tmp_path}", f"paths.output_dir={tmp_path}", override)
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        run(cfg)
    assert not list(tmp_path.glob("*.csv"))


# ------------------------------------------------------------------------------------ the command


def compose_evaluate(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two good videos with sound, one without (read with a silent track), two bad files, a TTT, an
    attention and a LaCT checkpoint."""
    root = tmp_path_factory.mktemp("evaluate")
    media = root / "media"
    media.mkdir()
    write_video(media / "a.mp4", seconds=2.0, fps=8, width=64, height=48, audio_rate=16000)
    write_video(media / "b.mp4", seconds=1.5, fps=8, width=32, height=32, audio_rate=16000)
    write_video(media / "no_audio.mp4", seconds=2.0, fps=8, width=32, height=32, audio_rate=None)
    (media / "empty.mp4").write_bytes(b"")
    (media / "noise.mkv").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    torch.manual_seed(0)
    ttt, attention = save(tiny_model(), root / "ttt.ckpt"), save(tiny_model("attention"), root / "attention.ckpt")
    return root, media, [ttt, attention, save(tiny_model("lact"), root / "lact.ckpt")]


def command_args(folder, out: Path) -> list[str]:
    _, media, ckpts = folder
    return [
        f"ckpt=[{','.join(map(str, ckpts))}]",
        "data=av_folder",
        f"data.root={media}",  # no data.size: the checkpoint's decoding settings are used
        f"output={out}",
        "window_seconds=0.5",
        "rollout_steps=2",
        "edge_fraction=0.25",  # the first 10% of these short clips is their first, unscored step
        "plot_clips=1",
        "device=cpu",
    ]


OUTPUTS = (
    "metrics.json",
    "summary.csv",
    "loss_vs_context.csv",
    "horizons.csv",
    "frames.csv",
    "files.csv",
    "loss_vs_context.png",
    "loss_vs_context_audio.png",
    "loss_vs_context_video.png",
    "rollout_1.png",
    "spectrogram_1.png",
)


@pytest.fixture(scope="module")
def evaluated(folder):
    """``run`` as the command calls it, in this process (the CLI itself is tested under ``slow``)."""
    out = folder[0] / "out"
    return run(compose_evaluate(*command_args(folder, out), f"paths.output_dir={out}")), out


def test_evaluate_writes_every_output(evaluated, capsys):
    result, out = evaluated
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "loss_vs_context.png").read_bytes().startswith(b"\x89PNG")  # written whole under a temporary name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # and no temporary left
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"ttt_linear", "attention", "lact"}  # named after the mixer, as model= names it
    assert [Path(f["path"]).name for f in metrics["files"]] == ["a.mp4", "b.mp4", "no_audio.mp4"]
    for m in metrics["models"].values():
        assert all(np.isfinite(v) for v in m["loss"].values())
        # 2 s + 1.5 s + 2 s of 0.25 s steps, the first step of each unscored, and the 5 audio tokens of
        # each step of no_audio.mp4 (its silent track is input only)
        assert m["tokens_scored"] == (8 + 6 + 8 - 3) * STEP - (8 - 1) * 5
        assert set(m["by_modality"]) == {"audio", "video"}
        assert all(v is not None for v in m["length_extrapolation"]["all"]["model"].values())
        assert m["video"]["frames"] == (8 + 6 + 8 - 3) * 2 and m["audio"]["tokens"] == (8 + 6 - 2) * 5
        assert [h["horizon"] for h in m["rollout"]["horizons"]] == [1, 2]
        assert m["loss_vs_context"]["all"]["tokens"][0]["count"] > 0
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 3 * 3  # models x (all, audio, video) x series
    with open(out / "loss_vs_context.csv") as f:
        assert set(next(csv.DictReader(f))) >= {"model", "loss_model", "loss_copy_last_step", "loss_running_mean"}
    report(result)
    printed = capsys.readouterr().out
    assert "ttt_linear: loss" in printed and "attention: loss" in printed and "lact: loss" in printed
    edges = metrics["models"]["lact"]["length_extrapolation"]["all"]["copy_last_step"]  # (copying gains with context)
    assert f"(copy-last-step {edges['first']:.4f} -> {edges['last']:.4f})" in printed


def test_bad_files_are_reported_and_skipped(evaluated, capsys):
    result, out = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in metrics["skipped"]}
    assert set(reasons) == {"empty.mp4", "noise.mkv"}  # no_audio.mp4 is evaluated with a silent track
    assert "empty file" in reasons["empty.mp4"] and "not a readable media container" in reasons["noise.mkv"]
    skip_list = (out / "skipped_media.tsv").read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in skip_list) == ["empty.mp4", "noise.mkv"]
    assert metrics["settings"]["skipped"] == 2 and metrics["settings"]["evaluated"] == 3
    report(result)
    assert "skipped 2 file(s)" in capsys.readouterr().out


def test_a_score_nothing_was_scored_for_is_left_out_of_the_sweep_table(evaluated):
    """A NaN (an edge of no scored step) reached the sweep's table and results.csv as a number."""
    result, _ = evaluated
    (name, model), *_ = result["models"].items()
    edges = model["length_extrapolation"]["all"]["model"]
    flat = evaluate_task.scores(
        {name: model | {"length_extrapolation": {"all": {"model": edges | {"first": math.nan}}}}}
    )
    assert "eval/loss_start" not in flat and flat["eval/loss_end"] == edges["last"]
    diverged = evaluate_task.scores({name: model | {"loss": model["loss"] | {"model": math.inf}}})
    assert diverged["eval/loss"] == math.inf  # (a score, unlike nothing scored: shown as inf)


def test_the_summary_names_the_first_skipped_files_and_counts_the_rest(evaluated, capsys):
    """It named every skipped file on one line: thousands of names for a folder of bad files."""
    result, _ = evaluated
    skipped = [{"path": f"bad{i}.wav", "reason": "empty file"} for i in range(9)]
    report(result | {"skipped": skipped})
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("skipped ")]
    assert line.startswith("skipped 9 file(s): bad0.wav (empty file); bad1.wav (empty file);")
    assert "bad5.wav" not in line and line.endswith(" and 4 more (all in skipped_media.tsv)")


def test_a_file_that_fails_is_skipped_once_whatever_its_spans(folder, tmp_path, monkeypatch):
    """Each later span of a file that failed added a "skipped" entry: "skipped 3 file(s)" of one file."""
    _, media, ckpts = folder
    spans = "".join(f"{media / 'a.mp4'},{t},{t + 0.5}\n" for t in (0.0, 0.5, 1.0))
    (tmp_path / "m.csv").write_text(f"path,start,end\n{spans}{media / 'b.mp4'},,\n")
    real = evaluate_loop.iter_windows

    def failing(media_path, *args, **kwargs):
        if Path(media_path).name == "a.mp4":
            raise MediaError(str(media / "a.mp4"), "broken mid-file")
        return real(media_path, *args, **kwargs)

    monkeypatch.setattr(evaluate_loop, "iter_windows", failing)
    out = tmp_path / "out"
    args = [f"ckpt={ckpts[0]}", "data=manifest", f"data.root={tmp_path / 'm.csv'}", f"output={out}"]
    result = run(
        compose_evaluate(*args, f"paths.output_dir={out}", "window_seconds=0.5", "rollout_steps=0", "plots=false")
    )
    assert result["skipped"] == [{"path": str(media / "a.mp4"), "reason": "broken mid-file"}]
    assert json.loads((out / "metrics.json").read_text())["settings"]["skipped"] == 1


def test_a_rerun_into_the_same_output_reads_every_file_afresh(folder, tmp_path):
    """An evaluation's skip list is not carried over: a file an earlier run could not read is read again."""
    root, media, ckpts = folder
    out = tmp_path / "out"
    out.mkdir()
    (out / "skipped_media.tsv").write_text(f"{media / 'a.mp4'}\tfailed in an earlier run\n")
    args = [*command_args(folder, out), f"ckpt={ckpts[0]}", "rollout_steps=0", "plots=false"]
    result = run(compose_evaluate(*args, f"paths.output_dir={out}"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert [Path(f["path"]).name for f in metrics["files"]] == ["a.mp4", "b.mp4", "no_audio.mp4"]
    assert sorted(Path(s["path"]).name for s in result["skipped"]) == ["empty.mp4", "noise.mkv"]


def test_files_without_a_stream_the_checkpoint_reads_are_said_to_lack_it(folder, tmp_path):
    """The advice for training (set data.modalities and the tokenizer) conflicts with the checkpoint."""
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    for i in range(2):
        write_wav(sounds / f"{i}.wav", tone(1.0, 16000), 16000)
    out = tmp_path / "out"
    cfg = compose_evaluate(
        f"ckpt={folder[2][0]}", "data=audio_folder", f"data.root={sounds}", f"output={out}", f"paths.output_dir={out}"
    )
    with pytest.raises(
        ConfigError, match=r"2 have no video stream, which the checkpoint reads: modalities=\[audio,video\]\)"
    ):
        run(cfg)


def test_threads_sets_torchs_cpu_threads(folder, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    out = tmp_path / "out"
    args = [*command_args(folder, out), f"ckpt={folder[2][0]}", "rollout_steps=0", "plots=false", "max_files=1"]
    run(compose_evaluate(*args, f"paths.output_dir={out}", "threads=1"))
    assert asked == [1]


def test_the_progress_line_says_how_long_the_other_clips_take_from_a_minute_on():
    assert time_left(10.0, 5, 10) == ""  # (10 s left)
    assert time_left(60.0, 6, 512) == "; about 84 min left"
    assert time_left(600.0, 10, 512) == "; about 8.4 h left"


def test_an_interrupted_evaluation_says_no_metrics_were_written(folder, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_task, "evaluate", interrupted)
    out = tmp_path / "out"
    args = [*command_args(folder, out), f"ckpt={folder[2][0]}", "rollout_steps=0", "plots=false"]
    with pytest.raises(
        Interrupted, match=f"^no metrics were written to {out} .*evaluated; max_files=N evaluates the first N\\)$"
    ):
        run(compose_evaluate(*args, f"paths.output_dir={out}"))
    assert not (out / "metrics.json").exists()
    (out / "metrics.json").write_text("{}")  # an earlier evaluation's, which stays
    with pytest.raises(Interrupted, match="evaluated; the metrics.json there is an earlier evaluation's; max_files="):
        run(compose_evaluate(*args, f"paths.output_dir={out}"))

    def some_figures_then_interrupted(models, clips, spec, window, options, skips, output):
        (output / "spectrogram_0.png").write_bytes(b"png")  # a clip's figure, made before the interrupt
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_task, "evaluate", some_figures_then_interrupted)
    with pytest.raises(Interrupted, match=r"the first N\); the 1 figure\(s\) made so far were removed$"):
        run(compose_evaluate(*args, f"paths.output_dir={out}"))
    assert not list(out.glob("*.png"))  # (they would pass for a whole evaluation's)

    def interrupted_while_writing(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.undo()  # (evaluated whole, then stopped while its outputs were written: it said "interrupted")
    monkeypatch.setattr(evaluate_task, "write_outputs", interrupted_while_writing)
    with pytest.raises(
        Interrupted, match=f"^the results were being written to {out}: some of its files may be missing$"
    ):
        run(compose_evaluate(*args, f"paths.output_dir={out}", "max_files=1"))


def test_missing_checkpoint_is_a_config_error(tmp_path):
    cfg = compose_evaluate(f"ckpt={tmp_path}/missing.ckpt", f"output={tmp_path}", f"paths.output_dir={tmp_path}")
    with pytest.raises(ConfigError, match="missing.ckpt does not exist"):
        run(cfg)


@pytest.mark.parametrize(
    "data,message",
    [("video_folder", "data: dataset root /no/such/folder does not exist"), ("manifest", "data: manifest ")],
)
def test_a_data_root_that_is_not_there_is_a_config_error(tmp_path, model, data, message):
    ckpt = save(model, tmp_path / "tiny.ckpt")
    root = "/no/such/folder" + (".csv" if data == "manifest" else "")
    overrides = [
        f"ckpt={ckpt}",
        f"output={tmp_path}",
        f"paths.output_dir={tmp_path}",
        f"data={data}",
        f"data.root={root}",
    ]
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        run(compose_evaluate(*overrides, "data.modalities=null"))


@pytest.mark.slow
def test_command_line(folder, tmp_path):
    """The real command: outputs written, bad files listed, and a config error is one line with exit 2."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    call = [sys.executable, "-m", "ttt_mm.tasks.evaluate"]
    proc = subprocess.run(
        call + command_args(folder, tmp_path / "out"), cwd=REPO, capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all((tmp_path / "out" / name).is_file() for name in OUTPUTS)
    assert "skipped 2 file(s)" in proc.stdout and "ttt_linear: loss" in proc.stdout
    assert "evaluating 3 model(s)" in proc.stderr and "evaluating" not in proc.stdout  # the log is on stderr
    assert "][ttt_mm.tasks.evaluate][INFO] - evaluating 3 model(s)" in proc.stderr  # (not __main__, as -m names it)
    proc = subprocess.run(
        call + [f"ckpt={tmp_path}/missing.ckpt", f"output={tmp_path}/bad"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: checkpoint {tmp_path}/missing.ckpt does not exist"


def test_figures_go_to_the_first_clips_long_enough_to_roll_out(folder, tmp_path, monkeypatch, caplog):
    """plot_clips=1 with a first clip too short for a rollout: the next clip that has one gets the figure
    (it was spent on the short one, and the run had none); they are looked for among a bounded number
    of clips without one (each keeps its rollouts until it is scored)."""
    _, media, ckpts = folder
    (tmp_path / "spans.csv").write_text(f"path,start,end\n{media / 'a.mp4'},0.0,0.5\n{media / 'a.mp4'},0.0,2.0\n")
    out = tmp_path / "out"
    args = [f"ckpt={ckpts[0]}", "data=manifest", f"data.root={tmp_path / 'spans.csv'}", f"output={out}"]
    args += [f"paths.output_dir={tmp_path}"]
    with caplog.at_level(logging.INFO, logger="ttt_mm.eval.loop"):
        run(compose_evaluate(*args, "window_seconds=0.5", "rollout_steps=2", "plot_clips=1", "device=cpu"))
    assert sorted(p.name for p in out.glob("rollout_*.png")) == ["rollout_2.png"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[")]
    assert [line.partition("; figures ")[2] for line in lines] == ["", "rollout_2.png, spectrogram_2.png"]
    monkeypatch.setattr(evaluate_loop, "UNPLOTTED_AT_MOST", 1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ttt_mm.eval.loop"):
        run(compose_evaluate(*args, "window_seconds=0.5", "rollout_steps=2", "plot_clips=1", "device=cpu"))
    assert not list(out.glob("rollout_*.png"))  # (given up on, and said: the figures went missing unsaid)
    assert [m for m in caplog.messages if m.startswith("figures: 1 clips had none to draw; no more clips")]
    caplog.clear()  # without rollouts there is no figure to look for: the advice to evaluate longer clips was wrong
    with caplog.at_level(logging.INFO, logger="ttt_mm.eval.loop"):
        run(compose_evaluate(*args, "window_seconds=0.5", "rollout_steps=0", "plot_clips=1", "device=cpu"))
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("[")]  # (the clips were scored)
    assert not [m for m in caplog.messages if m.startswith("figures:") or "no rollout figure" in m]


def test_an_evaluation_of_one_split_lists_the_files_left_out_of_that_split_only(folder, tmp_path, capsys, caplog):
    """split=test ended with "skipped 2 file(s)", both of them rows of the training split, never to be scored.
    Its summary's count is the split's, said so. Its skip list and log line listed every split's files left
    out, and the list was written to the run folder (paths.output_dir), not to output= beside the results."""
    _, media, ckpts = folder
    rows = f"path,split\n{media / 'a.mp4'},test\n{media / 'noise.mkv'},train\n{media / 'empty.mp4'},test\n"
    (tmp_path / "rows.csv").write_text(rows)
    args = [f"ckpt={ckpts[0]}", "data=manifest", f"data.root={tmp_path / 'rows.csv'}", f"paths.output_dir={tmp_path}"]
    args += ["plots=false", "rollout_steps=0", "window_seconds=0.5", "device=cpu"]
    for split, skipped in (("test", ["empty.mp4"]), ("all", ["empty.mp4", "noise.mkv"])):
        with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
            result = run(compose_evaluate(*args, f"split={split}", f"output={tmp_path / split}"))
        assert sorted(Path(s["path"]).name for s in result["skipped"]) == skipped, split
        listed = (tmp_path / split / SKIP_LIST).read_text().splitlines()
        assert sorted(Path(line.split("\t")[0]).name for line in listed) == skipped, split
        of = " of the test split" if split == "test" else ""
        assert f"skipping {len(skipped)} of {len(skipped) + 1} files{of} (" in caplog.text, split
        caplog.clear()
        capsys.readouterr()
        report(result)
        assert f"\nskipped {len(skipped)} file(s){of}: " in capsys.readouterr().out


def test_an_evaluation_of_one_split_of_files_none_of_which_can_be_used_says_so(folder, tmp_path):
    """A KeyError: the reasons were looked up in the skip list, which lists the split's files only."""
    _, media, ckpts = folder
    (tmp_path / "rows.csv").write_text(f"path,split\n{media / 'empty.mp4'},test\n{media / 'noise.mkv'},train\n")
    args = [f"ckpt={ckpts[0]}", "data=manifest", f"data.root={tmp_path / 'rows.csv'}", f"paths.output_dir={tmp_path}"]
    with pytest.raises(ConfigError, match=r"^data: none of the 2 files can be used: .*; those of the test split are"):
        run(compose_evaluate(*args, "split=test", f"output={tmp_path / 'out'}", "device=cpu"))


def test_an_evaluation_into_a_training_runs_folder_is_refused_before_its_skip_list_is_touched(folder, tmp_path):
    """output=<a training run> replaced the run's skipped_media.tsv, which its resume reads, with the
    evaluation's list (and deleted it where the evaluation skipped nothing). A folder that only keeps
    checkpoints, and an evaluation's own earlier folder, are no training run's."""
    args = [f"ckpt={folder[2][0]}", "data=av_folder", f"data.root={folder[1]}", "device=cpu", "plots=false"]
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("trainer:\n  max_steps: 3\n")
    (run_dir / SKIP_LIST).write_text("/data/bad.mp4\tempty file\n")
    with pytest.raises(ConfigError, match=rf"^output={run_dir} is a training run's folder: .*output={run_dir}/eval\)$"):
        run(compose_evaluate(*args, f"output={run_dir}", f"paths.output_dir={run_dir}"))
    assert (run_dir / SKIP_LIST).read_text() == "/data/bad.mp4\tempty file\n"
    (tmp_path / "evaluated" / ".hydra").mkdir(parents=True)
    (tmp_path / "evaluated" / ".hydra" / "config.yaml").write_text("task_name: evaluate\n")
    (tmp_path / "kept" / "checkpoints").mkdir(parents=True)
    for other in ("evaluated", "kept"):
        result = run(compose_evaluate(*args, f"output={tmp_path / other}", "max_files=1", "rollout_steps=0"))
        assert result["models"], other


@pytest.mark.slow
def test_the_commands_refuse_a_training_runs_folder_before_hydra_writes_there(tmp_path):
    """Hydra's run folder is output=: evaluate and linear_probe wrote their own records over the run's
    (.hydra/config.yaml, which a resume and evaluate read) before the command could refuse."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("trainer:\n  max_steps: 3\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command, more in (("evaluate", []), ("linear_probe", [f"input={tmp_path}"]), ("evaluate", ["-m"])):
        call = [sys.executable, "-m", f"ttt_mm.tasks.{command}", f"ckpt={tmp_path}/a.ckpt", f"output={run_dir}", *more]
        proc = subprocess.run(call, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: output={run_dir} is a training run's folder"), (
            command,
            proc.stderr[-2000:],
        )
        assert sorted(p.name for p in run_dir.rglob("*")) == [".hydra", "config.yaml"]
        assert (run_dir / ".hydra" / "config.yaml").read_text() == "trainer:\n  max_steps: 3\n"


def test_an_evaluation_of_one_split_says_how_that_splits_files_are_read_only(folder, tmp_path, caplog):
    """split=test logged how every listed file is read, those of other splits too (here: a training file
    read with a silent track), as the index found them; now only the split's own. max_files=1 logged it
    of the files past the first too."""
    _, media, ckpts = folder
    rows = f"path,split\n{media / 'a.mp4'},test\n{media / 'no_audio.mp4'},train\n"
    (tmp_path / "rows.csv").write_text(rows)
    args = [f"ckpt={ckpts[0]}", "data=manifest", f"data.root={tmp_path / 'rows.csv'}", f"paths.output_dir={tmp_path}"]
    args += ["plots=false", "rollout_steps=0", "window_seconds=0.5", "device=cpu"]
    for split, said in (("test", False), ("all", True), ("all max_files=1", False)):
        caplog.clear()
        split, *more = split.split()
        with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
            run(compose_evaluate(*args, *more, f"split={split}", f"output={tmp_path / split}"))
        assert any("no_audio.mp4: no audio stream: read with a silent track" in m for m in caplog.messages) == said


def test_a_clip_too_short_for_a_rollout_says_why_it_has_no_figure(folder, tmp_path, caplog, capsys):
    _, media, ckpts = folder
    args = [f"ckpt={ckpts[0]}", "data=av_folder", f"data.root={media}", f"output={tmp_path}", "window_seconds=4"]
    args += ["rollout_steps=2", "plot_clips=1", "device=cpu", "max_files=1", f"paths.output_dir={tmp_path}"]
    with caplog.at_level(logging.INFO, logger="ttt_mm.eval.loop"), caplog.at_level(logging.INFO, "ttt_mm.tasks"):
        evaluate_task.report(run(compose_evaluate(*args)))
    assert (
        "  rollouts: none scored (each starts at a window's end and needs the next 2 steps" in capsys.readouterr().out
    )  # ... and the start said they follow each window (what short windows cost: a rollout each)
    assert [
        m for m in caplog.messages if "windows of 4 s, a rollout of 2 steps after each (rollout_steps=0: none)" in m
    ]
    assert not list(tmp_path.glob("rollout_*.png")) and not list(tmp_path.glob("spectrogram_*.png"))
    (line,) = [r.getMessage() for r in caplog.records if "no rollout figure" in r.getMessage()]
    assert line.startswith(str(media / "a.mp4")) and "end of each 4 s window" in line
    (tmp_path / "spans.csv").write_text(f"path,start,end\n{media / 'a.mp4'},0.5,2.5\n")  # a span: named as one
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ttt_mm.eval.loop"):
        run(compose_evaluate(*args[:1], "data=manifest", f"data.root={tmp_path / 'spans.csv'}", *args[3:]))
    (line,) = [r.getMessage() for r in caplog.records if "no rollout figure" in r.getMessage()]
    assert line.startswith(f"{media / 'a.mp4'}@0.5-2.5: no rollout figure")
    scored = [*args[:3], f"output={tmp_path / 'scored'}", "window_seconds=0.5", *args[5:]]  # (rollouts scored)
    evaluate_task.report(run(compose_evaluate(*scored)))
    assert "rollouts: none scored" not in capsys.readouterr().out


def test_an_evaluation_into_an_earlier_ones_folder_removes_its_figures_only(tmp_path):
    """Which figures an evaluation writes depends on its clips, so an earlier run's would otherwise sit
    beside the new results; a user's own files stay."""
    assert remove_earlier_figures(tmp_path, had_skip_list=False) is None  # nothing earlier: nothing to say
    ours = ["loss_vs_context.png", "loss_vs_context_audio.png", "rollout_3.png", "spectrogram_1.png"]
    theirs = ["notes.csv", "cover.png", "rollout.txt", "metrics.json"]
    for name in [*ours, *theirs]:
        (tmp_path / name).write_text("x")
    assert remove_earlier_figures(tmp_path, had_skip_list=False).startswith("4 figure(s) removed")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)
    assert remove_earlier_figures(tmp_path, False) is not None  # tables alone (plots=false): an earlier evaluation too
    (tmp_path / "metrics.json").unlink()
    assert remove_earlier_figures(tmp_path, had_skip_list=True) is not None


def test_an_earlier_skip_list_is_put_back_if_the_new_evaluation_stops_before_its_clips_are_known(tmp_path):
    earlier = tmp_path / SKIP_LIST
    earlier.write_text("old.mp4\tbad\n")
    with pytest.raises(ConfigError), skip_list_set_aside(tmp_path) as had_one:
        assert had_one and not earlier.exists()
        earlier.write_text("new.mp4\tbad\n")  # the new evaluation's list, opened before the mistake shows
        raise ConfigError("data: no media files in /typo")
    assert earlier.read_text() == "old.mp4\tbad\n" and sorted(tmp_path.iterdir()) == [earlier]
    with skip_list_set_aside(tmp_path) as had_one:
        earlier.write_text("new.mp4\tbad\n")
    assert had_one and earlier.read_text() == "new.mp4\tbad\n" and sorted(tmp_path.iterdir()) == [earlier]
    earlier.unlink()
    with skip_list_set_aside(tmp_path) as had_one:
        pass
    assert not had_one and not list(tmp_path.iterdir())
    left = tmp_path / f".{SKIP_LIST}.12345.tmp"  # set aside by an evaluation killed before it could put it back
    left.write_text("old.mp4\tbad\n")
    with pytest.raises(ConfigError), skip_list_set_aside(tmp_path) as had_one:
        raise ConfigError("data: no media files in /typo")
    assert had_one and earlier.read_text() == "old.mp4\tbad\n" and sorted(tmp_path.iterdir()) == [earlier]


def test_a_rerun_stopped_by_a_data_mistake_leaves_the_earlier_evaluation_whole(evaluated, folder, tmp_path):
    _, out = evaluated
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert "loss_vs_context.png" in before and SKIP_LIST in before
    args = [a for a in command_args(folder, out) if not a.startswith("data.root=")]
    with pytest.raises(ConfigError, match="data: "):
        run(compose_evaluate(*args, f"data.root={tmp_path / 'typo'}", f"paths.output_dir={out}"))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_an_evaluation_into_an_earlier_ones_folder_lists_only_its_own_skipped_files(folder, tmp_path, caplog):
    _, media, ckpts = folder
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.mp4").symlink_to(media / "a.mp4")
    out = tmp_path / "out"
    args = [f"ckpt={ckpts[0]}", "data=av_folder", f"output={out}", f"paths.output_dir={out}", "plots=false"]
    run(compose_evaluate(*args, f"data.root={media}", "window_seconds=0.5"))
    assert len((out / "skipped_media.tsv").read_text().splitlines()) == 2  # empty.mp4, noise.mkv
    with caplog.at_level(logging.INFO, logger="ttt_mm.tasks.evaluate"):
        result = run(compose_evaluate(*args, f"data.root={clean}", "window_seconds=0.5"))
    assert result["skipped"] == [] and not (out / "skipped_media.tsv").exists()
    (said,) = [r.getMessage() for r in caplog.records if "held an earlier evaluation" in r.getMessage()]
    assert said.endswith("its tables and skip list are replaced by this evaluation's as it ends")  # (not before)


def test_files_the_run_trained_on_are_left_out_of_a_held_out_split_listed_another_way(folder, tmp_path, caplog):
    """A folder's split is drawn from each file's path relative to data.root, a manifest's from the path
    as written: a test split of the same files listed in a manifest scored training files, silently."""
    _, media, _ = folder
    split = {"val_fraction": 0.0, "test_fraction": 1.0}  # (every file lands in the test split)
    (tmp_path / "link").symlink_to(media)  # (the run read a.mp4 through a link to the folder)
    trained = [ClipInfo(str(tmp_path / "link" / "a.mp4"), start=0.0, end=1.0), ClipInfo(str(media / "no_audio.mp4"))]
    ckpt = save(tiny_model(), tmp_path / "m.ckpt", split=split, trained=trained)
    manifest = tmp_path / "files.csv"
    manifest.write_text("path\n" + "".join(f"{media / n}\n" for n in ("a.mp4", "b.mp4", "no_audio.mp4")))
    out = tmp_path / "out"
    args = [f"ckpt={ckpt}", "data=manifest", f"data.root={manifest}", f"output={out}", f"paths.output_dir={out}"]
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.evaluate"):
        result = run(compose_evaluate(*args, "split=test", "plots=false", "rollout_steps=0", "window_seconds=0.5"))
    assert [f["path"] for f in json.loads((out / "metrics.json").read_text())["files"]] == [str(media / "b.mp4")]
    assert json.loads((out / "metrics.json").read_text())["settings"]["left_out_as_trained_on"] == 2
    (line,) = [r.getMessage() for r in caplog.records if "trained on, left out" in r.getMessage()]
    assert line.startswith("split=test: 2 of its 3 clips overlap what the checkpoint's run trained on, left out: ")
    assert f"{media / 'a.mp4'}, {media / 'no_audio.mp4'} (" in line and result["output"] == str(out)

    # (max_files counts the clips evaluated: those left out come first here)
    run(compose_evaluate(*args, "split=test", "plots=false", "rollout_steps=0", "window_seconds=0.5", "max_files=1"))
    assert [f["path"] for f in json.loads((out / "metrics.json").read_text())["files"]] == [str(media / "b.mp4")]

    every = save(tiny_model(), tmp_path / "all.ckpt", split=split, trained=[*trained, ClipInfo(str(media / "b.mp4"))])
    (out / SKIP_LIST).write_text("old.mp4\tbad\n")  # (as an earlier evaluation that skipped a file left it)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match="every clip of split 'test' overlaps what the checkpoint's run trained on"):
        run(compose_evaluate(f"ckpt={every}", *args[1:], "split=test", "plots=false"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # (its skip list was deleted)

    # split=all scores them with the rest: it says how many (it said nothing, the default split)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.evaluate"):
        run(compose_evaluate(*args, "split=all", "plots=false", "rollout_steps=0", "window_seconds=0.5"))
    assert json.loads((out / "metrics.json").read_text())["settings"]["trained_on_scored"] == 2
    assert "split=all: 2 of the 3 clips overlap what the checkpoint's run trained on, scored with the rest" in (
        caplog.text
    )


def test_a_span_held_out_of_a_file_the_run_trained_on_another_span_of_is_scored(folder, tmp_path, caplog):
    """Spans of one file may sit in different splits (its first second trained on, its last held out):
    every held-out span of a file the run trained on was left out, and with nothing else held out, the
    evaluation was refused. A held-out span that overlaps a trained one is still left out."""
    _, media, _ = folder
    trained = [ClipInfo(str(media / "a.mp4"), start=0.0, end=1.0)]
    ckpt = save(tiny_model(), tmp_path / "m.ckpt", split={"val_fraction": 0.0, "test_fraction": 1.0}, trained=trained)
    manifest = tmp_path / "spans.csv"
    manifest.write_text(f"path,start,end,split\n{media / 'a.mp4'},1.0,2.0,test\n{media / 'a.mp4'},0.5,1.5,test\n")
    out = tmp_path / "out"
    args = [f"ckpt={ckpt}", "data=manifest", f"data.root={manifest}", f"output={out}", f"paths.output_dir={out}"]
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.evaluate"):
        run(compose_evaluate(*args, "split=test", "plots=false", "rollout_steps=0", "window_seconds=0.5"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(f["path"], f["start"]) for f in metrics["files"]] == [(str(media / "a.mp4"), 1.0)]
    assert metrics["settings"]["left_out_as_trained_on"] == 1 and "1 of its 2 clips" in caplog.text
    assert f"left out: {media / 'a.mp4'}@0.5-1.5 (" in caplog.text  # (named as a span: the other one is scored)
    run(compose_evaluate(*args, "split=all", "plots=false", "rollout_steps=0", "window_seconds=0.5"))
    assert json.loads((out / "metrics.json").read_text())["settings"]["trained_on_scored"] == 1  # (0.5-1.5 alone)


def test_the_files_a_run_read_under_a_relative_root_are_known_from_any_folder(tmp_path, monkeypatch):
    """Its record names them relative to the folder it started in: from another, none of its training
    files was recognised in a held-out split, and all were scored as held out."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("{}")
    (run_dir / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {tmp_path / 'work'}\n")
    (run_dir / "checkpoints").mkdir()
    trained = [ClipInfo("media/a.mp4"), ClipInfo(str(tmp_path / "elsewhere" / "b.mp4"))]  # (data.root=media)
    ckpt = save(tiny_model(), run_dir / "checkpoints" / "last.ckpt", trained=trained)
    monkeypatch.chdir(tmp_path)  # (not where the run started)
    _, records = load_models([str(ckpt)], ["ttt"], "cpu")
    assert records["ttt"].files == {str(tmp_path / "work" / "media" / "a.mp4"), str(tmp_path / "elsewhere" / "b.mp4")}
    kept = save(tiny_model(), tmp_path / "kept.ckpt", trained=trained)  # (outside its run: as recorded)
    assert load_models([str(kept)], ["ttt"], "cpu")[1]["ttt"].files == {
        "media/a.mp4",
        str(tmp_path / "elsewhere" / "b.mp4"),
    }


def test_the_validation_split_of_too_few_files_to_hold_one_out_says_so_and_what_scores_them():
    """A run on two files validated on its training files; ``split=val`` of them blamed data.val_fraction."""
    from ttt_mm.data import MediaDataModule, SyntheticSource
    from ttt_mm.tasks.evaluate import select_clips

    datamodule = MediaDataModule(SyntheticSource(num_clips=2), val_fraction=0.05, test_fraction=0.0)
    with pytest.raises(ConfigError) as error:
        select_clips(datamodule, "val")
    assert str(error.value) == (
        "no clips in split 'val' of the data config (only 2 usable file(s), too few to hold one out: a run on them "
        "validates on its training files; split=all scores them)"
    )
    assert len(select_clips(datamodule, "all")) == 2


def test_a_data_group_of_other_streams_than_the_checkpoints_is_said_to_be_read_for_the_checkpoints():
    """``data=video_folder`` with an audio checkpoint scored the files' audio without a word."""
    audio = {"modalities": ["audio"], "sample_rate": 16000, "fps": None, "size": None}
    said = read_otherwise({"data": "video_folder", "tokenizer": "video"}, audio)
    assert said == (  # (not only its videos: every file with sound, as an audio run of the group takes them)
        "data=video_folder reads video in training; here its files with audio are taken and read for the audio "
        "the checkpoint reads (as data.modalities=[audio] takes them)"
    )
    assert "reads audio and video in training" in read_otherwise({"data": "av_folder", "tokenizer": "av"}, audio)
    assert read_otherwise({"data": "synthetic", "tokenizer": "video"}, audio) is None  # (its clips have sound)
    assert read_otherwise({"data": "audio_folder", "tokenizer": "audio"}, audio) is None
    av = audio | {"modalities": ["audio", "video"], "fps": 8.0, "size": 32}  # (evaluate's default takes silent videos)
    assert "here its files with video (those without sound with a silent track: data.missing_audio=silence) are " in (
        read_otherwise({"data": "video_folder", "tokenizer": "video"}, av, "silence")
    )
    said = read_otherwise({"data": "video_folder", "tokenizer": "video"}, av, "skip")
    assert "here its files with audio and video are taken" in said


def test_frames_of_two_spans_of_one_file_are_told_apart_by_their_start(folder, tmp_path):
    _, media, ckpts = folder
    manifest = tmp_path / "spans.csv"
    manifest.write_text(f"path,start,end\n{media / 'a.mp4'},0,1\n{media / 'a.mp4'},1,2\n")
    out = tmp_path / "out"
    args = [f"ckpt={ckpts[0]}", "data=manifest", f"data.root={manifest}", f"output={out}", f"paths.output_dir={out}"]
    run(compose_evaluate(*args, "plots=false", "window_seconds=0.5"))
    with open(out / "frames.csv") as f:
        rows = list(csv.DictReader(f))
    keys = [(r["model"], r["path"], r["start"], r["frame"]) for r in rows]
    assert {r["start"] for r in rows} == {"0.0", "1.0"} and len(set(keys)) == len(keys) > 0


def test_models_that_score_different_tokens_are_said_to_be_on_different_scales(caplog):
    def audio_model(frames_per_token):
        tokenizer = {"_target_": "ttt_mm.tokenizers.AudioTokenizer", "dim": 16, "frames_per_token": frames_per_token}
        layer = {"_target_": "ttt_mm.layers.AttentionLayer", "_partial_": True, "num_heads": 2}
        return SequenceModel(tokenizer, {"_target_": "ttt_mm.backbone.Backbone", "dim": 16, "depth": 1, "mixer": layer})

    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.evaluate"):
        warn_if_incomparable({"a": ("a.ckpt", audio_model(4)), "b": ("b.ckpt", audio_model(4))})
        assert not caplog.records
        warn_if_incomparable({"a": ("a.ckpt", audio_model(4)), "b": ("b.ckpt", audio_model(8))})
    (line,) = [r.getMessage() for r in caplog.records]
    assert "a: 25 tokens/s, targets of audio 320" in line and "b: 12.5 tokens/s, targets of audio 640" in line
    caplog.clear()
    one = audio_model(4)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.evaluate"):
        warn_if_incomparable(
            {"last": ("last.ckpt", one), "step": ("step20.ckpt", one), "c": ("c.ckpt", audio_model(4))}
        )
    assert [r.getMessage() for r in caplog.records] == [
        "last and step hold the same weights: their numbers will be the same"
    ]


def test_metrics_name_the_checkpoint_by_its_absolute_path(model, tmp_path, monkeypatch):
    """As embed's sidecars and linear_probe's metrics do: it was kept as typed, relative to a folder
    the metrics do not say."""
    monkeypatch.chdir(tmp_path)
    assert model_info("runs/last.ckpt", model, 0)["checkpoint"] == str(tmp_path / "runs" / "last.ckpt")


def test_a_checkpoint_listed_twice_is_a_config_error(tmp_path):
    """It was scored twice, as lact and lact_2, with the same numbers and no word."""
    (tmp_path / "a.ckpt").write_bytes(b"")
    (tmp_path / "b.ckpt").symlink_to(tmp_path / "a.ckpt")
    with pytest.raises(ConfigError, match=r"^ckpt lists .*a\.ckpt twice \(by this or another name\)"):
        load_models([str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt")], None, "cpu")


def test_a_device_this_machine_lacks_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        load_models([], None, "cuda")
    with pytest.raises(ConfigError, match="is not a device"):
        load_models([], None, "gpu0")
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")


@pytest.mark.slow
def test_a_sweep_writes_each_jobs_results_to_its_own_folder(folder, tmp_path):
    """``-m ckpt=a,b``: every job of a sweep runs in one process, where a date-stamped default output
    was the same for all of them and each job overwrote the one before."""
    _, media, ckpts = folder
    args = [f"ckpt={ckpts[0]},{ckpts[1]}", "data=av_folder", f"data.root={media}", "window_seconds=0.5"]
    args += ["rollout_steps=0", "plots=false", "max_files=1", "device=cpu"]
    call = [sys.executable, "-m", "ttt_mm.tasks.evaluate", "-m", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for where, folders in (
        ([f"paths.log_dir={tmp_path}/logs"], lambda: sorted(tmp_path.glob("logs/evaluate/multiruns/*/[01]"))),
        ([f"output={tmp_path}/out"], lambda: [tmp_path / "out" / "0", tmp_path / "out" / "1"]),
    ):
        proc = subprocess.run([*call, *where], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        checkpoints = []
        for job in folders():
            (model,) = json.loads((job / "metrics.json").read_text())["models"].values()
            checkpoints.append(model["checkpoint"])
            assert (job / "evaluate.log").is_file()  # the job's log beside its results
        assert checkpoints == [str(ckpts[0]), str(ckpts[1])]
    # the two checkpoints side by side, as a training sweep's runs are
    table = proc.stdout.split(f"sweep results (also in {tmp_path / 'out' / 'results.csv'}):\n", 1)[1].splitlines()
    columns = ["eval/loss", "eval/loss_copy", "eval/loss_end", "eval/loss_start", "eval/mel_l1", "eval/psnr_db"]
    assert table[0].split() == ["job", "mixer", *columns, "eval/ssim", "overrides"]
    assert [line.split()[:2] for line in table[1:3]] == [["#0", "ttt_linear"], ["#1", "attention"]]
    assert f"ckpt={ckpts[1]}" in table[2]
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(row["eval/loss"]) > 0 for row in rows] == [True, True] and rows[1]["run_dir"] == str(folders()[1])
    assert "best_ckpt" not in rows[0]  # (an evaluation has no best checkpoint: no empty column for one)


def test_a_clip_whose_name_is_not_utf8_is_evaluated_and_drawn(folder, tmp_path):
    """Its name went into a figure title (no glyph for the surrogate Python holds it as) and the CSV
    tables, and each raised at the end of the evaluation."""
    _, media, ckpts = folder
    clips = tmp_path / "clips"
    clips.mkdir()
    name = os.fsdecode(os.fsencode(clips) + b"/caf\xe9.mp4")
    os.symlink(media / "a.mp4", name)
    out = tmp_path / "out"
    args = [f"ckpt={ckpts[0]}", "data=av_folder", f"data.root={clips}", f"output={out}", f"paths.output_dir={out}"]
    run(compose_evaluate(*args, "window_seconds=0.5", "rollout_steps=2", "plot_clips=1", "device=cpu"))
    assert (out / "rollout_1.png").is_file() and (out / "spectrogram_1.png").is_file()
    assert os.fsencode(name) in (out / "files.csv").read_bytes()


def test_a_video_read_with_a_silent_track_gets_its_frames_drawn_and_the_next_clip_the_spectrogram(
    folder, tmp_path, caplog
):
    """A silent first clip took the one figure plot_clips=1 allows: no spectrogram was drawn at all.
    Each kind of figure now goes to the first clips that have one."""
    _, media, ckpts = folder
    clips = tmp_path / "clips"
    clips.mkdir()
    os.symlink(media / "no_audio.mp4", clips / "1_no_audio.mp4")
    os.symlink(media / "a.mp4", clips / "2_sound.mp4")
    out = tmp_path / "out"
    args = [f"ckpt={ckpts[0]}", "data=av_folder", f"data.root={clips}", f"output={out}", f"paths.output_dir={out}"]
    with caplog.at_level(logging.INFO, logger="ttt_mm.eval.loop"):
        run(compose_evaluate(*args, "window_seconds=0.5", "rollout_steps=2", "plot_clips=1", "device=cpu"))
    assert sorted(p.name for p in [*out.glob("rollout_*"), *out.glob("spectrogram_*")]) == [
        "rollout_1.png",
        "spectrogram_2.png",
    ]
    assert f"{clips / '1_no_audio.mp4'}: no spectrogram: read with a silent track" in caplog.messages
    # a clip whose probe is not known before it is read (info None) was taken to have sound: a
    # spectrogram of the silence read in place of it was drawn, and took the clip's one figure
    model = load_model(ckpts[0])
    silent, sound = (ClipInfo(str(clips / name)) for name in ("1_no_audio.mp4", "2_sound.mp4"))
    drawn = evaluate_loop.evaluate(
        {"m": (str(ckpts[0]), model)},
        [silent, sound],
        ReadSpec(("audio", "video"), size=32, missing_audio="silence"),
        0.5,
        evaluate_loop.Options(2, 7, 0.1, 2, True, 1),
        SkipList(),
        tmp_path,
    )["figures"]
    assert sorted(os.path.basename(f) for f in drawn) == ["rollout_1.png", "spectrogram_2.png"]


def test_a_window_typed_within_rounding_of_whole_steps_is_taken_as_them(folder, tmp_path):
    """0.5000000001 s passed the step check (1e-6 of a step) and then failed the sample grid's (1e-6 of
    a sample at 16 kHz) with a traceback; 0.3 s is 1.2 steps, said with its digits."""
    _, media, ckpts = folder
    args = [f"ckpt={ckpts[0]}", "data=av_folder", f"data.root={media}", f"paths.output_dir={tmp_path}", "plots=false"]
    result = run(compose_evaluate(*args, f"output={tmp_path / 'near'}", "window_seconds=0.5000000001", "max_files=1"))
    metrics = json.loads((Path(result["output"]) / "metrics.json").read_text())
    assert metrics["settings"]["window_seconds"] == 0.5 and metrics["settings"]["evaluated"] == 1
    with pytest.raises(ConfigError, match=r"window_seconds=0.3 is 1.2 steps of model ttt_linear \(0.25 s\)"):
        run(compose_evaluate(*args, f"output={tmp_path / 'off'}", "window_seconds=0.3"))


def test_a_window_far_longer_than_every_file_reads_each_whole(folder, tmp_path):
    """A window a trillion times a file's length gave the file no window at all (an absolute tolerance
    on their ratio), and every loss was NaN."""
    _, media, ckpts = folder
    args = [f"ckpt={ckpts[0]}", "data=av_folder", f"data.root={media}", f"output={tmp_path}", "plots=false"]
    result = run(compose_evaluate(*args, f"paths.output_dir={tmp_path}", "window_seconds=1e12", "max_files=1"))
    loss = result["models"]["ttt_linear"]["loss"]["model"]
    assert np.isfinite(loss) and loss > 0


def test_clips_too_short_to_score_are_skipped_and_none_left_is_an_error(tmp_path, model, caplog):
    """A clip of one step has no prediction to score: it was counted as evaluated, with NaN losses."""
    media = tmp_path / "media"
    media.mkdir()
    write_video(media / "long.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=16000)
    write_video(media / "short.mp4", seconds=0.25, fps=8, width=32, height=32, audio_rate=16000)
    ckpt = save(model, tmp_path / "tiny.ckpt")
    args = [f"ckpt={ckpt}", "data=av_folder", "data.min_seconds=0", "plots=false", f"paths.output_dir={tmp_path}"]
    result = run(compose_evaluate(*args, f"data.root={media}", f"output={tmp_path / 'both'}", "window_seconds=0.5"))
    assert [Path(s["path"]).name for s in result["skipped"]] == ["short.mp4"]
    assert result["skipped"][0]["reason"].startswith("too short to score")
    assert [np.isfinite(m["loss"]["model"]) for m in result["models"].values()] == [True]
    assert "skipped " + str(media / "short.mp4") + ": too short to score" in caplog.text
    (media / "long.mp4").unlink()
    with pytest.raises(ConfigError, match="none of the 1 clips could be evaluated"):
        run(compose_evaluate(*args, f"data.root={media}", f"output={tmp_path / 'short'}", "window_seconds=0.5"))


def _run_folder(root: Path, source: str, group: str, data_root: str = "/m") -> Path:
    """A training run's folder as Hydra records it (started in /work), with a checkpoint file in it."""
    (root / ".hydra").mkdir(parents=True)
    (root / ".hydra" / "config.yaml").write_text(f"data:\n  root: {data_root}\n  source:\n    _target_: {source}\n")
    runtime = f"hydra:\n  runtime:\n    cwd: /work\n    choices:\n      data: {group}\n"
    (root / ".hydra" / "hydra.yaml").write_text(runtime)
    (root / "checkpoints").mkdir()
    ckpt = root / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"")
    return ckpt


def test_a_model_trained_on_files_evaluated_on_the_synthetic_default_is_told_how_its_run_read(tmp_path, caplog):
    """Only ckpt= scores the synthetic clips (evaluate's default data): a user who trained on a folder
    expects that folder, so the warning gives the run's own data overrides to pass."""
    files = _run_folder(tmp_path / "a", "ttt_mm.data.sources.FolderSource", "audio_folder")
    synthetic = _run_folder(tmp_path / "b", "ttt_mm.data.sources.SyntheticSource", "synthetic")
    models = {"ttt": (str(files), None), "attention": (str(synthetic), None)}
    default = OmegaConf.create({"source": {"_target_": "ttt_mm.data.sources.SyntheticSource"}})
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.evaluate"):
        evaluate_task.warn_if_files_model_on_synthetic_clips(default, models)
        evaluate_task.warn_if_files_model_on_synthetic_clips(OmegaConf.create({"root": "/m"}), models)
    assert [r.getMessage() for r in caplog.records] == [
        "ttt was trained on files (its run: data=audio_folder data.root=/m) and is evaluated on synthetic clips, "
        "evaluate's default data; to score such files, pass those"
    ]
    relative = _run_folder(tmp_path / "c", "ttt_mm.data.sources.FolderSource", "audio_folder", "media/mix")
    assert trained_on_files(str(relative)) == {
        "data": "audio_folder",
        "data.root": "/work/media/mix",
    }  # (from anywhere)
    spaced = _run_folder(tmp_path / "d", "ttt_mm.data.sources.FolderSource", "audio_folder", "/my clips/a,b")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.evaluate"):
        evaluate_task.warn_if_files_model_on_synthetic_clips(default, {"ttt": (str(spaced), None)})
    assert "(its run: data=audio_folder \"data.root='/my clips/a,b'\")" in caplog.messages[0]  # (a shell argument)
    with pytest.raises(
        ConfigError,
        match=r"^split=test means the files ttt's run held out, but evaluate reads its default synthetic clips unless "
        r"told otherwise: pass the run's data, data=audio_folder data.root=/m$",
    ):
        evaluate_task.warn_if_files_model_on_synthetic_clips(default, models, "test")  # (their split of other clips)
    evaluate_task.warn_if_files_model_on_synthetic_clips(default, {"attention": (str(synthetic), None)}, "val")
    trained_synthetic = {"attention": from_anywhere({"synthetic/seed=0/index=1"}, synthetic)}  # (as load_models)
    alone = {"attention": (str(synthetic), None)}
    evaluate_task.warn_if_files_model_on_synthetic_clips(default, alone, "test", trained_synthetic)  # (no raise)
    assert trained_synthetic["attention"] == {"synthetic/seed=0/index=1"}  # (no path: not joined to /work)
    kept = {"ttt": (str(tmp_path / "ttt.ckpt"), None)}  # (outside its run folder: its record of files tells)
    with pytest.raises(ConfigError, match=r"pass the run's data, as it trained on them \(data=<group> data.root="):
        evaluate_task.warn_if_files_model_on_synthetic_clips(default, kept, "val", {"ttt": {"/m/a.wav"}})
    evaluate_task.warn_if_files_model_on_synthetic_clips(default, kept, "val", {"ttt": {"synthetic/seed=0/index=1"}})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.evaluate"):
        evaluate_task.warn_if_files_model_on_synthetic_clips(default, kept, "all", {"ttt": {"/m/a.wav"}})
    assert "(its run: not known: kept outside its run folder)" in caplog.messages[0]


def test_the_evaluate_command_warns_of_a_files_model_on_the_synthetic_default(folder, tmp_path, caplog):
    _, _, ckpts = folder
    ckpt = _run_folder(tmp_path / "run", "ttt_mm.data.sources.FolderSource", "av_folder")
    ckpt.write_bytes(Path(ckpts[0]).read_bytes())
    args = [f"ckpt={ckpt}", f"output={tmp_path / 'out'}", f"paths.output_dir={tmp_path}", "device=cpu", "plots=false"]
    args += ["max_files=1", "data.source.num_clips=2", "data.source.duration=1", "window_seconds=0.5"]
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.evaluate"):
        run(compose_evaluate(*args))
    (line,) = [r.getMessage() for r in caplog.records if "is evaluated on synthetic clips" in r.getMessage()]
    assert line.startswith("ttt_linear was trained on files (its run: data=av_folder data.root=/m)")
    with pytest.raises(ConfigError, match="^split=test means the files ttt_linear's run held out"):
        run(compose_evaluate(*args, "split=test"))


def test_a_damaged_run_record_says_what_it_still_can_and_never_crashes(tmp_path):
    """A record that was no YAML at all raised the parser's own error out of evaluate (only OSError,
    ValueError and TypeError were caught), and one whose values read what is not set now must not."""
    ckpt = _run_folder(tmp_path / "a", "ttt_mm.data.sources.FolderSource", "audio_folder", "/m")
    (ckpt.parents[1] / ".hydra" / "hydra.yaml").write_text("choices: [unclosed\n")
    assert trained_on_files(str(ckpt)) == {"data.root": "/m"}  # (its group was in the damaged file)
    (ckpt.parents[1] / ".hydra" / "config.yaml").write_text("data: {source: [\n")
    assert trained_on_files(str(ckpt)) is None
    reads = _run_folder(tmp_path / "b", "ttt_mm.data.sources.FolderSource", "audio_folder", "${oc.env:TTT_MM_UNSET}")
    (reads.parents[1] / ".hydra" / "hydra.yaml").write_text(
        "hydra: {runtime: {cwd: '${paths.work}', choices: {data: audio_folder}}}\n"
    )
    assert trained_on_files(str(reads)) == {"data": "audio_folder"}  # (values that read what is not here now)


def test_the_frame_strip_starts_from_the_last_frame_seen(tmp_path, monkeypatch):
    """Steps of two frames: the "last seen" picture was the first frame of the last step seen, one frame
    earlier than its label and than the copy baseline's."""
    shown = []
    monkeypatch.setattr(
        plots, "_image", lambda f: shown.append(int(np.asarray(f).max())) or np.zeros((4, 4, 3), np.uint8)
    )

    def step(*values):
        return {"video": torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in values])}

    steps = [step(30, 40), step(50, 60)]
    plot = {"truth": steps, "rollout": steps, "onestep": steps, "last": step(10, 20), "origin_seconds": 1.0}
    plots.frame_strip({"m": plot}, tmp_path / "strip.png", "clip")
    assert shown == [20, 30, 50, 30, 50, 30, 50] and (tmp_path / "strip.png").stat().st_size > 0


def test_the_spectrograms_colour_scale_holds_every_panel(tmp_path, monkeypatch):
    """Taken from the truth alone, a near-silent truth (a track fading out) saturated every model's
    louder prediction into stripes."""
    from matplotlib.axes import Axes

    scales = []
    monkeypatch.setattr(Axes, "imshow", lambda self, x, **kw: scales.append((kw["vmin"], kw["vmax"])))
    quiet, loud = ({"audio": np.full((4, 8), v, np.float32)} for v in (-20.0, 3.0))
    plot = {"truth": [quiet] * 2, "rollout": [loud] * 2, "onestep": [quiet] * 2, "last": quiet, "origin_seconds": 1.0}
    plots.spectrograms({"m": plot}, tmp_path / "s.png", "clip")
    assert scales == [(-20.0, 3.0)] * 3


def test_a_clip_named_in_a_script_the_font_lacks_draws_its_figure_without_a_warning_a_glyph(tmp_path):
    """A file called "地球.mp4" printed matplotlib's "Glyph 22320 ... missing from font(s)" four times, each
    with its source line, in the middle of the evaluation's log."""
    frames = {"video": torch.zeros(2, 3, 4, 4, dtype=torch.uint8)}
    plot = {"truth": [frames], "rollout": [frames], "onestep": [frames], "last": frames, "origin_seconds": 1.0}
    result = SimpleNamespace(plot=plot)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = plots.clip_figures({"m": result}, 1, "地球 ünï.mp4", tmp_path, {"video"})
    assert made == {"video": str(tmp_path / "rollout_1.png")} and (tmp_path / "rollout_1.png").stat().st_size > 0
