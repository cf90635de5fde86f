"""End to end: every config composes and builds; fast_dev_run for each data x model; learning;
resume after SIGKILL; DDP on CPU."""

from __future__ import annotations

import csv
import logging
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ttt_mm.backbone import state_tensors
from ttt_mm.callbacks import ProgressBar
from ttt_mm.data import ClipInfo
from ttt_mm.data.clip_record import clip_record
from ttt_mm.data.skiplist import SkipList
from ttt_mm.data.synthetic import SyntheticClip
from ttt_mm.layers import LaCTLayer
from ttt_mm.module import SequenceModel
from ttt_mm.storage.atomic import write_csv
from ttt_mm.tasks import command_keys, train_checks
from ttt_mm.tasks import train as train_task
from ttt_mm.tasks.common import ConfigError, Interrupted
from ttt_mm.tasks.job_logs import quiet_lightning
from ttt_mm.tasks.train import build, report, run
from ttt_mm.tasks.train_checks import check_carried_windows, check_window_length, run_length
from ttt_mm.tokenizers.base import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DATA = ["synthetic", "audio_folder", "video_folder", "av_folder", "class_folders", "manifest", "librispeech"]
MODELS = ["ttt_linear", "ttt_mlp", "attention", "lact"]
# LaCT's default chunk is 8 s of the default data: in the 1 s windows below it would never complete
SHORT_CHUNKS = ["model.backbone.mixer.chunk_size=8", "model.backbone.mixer.window=8"]
TINY = ["debug=default", "data.clip_seconds=1.0", "data.batch_size=2", "data.eval_window_seconds=1.0"]


def data_overrides(name: str, media_tree) -> list[str]:
    root = {
        "audio_folder": media_tree["videos"],
        "video_folder": media_tree["videos"],
        "av_folder": media_tree["videos"],
        "class_folders": media_tree["videos"],
        "manifest": media_tree["manifest"],
        "librispeech": media_tree["librispeech"],
    }.get(name)
    return (
        [f"data={name}"]
        + ([f"data.root={root}"] if root else [])
        + (["data.source.num_clips=24"] if name == "synthetic" else [])
    )


def compose_train(tmp_path: Path, overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem != "default")


LAYOUTS = {"LibriSpeechSource": "librispeech", "ManifestSource": "manifest"}  # the others read folders of videos


def data_layout(experiment: str, tmp_path: Path) -> str | None:
    """Which of the media tree's layouts an experiment's data config reads, from its composed source
    (None: the synthetic clips, which read no files)."""
    source = compose_train(tmp_path, [f"experiment={experiment}"]).data.source._target_.rsplit(".", 1)[-1]
    return None if source == "SyntheticSource" else LAYOUTS.get(source, "videos")


@pytest.mark.parametrize("mixer", [None, "lact"], ids=["as_pinned", "lact"])
@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_builds(experiment, mixer, tmp_path, media_tree):
    cfg = compose_train(
        tmp_path,
        [
            f"experiment={experiment}",
            *([f"model={mixer}"] if mixer else []),
            "trainer=cpu",
            "debug=default",  # shrinks every experiment, its streamed windows included
            *([f"data.root={media_tree[layout]}"] if (layout := data_layout(experiment, tmp_path)) else []),
        ],
    )
    datamodule, model, trainer = build(cfg)
    check_carried_windows(datamodule, model)
    assert isinstance(model, SequenceModel) and model.tokenizer.dim == model.backbone.dim
    if mixer == "lact":
        assert all(isinstance(block.mixer, LaCTLayer) for block in model.backbone.blocks)
        assert model.hparams.carry_state == cfg.data.stream  # a bounded state is carried whenever data streams
    datamodule.setup("fit")
    assert datamodule.splits["train"]


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks", "size", "debug", "tokenizer", "model"])
def test_every_group_option_composes_and_instantiates(group, tmp_path):
    for option in options(group) + (
        ["default"] if group != "model" and (CONF / group / "default.yaml").exists() else []
    ):
        cfg = compose_train(tmp_path, [f"{group}={option}"])
        if group == "trainer" and cfg.trainer.accelerator == "gpu":
            cfg.trainer.accelerator, cfg.trainer.precision = "cpu", "32-true"  # no GPU here: build the rest
            if option == "fsdp":
                continue  # Lightning refuses FSDP without CUDA: see the test below
        _, model, trainer = build(cfg)
        expected = 1 if cfg.trainer.get("fast_dev_run") else cfg.trainer.get("max_steps", -1)
        assert isinstance(model, SequenceModel) and trainer.max_steps == expected


def test_callbacks_none_saves_no_checkpoints(tmp_path):
    """``callbacks=none`` means no checkpoints: not even Lightning's own default one, which would be saved
    under a name that resuming does not look for; the default callbacks keep exactly ours."""
    from ttt_mm.callbacks import BestCheckpoint, LastCheckpoint

    _, _, trainer = build(compose_train(tmp_path, ["callbacks=none"]))
    assert trainer.checkpoint_callbacks == []
    _, _, trainer = build(compose_train(tmp_path, []))
    kinds = sorted(type(c).__name__ for c in trainer.checkpoint_callbacks)
    assert kinds == sorted([BestCheckpoint.__name__, LastCheckpoint.__name__])


def test_the_fsdp_config_builds_on_cpu_with_gloo_up_to_the_trainer(tmp_path):
    """The FSDP strategy and its wrap policy are built from ``trainer=fsdp`` on the CPU with the gloo
    backend, and the policy wraps exactly the backbone's blocks. The Trainer itself cannot be built
    here: Lightning refuses FSDPStrategy with a CPU accelerator, and torch's FSDP (which Lightning
    uses) needs an accelerator device to wrap a model, so a run needs GPUs."""
    from lightning.pytorch.strategies import FSDPStrategy

    from ttt_mm.backbone import Block

    cfg = compose_train(
        tmp_path, ["trainer=fsdp", "trainer.accelerator=cpu", "+trainer.strategy.process_group_backend=gloo"]
    )
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy) and strategy._process_group_backend == "gloo"
    policy = strategy.kwargs["auto_wrap_policy"]
    _, model, _ = build(compose_train(tmp_path, ["trainer=cpu"]))
    wrapped = [m for m in model.modules() if policy(m, recurse=False)]
    assert len(wrapped) == model.backbone.depth and all(isinstance(m, Block) for m in wrapped)
    with pytest.raises(InstantiationException, match="requires a GPU accelerator"):
        build(cfg)


def test_default_run_carries_state_over_streamed_windows_and_attention_starts_fresh(tmp_path):
    ttt = compose_train(tmp_path, [])
    assert ttt.data.stream and ttt.model.carry_state and ttt.model.tokenizer.target_pool == 4
    _, model, _ = build(ttt)
    assert model.hparams.carry_state is True  # the checkpoint records the resolved value
    tokens = ttt.data.clip_seconds / model.tokenizer.seconds_per_step * model.tokenizer.tokens_per_step
    assert tokens % ttt.model.backbone.mixer.mini_batch_size == 0  # rows can restart between windows
    attention = compose_train(tmp_path, ["experiment=attention_baseline"])
    assert attention.data.stream and not attention.model.carry_state  # same windows, no state
    assert not build(attention)[1].backbone.bounded_state
    assert not compose_train(tmp_path, ["data=video_folder", "data.root=/x"]).model.carry_state
    av = compose_train(tmp_path, ["experiment=synthetic_av"])  # the same clips read with sound
    assert list(av.data.modalities) == ["audio", "video"] and av.model.tokenizer.video.target_pool == 4
    assert av.data.clip_seconds * build(av)[1].tokenizer.tokens_per_second % 16 == 0


@pytest.mark.parametrize("model", [MODELS[0], *(pytest.param(m, marks=pytest.mark.slow) for m in MODELS[1:])])
@pytest.mark.parametrize("data", DATA)
def test_fast_dev_run(data, model, tmp_path, media_tree):
    extra = SHORT_CHUNKS if model == "lact" else []
    cfg = compose_train(
        tmp_path, [*TINY, "debug=fast_dev_run", f"model={model}", *extra, *data_overrides(data, media_tree)]
    )
    metrics = run(cfg)["metrics"]
    # one training step on real tokens and one validation batch, both scored
    assert metrics["train/tokens_per_s"] > 0 and 0 < metrics["val/loss_copy"] < float("inf")
    assert torch.isfinite(torch.tensor([metrics["train/loss"], metrics["val/loss"]])).all()


def test_test_true_without_a_test_clip_is_a_config_error_before_training(tmp_path, media_tree):
    """It said, after the whole training, that the test files failed or were silent. A manifest that
    splits its rows itself is told so (the fraction is not used there)."""
    cfg = compose_train(tmp_path, [*TINY, "test=true", "data.test_fraction=0"])
    with pytest.raises(
        ConfigError, match=r"test=true, but no clip of the \d+ falls in the test split \(data.test_fr"
    ) as err:
        run(cfg)
    assert "raise it, name the test files in a manifest's split column, or leave out test=true" in str(err.value)
    assert not list(tmp_path.rglob("*.ckpt"))
    manifest = tmp_path / "split.csv"
    rows = [
        f"{media_tree['videos']}/{c}/{n},{s}\n" for c, n, s in [("bounce", "a.mp4", "train"), ("still", "c.mp4", "val")]
    ]
    manifest.write_text("path,split\n" + "".join(rows))
    cfg = compose_train(tmp_path / "m", [*TINY, *data_overrides("manifest", media_tree), f"data.root={manifest}"])
    with pytest.raises(ConfigError, match=r"test split \(the manifest's split column names no test row"):
        run(OmegaConf.merge(cfg, {"test": True}))


@pytest.mark.slow
def test_test_split_is_scored_with_the_best_checkpoint(tmp_path):
    """Not last.ckpt or the weights in memory: ranked by step, the best is the first of two
    validations, two steps before the end of the fit."""
    data = [*TINY, "data.source.num_clips=12", "data.test_fraction=0.25", "data.val_fraction=0.25"]
    cfg = compose_train(
        tmp_path / "fit",
        [*data, "test=true", "trainer.max_steps=4", "trainer.val_check_interval=2"]
        + ["callbacks.last_checkpoint.every_n_train_steps=1", "callbacks.model_checkpoint.monitor=step"]
        + ["callbacks.model_checkpoint.mode=min"],
    )
    out = run(cfg)
    assert Path(out["best_ckpt"]).name == "step000002.ckpt" and Path(out["last_ckpt"]).is_file()
    assert out["best_score"] == {"step": 2.0}  # what made it the best, for the summary and a sweep's table
    saved = torch.load(out["last_ckpt"], weights_only=True)  # the split, for evaluate's split=val or test
    assert saved["MediaDataModule"]["split"] == {"val_fraction": 0.25, "test_fraction": 0.25}
    metrics = out["metrics"]
    assert metrics["test/loss_ratio_copy"] == pytest.approx(metrics["test/loss"] / metrics["test/loss_copy"])
    scored = {}
    for name in ("best_ckpt", "last_ckpt"):
        only = [*data, "train=false", "test=true", f"ckpt_path={out[name]}"]
        scored[name] = run(compose_train(tmp_path / name, only))["metrics"]["test/loss"]
    assert metrics["test/loss"] == pytest.approx(scored["best_ckpt"], rel=1e-6)
    assert metrics["test/loss"] != pytest.approx(scored["last_ckpt"], rel=1e-6)


def test_a_run_removes_the_unfinished_checkpoints_a_killed_run_left_in_its_folder(tmp_path, caplog):
    """A kill while a checkpoint was written left its temporary file (as large as a checkpoint) for good:
    only embed swept its folder. One untouched for an hour is a killed run's; a fresh one may be a live
    writer's (another container sharing the folder) and stays."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale, fresh = folder / ".last.ckpt.ttt-mm-123-0a1b2c3d.tmp", folder / ".step000010.ckpt.ttt-mm-9-0a1b2c3e.tmp"
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    with caplog.at_level(logging.INFO, logger="ttt_mm.tasks.train"):
        run(compose_train(tmp_path, [*TINY, "trainer.max_steps=1"]))
    assert not stale.exists() and fresh.exists()
    assert f"removed 1 unfinished checkpoint file(s) that a run killed while saving left in {folder}" in caplog.text


def test_a_fresh_run_into_a_folder_with_checkpoints_says_it_writes_over_them(tmp_path, caplog):
    """A sweep's job run again from its start into its folder (a stopped one's rerun command) replaced
    last.ckpt and its results row without a word, its ranking beside the earlier run's best files."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("last.ckpt", "step000001.ckpt", "step000200.ckpt"):
        (folder / name).write_bytes(b"an earlier run's")
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.train"):
        out = run(compose_train(tmp_path, [*TINY, "trainer.max_steps=1", "trainer.val_check_interval=1"]))
    said = (
        f"{folder} holds checkpoints of an earlier run (last.ckpt, step000001.ckpt, step000200.ckpt): this run starts"
    )
    assert said in caplog.text and f"ckpt_path={folder / 'last.ckpt'}" in caplog.text
    assert "others stay, outside its ranking of the best" in caplog.text
    # its best replaced the earlier run's of that name (it was saved beside it as step000001-v1.ckpt)
    assert out["best_ckpt"] == str(folder / "step000001.ckpt") and not list(folder.glob("*-v1.ckpt"))
    assert (folder / "step000001.ckpt").read_bytes() != b"an earlier run's"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.train"):
        run(compose_train(tmp_path / "new", [*TINY, "trainer.max_steps=1"]))
    assert "holds checkpoints of an earlier run" not in caplog.text


def test_with_val_fraction_0_validation_is_off_and_the_summary_says_so(tmp_path, caplog, capsys):
    """It ran validation on no file at every interval, and said its files had failed."""
    steps = ["data.val_fraction=0", "trainer.max_steps=2", "trainer.val_check_interval=1"]
    with caplog.at_level(logging.WARNING):
        out = run(compose_train(tmp_path, [*TINY, *steps]))
    assert out["validation_off"] and out["best_ckpt"] is None and not out["unscored"]
    assert "no token was scored" not in caplog.text and not any(k.startswith("val/") for k in out["metrics"])
    report(out)
    said = capsys.readouterr().out
    assert "best checkpoint: none (validation is off: data.val_fraction=0)" in said and "tested:" not in said
    report(out | {"metrics": {**out["metrics"], "test/loss": 1.0}})  # (test=true: no best checkpoint to test)
    assert "\ntested:          the weights training ended with\n" in capsys.readouterr().out
    report(out | {"metrics": {**out["metrics"], "test/loss": 1.0}, "tested_ckpt": "/run/best.ckpt"})
    assert "\ntested:          /run/best.ckpt\n" in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_shorter_than_the_logging_interval_logs_its_metrics_at_its_end(tmp_path):
    """trainer.max_steps=2 with log_every_n_steps=10 logged no step: the CSV held only the hyperparameters,
    and the progress bar never showed the throughput."""
    steps = ["data.val_fraction=0", "trainer.max_steps=2"]
    run(compose_train(tmp_path / "short", [*TINY, *steps, "trainer.log_every_n_steps=10"]))
    logged = [r for r in read_metrics(tmp_path / "short") if r.get("train/tokens_per_s")]
    assert [int(r["step"]) for r in logged] == [1]  # (Lightning's step of the second optimizer step)
    run(compose_train(tmp_path / "off", [*TINY, *steps, "trainer.log_every_n_steps=0"]))  # (off stays off)
    assert not [r for r in read_metrics(tmp_path / "off") if r.get("train/loss")]
    epochs = ["data.val_fraction=0", "trainer.max_steps=-1", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    run(compose_train(tmp_path / "epochs", [*TINY, *epochs, "trainer.log_every_n_steps=10"]))  # (ended by epochs)
    logged = [r for r in read_metrics(tmp_path / "epochs") if r.get("train/tokens_per_s")]
    assert [int(r["step"]) for r in logged] == [1]


def test_the_last_steps_loss_is_logged_where_the_run_ends_between_logging_steps(tmp_path):
    """max_steps=5 with log_every_n_steps=2 wrote the loss of steps 2 and 4 only: the curve ended early (it is one
    epoch of the default data)."""
    steps = ["data.val_fraction=0", "trainer.max_steps=5", "trainer.log_every_n_steps=2"]
    run(compose_train(tmp_path, [*TINY, *steps]))
    logged = [r for r in read_metrics(tmp_path) if r.get("train/loss")]
    assert [int(r["step"]) for r in logged] == [1, 3, 4] and all(r.get("train/loss_ratio_copy") for r in logged)
    assert {r["epoch"] for r in logged} == {
        "0"
    }  # (the last row said 1: Lightning had moved on when max_steps ended it)


@pytest.mark.parametrize(
    ("settings", "steps"),
    [
        ({"max_steps": 7}, 7),
        ({"max_steps": -1, "max_epochs": 2, "limit_train_batches": 3}, 6),
        ({"max_steps": 4, "max_epochs": 2, "limit_train_batches": 3}, 4),  # (whichever ends it first)
        ({"max_steps": 100, "max_epochs": 2, "limit_train_batches": 3}, 6),
        ({"max_steps": -1, "max_epochs": 2, "limit_train_batches": 5, "accumulate_grad_batches": 2}, 6),
        ({"max_steps": -1, "max_epochs": 2, "limit_train_batches": 1.0}, -1),  # (a fraction of an endless epoch)
        ({"max_steps": -1, "max_epochs": -1}, -1),
    ],
)
def test_a_runs_length_in_optimizer_steps_is_what_ends_it_first(settings, steps):
    assert run_length(OmegaConf.create(settings)) == steps


def read_metrics(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("**/metrics.csv")):
        rows += list(csv.DictReader(path.open()))
    return rows


@pytest.mark.slow
def test_loss_goes_down_on_synthetic_data(tmp_path):
    cfg = compose_train(
        tmp_path,
        [
            *TINY,
            "data.source.num_clips=24",
            "data.val_fraction=0.25",
            "trainer.max_steps=60",
            "trainer.val_check_interval=30",
            "model.warmup_steps=5",
        ],
    )
    out = run(cfg)
    losses = [float(r["train/loss"]) for r in read_metrics(tmp_path) if r.get("train/loss")]
    assert len(losses) >= 50
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:5]) / 5
    assert out["metrics"]["val/loss_ratio_copy"] < 1.0  # beats copying the last step
    model = SequenceModel.load_from_checkpoint(out["last_ckpt"])  # no other argument needed
    # the best checkpoint holds the weights of the validation with the lowest loss (at steps 30 and 60;
    # last.ckpt is also written at step 50, between them, and must not be ranked with step 30's loss)
    vals = [float(r["val/loss"]) for r in read_metrics(tmp_path) if r.get("val/loss")]
    assert len(vals) == 2 and Path(out["best_ckpt"]).name == f"step{(30, 60)[vals[1] < vals[0]]:06d}.ckpt"
    # and last.ckpt, saved after the last validation, names that best checkpoint to a resumed run
    states = torch.load(out["last_ckpt"], map_location="cpu", weights_only=False)["callbacks"]
    (best,) = [v["best_model_path"] for k, v in states.items() if k.startswith("ModelCheckpoint")]
    assert best == out["best_ckpt"] and Path(best).is_file()
    assert model.backbone.depth == cfg.model.backbone.depth


def train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        *TINY,
        "data.source.num_clips=24",
        f"hydra.run.dir={run_dir}",
        "callbacks.last_checkpoint.every_n_train_steps=5",
        "callbacks.progress_bar.refresh_rate=0",
        *extra,
    ]


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_run(tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        train_cmd(run_dir, "trainer.max_steps=400", "trainer.val_check_interval=50"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline, killed_at = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            try:
                step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
            except Exception:  # being written: the next poll sees it whole
                step = 0
            if step >= 5:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                killed_at = step
                break
        time.sleep(0.2)
    assert killed_at is not None, (
        proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "no checkpoint in time"
    )
    target = killed_at + 20
    done = subprocess.run(
        train_cmd(run_dir, f"trainer.max_steps={target}", "trainer.val_check_interval=10", f"ckpt_path={last}"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(run_dir) in done.stdout  # the resumed run reports the same directory
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == target
    versions = sorted((run_dir / "csv").iterdir())
    assert len(versions) == 2  # the killed run's log and the resumed run's
    resumed = [int(r["step"]) for r in read_metrics(versions[1]) if r.get("train/loss")]
    assert resumed and min(resumed) >= killed_at and max(resumed) <= target  # the curve continues where it stopped
    assert any(r.get("train/tokens_per_s") for r in read_metrics(versions[1]))  # throughput is logged after a resume
    assert ckpt["optimizer_states"][0]["state"]  # optimizer moments restored and carried on
    assert "trainer.max_steps=400" in (run_dir / ".hydra" / "overrides.yaml").read_text()  # how it was trained
    (resumed,) = (run_dir / ".hydra").glob("resumed-*")  # the resume's own record beside it
    assert f"trainer.max_steps={target}" in (resumed / "overrides.yaml").read_text()
    refused = subprocess.run(  # nothing left to train: refused, and no record of a resume that never ran
        train_cmd(run_dir, f"trainer.max_steps={target}", f"ckpt_path={last}"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "nothing is left to train" in refused.stderr
    assert list((run_dir / ".hydra").glob("resumed-*")) == [resumed]
    misread = subprocess.run(  # a value reading a key that is not there: refused the same way
        train_cmd(run_dir, f"trainer.max_steps={target + 10}", f"ckpt_path={last}", "seed=${nope}"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert misread.returncode == 2 and "names no key" in misread.stderr, misread.stderr[-3000:]
    assert list((run_dir / ".hydra").glob("resumed-*")) == [resumed]


def _weights(ckpt: str) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("mixer", ["ttt_linear", "lact"])
def test_a_streamed_run_stopped_and_resumed_trains_the_weights_of_one_that_was_not(tmp_path, mixer, caplog):
    """The carried state is in the checkpoint: a run resumed at step 4 goes on with every row's
    context and ends where an uninterrupted run does, bit for bit. From a checkpoint without it
    (an earlier version's) every row starts afresh, and the weights differ: the state matters."""
    common = [
        *TINY,
        f"model={mixer}",
        *(SHORT_CHUNKS if mixer == "lact" else []),
        "data.source.num_clips=24",
        "trainer.val_check_interval=4",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        "model.warmup_steps=0",  # a constant learning rate: the same whatever max_steps the schedule spans
        "model.min_lr_ratio=1.0",
    ]
    whole = run(compose_train(tmp_path / "whole", [*common, "trainer.max_steps=8"]))
    first = run(compose_train(tmp_path / "parts", [*common, "trainer.max_steps=4"]))
    ckpt = torch.load(first["last_ckpt"], map_location="cpu", weights_only=False)
    ((rows, leaves),) = [(p["rows"], p["leaves"]) for p in ckpt["carried_state"]]  # one process: one part
    assert len(rows) == 2 and any(isinstance(leaf, torch.Tensor) for leaf in leaves)
    kept = tmp_path / "kept.ckpt"  # (elsewhere than the run's folder: resumed in a run of its own)
    torch.save(ckpt, kept)
    del ckpt["carried_state"]
    torch.save(ckpt, tmp_path / "earlier.ckpt")
    with caplog.at_level(logging.INFO, logger="ttt_mm"):
        resumed = run(
            compose_train(tmp_path / "parts", [*common, "trainer.max_steps=8", f"ckpt_path={first['last_ckpt']}"])
        )
    assert "resuming at step 4 with the checkpoint's carried state" in caplog.text
    assert "the first batch after the resume goes on from the checkpoint's carried state in 2 of 2 rows" in caplog.text
    a, b = _weights(whole["last_ckpt"]), _weights(resumed["last_ckpt"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ttt_mm.module"):
        afresh = run(
            compose_train(
                tmp_path / "afresh", [*common, "trainer.max_steps=8", f"ckpt_path={tmp_path / 'earlier.ckpt'}"]
            )
        )
    assert "does not hold the carried state" in caplog.text
    c = _weights(afresh["last_ckpt"])
    assert not all(torch.equal(a[k], c[k]) for k in a)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ttt_mm"):  # the restore said it went on, then the batch it did not
        run(compose_train(tmp_path / "one", [*common, "trainer.max_steps=5", "data.batch_size=1", f"ckpt_path={kept}"]))
    assert "the checkpoint's carried state is for batches of 2 rows, this run's are of 1, so every row" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("val", ["hashed", "one_file"])
def test_ddp_on_two_cpu_processes(tmp_path, val):
    """``one_file``: validation holds one file, so one rank has no batches (as when its files are
    unreadable); it must still finish the validation with the other, not wait on it."""
    run_dir = tmp_path / "ddp"
    # no file hashes into a val_fraction this small: the data module moves exactly one there
    one_file = ["data.val_fraction=0.001", "data.test_fraction=0.0"] if val == "one_file" else []
    done = subprocess.run(
        train_cmd(
            run_dir,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            *one_file,
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    assert "val/loss: " in done.stdout  # validated (twice), every rank taking part
    parts = ckpt["carried_state"]  # each process's own rows, gathered into the one file
    assert len(parts) == 2 and all(len(p["rows"]) == 2 for p in parts) and parts[0]["rows"] != parts[1]["rows"]
    resumed = subprocess.run(
        [*done.args, "trainer.max_steps=6", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step 4 with the checkpoint's carried state" in (run_dir / "train.log").read_text()


SIGTERM_AT = """
import os, signal
from lightning.pytorch.callbacks import Callback

class SigtermAt(Callback):
    def __init__(self, rank: int, step: int, hook: str):
        self.rank, self.step, self.hook = rank, step, hook

    def _at(self, trainer, hook):
        if (trainer.global_rank, trainer.global_step, hook) == (self.rank, self.step, self.hook):
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer, *args):
        self._at(trainer, "train")

    def on_validation_batch_end(self, trainer, *args):
        self._at(trainer, "validation")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("hook", "rank", "step", "stopped"),
    [("train", 1, 3, 4), ("validation", 0, 2, 2)],  # (the validation after step 2: stopped at its end)
)
def test_sigterm_in_one_process_of_a_ddp_run_stops_all_after_the_same_step(tmp_path, hook, rank, step, stopped):
    """Lightning's handler ran a collective inside the signal handler: a SIGTERM that reached one process
    (or one process twice: from the scheduler and from the first process) left every process waiting
    forever in a collective the others never joined (3 of 4 ``timeout`` stops of such a run)."""
    (tmp_path / "sigterm_at.py").write_text(SIGTERM_AT)
    cmd = train_cmd(tmp_path / "run", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    cmd += ["trainer.precision=32-true", "trainer.max_steps=400", "trainer.val_check_interval=2"]
    cmd += ["+callbacks.sigterm._target_=sigterm_at.SigtermAt", f"+callbacks.sigterm.hook={hook}"]
    cmd += [f"+callbacks.sigterm.rank={rank}", f"+callbacks.sigterm.step={step}"]  # (one process only)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]
    assert f"terminated (SIGTERM) at step {stopped}:" in err  # (both stopped after the step that agreed)
    assert not _processes(group=proc.pid)


def _processes(parent: int | None = None, group: int | None = None, env: str = "") -> list[int]:
    """Live processes (not zombies) with this parent, or in this process group, whose environment holds
    ``env`` (``NAME=value``; from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid, pgid = stat.read_text().rsplit(")", 1)[1].split()[:3]
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except OSError:  # (ended while read)
            continue
        if state != "Z" and (int(ppid) == parent or int(pgid) == group) and (not env or env.encode() in environ):
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_ctrl_c_while_ddps_other_process_starts_ends_the_run_cleanly(tmp_path):
    """A terminal's Ctrl-C reaches every process. The second one, still importing, printed a long
    traceback, and the first, waiting for it to join, was killed by Lightning's watchdog (-9, no line)."""
    proc = subprocess.Popen(
        train_cmd(tmp_path / "run", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
        + ["trainer.precision=32-true", "trainer.max_steps=400"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # (its own process group, as a terminal's foreground job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # (not ignored, as in a background job)
    )
    try:
        deadline = time.monotonic() + 120
        # the second process, which Lightning starts with LOCAL_RANK=1 (not a helper such as multiprocessing's
        # forkserver, whose command line also names train.py: a signal then hit the first process mid-import)
        while not _processes(proc.pid, env="LOCAL_RANK=1") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.5)  # the second process is importing
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted at step 0: no checkpoint was saved" in err and "Traceback" not in err
    deadline = time.monotonic() + 10  # no process of the run is left (the others are stopped with SIGKILL)
    while _processes(group=proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes(group=proc.pid)


@pytest.mark.slow
def test_bad_config_values_end_in_one_clear_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "debug=default",
            "model.backbone.mixer=mamba9",  # a name where the mixer factory belongs
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unknown mixer 'mamba9'" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / ".hydra" / "config.yaml").is_file()  # a folder given is the user's: it stays


@pytest.mark.slow
def test_a_refused_run_leaves_no_run_folder(tmp_path):
    """The stamped folder Hydra made for a run that a check refused goes: it would pass for a run."""
    env = {k: v for k, v in os.environ.items() if k != "TTT_MM_ROOT"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "debug=default", "test=true", "data.test_fraction=0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "no clip of the" in done.stderr
    assert (tmp_path / "logs" / "train" / "runs").is_dir() and not any((tmp_path / "logs" / "train" / "runs").iterdir())


@pytest.mark.slow
def test_a_config_error_in_a_sweep_fails_its_job_and_the_sweep_goes_on(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "data.batch_size=0,2,-1",
            *TINY[:2],
            "data.source.num_clips=8",
            "trainer.max_steps=1",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1  # Hydra's status for a sweep with a failed job
    assert "error: data.batch_size must be a whole number >= 1; got 0" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("got 0") == 2 and "HYDRA_FULL_ERROR" not in done.stderr  # in its job, and in the list
    # the finished job's results, in a table and in the sweep's folder
    assert f"sweep results (also in {tmp_path / 'results.csv'}):" in done.stdout.splitlines()
    with open(tmp_path / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["job"] == "1" and row["run_dir"] == str(tmp_path / "1") and "data.batch_size=2" in row["overrides"]
    assert float(row["train tokens/s"]) > 0 and float(row["fit minutes"]) > 0  # (what each run cost, to compare)
    assert (tmp_path / "1" / "checkpoints" / "last.ckpt").is_file()  # the next job ran
    # each job's log file holds its own end, and Lightning's lines, which do not reach the root logger
    assert "error: data.batch_size must be a whole number >= 1" in (tmp_path / "0" / "train.log").read_text()
    second = (tmp_path / "1" / "train.log").read_text()
    assert "run directory:   " + str(tmp_path / "1") in second and "`Trainer.fit` stopped" in second
    assert "Trainer.fit" not in (tmp_path / "0" / "train.log").read_text()
    # Hydra raises only the first failure at the end: the sweep's own report lists every failed job
    assert done.stderr.rstrip().splitlines()[-3:] == [
        "sweep: 2 job(s) of 3 ended in an error:",
        f"  #0 data.batch_size=0 {' '.join(TINY[:2])} data.source.num_clips=8 trainer.max_steps=1: "
        "data.batch_size must be a whole number >= 1; got 0",
        f"  #2 data.batch_size=-1 {' '.join(TINY[:2])} data.source.num_clips=8 trainer.max_steps=1: "
        "data.batch_size must be a whole number >= 1; got -1",
    ]


@pytest.mark.slow
def test_a_sweeps_job_stopped_by_ctrl_c_resumes_into_its_folder_and_joins_the_sweeps_results(tmp_path):
    """The resume command a stopped job printed ran outside the sweep: its results never joined results.csv.
    Run as a sweep of one into the job's folder, it overwrote the job's record of how it was trained."""
    sweep, steps = tmp_path / "sweep", "trainer.max_steps=400"
    extra = [
        "data.source.num_clips=24",
        "callbacks.last_checkpoint.every_n_train_steps=5",
        "trainer.val_check_interval=5",
    ]
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "seed=0,1",
        *TINY,
        *extra,
        steps,
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last, deadline = sweep / "0" / "checkpoints" / "last.ckpt", time.time() + 240
    while time.time() < deadline and proc.poll() is None and not last.exists():
        time.sleep(0.5)
    assert last.exists(), proc.stderr.read()[-3000:] if proc.poll() is not None else "no checkpoint in time"
    time.sleep(1.0)  # (the checkpoint written whole)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    (said,) = [line for line in err.splitlines() if "resume with " in line]
    resume = shlex.split(said.split("resume with ", 1)[1].split(" (saved at", 1)[0])
    assert resume[:3] == ["python", str(ROOT / "train.py"), "-m"] and f"hydra.sweep.dir={sweep}" in resume
    trained = (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    resume = [sys.executable, *resume[1:]]
    resume[resume.index(steps)] = f"trainer.max_steps={step + 2}"
    done = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(sweep / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["job"], row["run_dir"]) == ("0", str(sweep / "0")) and "seed=0" in row["overrides"]
    assert (sweep / "0" / ".hydra" / "overrides.yaml").read_text() == trained  # how the job was trained, kept
    (record,) = (sweep / "0" / ".hydra").glob("resumed-*")
    assert f"ckpt_path={last}" in (record / "overrides.yaml").read_text()
    (whole,) = sweep.glob("multirun-*.yaml")  # the sweep's own record, beside the resume's multirun.yaml
    assert "seed=0,1" in whole.read_text() and "seed=0,1" not in (sweep / "multirun.yaml").read_text()
    said = done.stderr.splitlines()  # the sweep's job still to run, with its command
    at = said.index("sweep: job #1 of 2 still without a result in results.csv: to run it,")
    assert "seed=1" in shlex.split(said[at + 1]) and "hydra.sweep.subdir=1" in said[at + 1]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data=video_folder"], "data.root must be set"),
        (["data=video_folder", "data.root=/no/such/folder"], "dataset root /no/such/folder does not exist"),
        (["data.root=/no/such/folder"], "the synthetic data generates its clips and reads no files"),
        (["data.clip_seconds=0"], "data.clip_seconds must be a positive number of seconds; got 0"),
        (["data.stream=false", "data.clip_seconds=2.1"], "data.clip_seconds=2.1 (also the validation window) is not a"),
        (["data.stream=false", "model.carry_state=true"], "model.carry_state=true needs data.stream=true"),
        (["data.num_workers=-1"], "data.num_workers must be 0 (read in the training process) or more; got -1"),
        (["data.fps=0"], "data.fps must be a positive number; got 0"),
        (["data.eval_batch_size=0"], "data.eval_batch_size must be a whole number >= 1; got 0"),
        (["data.val_fraction=-0.5"], "data.val_fraction must lie in [0, 1]; got -0.5"),
        (["data.probe_timeout=-100"], "data.probe_timeout must be a positive number of seconds; got -100"),
        (["data.min_seconds=-1"], "data.min_seconds must be a number of seconds, 0 or more; got -1"),
        (
            ["model.backbone.mixer.mini_batch_size=0"],
            "error: model.backbone.mixer.mini_batch_size must be positive; got 0\n",
        ),
        (["model.backbone.dim=0"], "error: model.backbone.dim must be positive; got 0\n"),  # (through tokenizer.dim)
        (
            ["tokenizer.patch=7"],
            "error: ValueError: frame size 32 is not a multiple of patch 7 (config key 'tokenizer'; its size from "
            "data.size)",  # (the size the message names is set by data.size)
        ),
        (["model.lr=-1"], "error: model.lr must be a number >= 0; got -1"),
        (["data.skip_list=."], "data.skip_list=. is a folder; it names a file"),
        (["seed=-1"], "seed must be a whole number from 0 to 2**32 - 1; got -1"),
        (
            ["data.eval_window_seconds=1.01"],
            "data.eval_window_seconds=1.01 is not a whole number of 1/fps (8.08 ticks)",
        ),
    ],
)
@pytest.mark.slow
def test_bad_data_and_model_settings_end_in_one_line_without_resume_advice(overrides, message, tmp_path):
    """Also in a run folder that an earlier run left a last.ckpt in: nothing has trained, so nothing
    says to resume (a mistake in the model's settings did)."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert "resume with" not in done.stderr


# Two rows, each walking 8 s clips in two 4 s windows (144 tokens of the default data), four steps.
TWO_WINDOW_STREAMS = [
    "debug=default",
    "data.clip_seconds=4.0",
    "data.batch_size=2",
    "data.source.num_clips=6",
    "data.source.duration=8.0",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "data.eval_window_seconds=4.0",
]


@pytest.mark.slow
def test_long_context_training_carries_state_across_windows(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=long_context", *TWO_WINDOW_STREAMS])
    datamodule, model, trainer = build(cfg)
    datamodule.setup("fit")
    seen, given = [], []
    original = model._carried.before

    def before(place):
        carried = original(place)
        seen.append(place.reset)
        given.append(carried)
        return carried

    model._carried.before = before
    passed = spy_on_training_forward(model)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 4
    assert seen == [(True, True), (False, False), (True, True), (False, False)]
    assert given[1][0] is not None and given[3][0] is not None  # windows that go on from the one before
    assert len(passed) == 4 and all(p[0] is g[0] and p[1] is g[1] for p, g in zip(passed, given))
    assert model._carried.state is not None  # the carried (detached) state of the last window


def spy_on_training_forward(model) -> list[tuple]:
    """The ``(state, restart)`` each training step passes the backbone: what its forward pass goes on from."""
    passed, forward = [], model.backbone.forward

    def spy(x, state=None, restart=None):
        if model.training:
            passed.append((state, restart))
        return forward(x, state, restart)

    model.backbone.forward = spy
    return passed


@pytest.mark.slow
def test_lact_training_carries_its_state_across_windows_detached_and_restarts_rows(tmp_path):
    """model=lact on the streamed default data, with 1 s chunks (16 tokens): four updates per window."""
    chunks = ["model.backbone.mixer.chunk_size=16", "model.backbone.mixer.window=16"]
    cfg = compose_train(tmp_path, [*TWO_WINDOW_STREAMS, "model=lact", *chunks])
    datamodule, model, trainer = build(cfg)
    assert model.hparams.carry_state
    datamodule.setup("fit")
    steps = []  # per training step: reset flags, the state the last window left, the state carried in, rows restarted
    original = model._carried.before

    def spy(place):
        left, (carried, restart) = model._carried.state, original(place)
        steps.append((list(place.reset), left, carried, restart))
        return carried, restart

    step_size_grads = []
    model._carried.before = spy
    passed = spy_on_training_forward(model)
    model.on_after_backward = lambda: step_size_grads.append(model.backbone.blocks[0].mixer.lr_proj.weight.grad.norm())
    trainer.fit(model, datamodule=datamodule)

    assert [reset for reset, *_ in steps] == [[True, True], [False, False], [True, True], [False, False]]
    assert steps[0][2] is None  # a stream starts from the initial state
    for reset, left, carried, restart in steps[1:]:
        assert not any(t.requires_grad for t in state_tensors(left))  # cut from the last step's graph
        assert carried is left and restart.tolist() == reset  # the forward pass starts those rows afresh
    assert len(passed) == 4 and all(p[0] is step[2] and p[1] is step[3] for p, step in zip(passed, steps))
    fresh = model.backbone.initial_state(2).blocks[0].mixer.fast
    fast = steps[1][1].blocks[0].mixer.fast  # after a whole window: four complete chunks
    assert fast.count.tolist() == [0, 0] and not torch.allclose(fast.weights[0], fresh.weights[0].to(fast.weights[0]))
    assert len(step_size_grads) == 4 and all(g > 0 for g in step_size_grads)  # updates inside each window


def test_a_suggested_window_passes_the_check_that_suggests_it():
    """At 30 steps a second, 3601 s suggested 3601.066667 (10 digits), which the same check refused."""
    tok = SimpleNamespace(seconds_per_step=1 / 30, tokens_per_step=1)
    tok.whole_steps = partial(Tokenizer.whole_steps, tok)
    tok.seconds_text = partial(Tokenizer.seconds_text, tok)
    unit = SimpleNamespace(tokens=16, required=True, name="TTT mini-batches", argument="mini_batch_size")
    model = SimpleNamespace(
        hparams=SimpleNamespace(carry_state=True), tokenizer=tok, backbone=SimpleNamespace(restart_unit=unit)
    )

    def check(seconds: float) -> None:
        check_carried_windows(SimpleNamespace(clip_seconds=seconds, stream=True, batch_size=2), model)

    with pytest.raises(ConfigError, match="not a whole number of TTT mini-batches") as caught:
        check(3601)
    check(float(str(caught.value).rpartition("data.clip_seconds=")[2]))  # no error


@pytest.mark.slow
def test_carried_windows_that_cut_a_mini_batch_fail_before_training(tmp_path, caplog):
    """A TTT state can restart single rows only between mini-batches: 1.25 s of the default data is 20
    tokens (16 a mini-batch), which would stop the run at the first file's end; it stops at once
    instead, suggesting 1 s. A LaCT chunk that does not divide the window is only slower: a warning."""
    cfg = compose_train(tmp_path, ["data.clip_seconds=1.25", "trainer.max_steps=1"])
    with pytest.raises(
        ConfigError, match=r"\(20 tokens\) is not a whole number of TTT mini-batches .*data.clip_seconds=1$"
    ):
        run(cfg)
    assert not (tmp_path / "skipped_media.tsv").exists() and not list(tmp_path.glob("checkpoints/*"))
    with pytest.raises(
        ConfigError, match=r"not a whole number of tokenizer steps of 0.25 s; e.g. data.clip_seconds=1$"
    ):
        run(compose_train(tmp_path, ["data.clip_seconds=1.1"]))
    with pytest.raises(ConfigError, match=r"e.g. data.clip_seconds=2$"):  # whole mini-batches too (not 1.5 s)
        run(compose_train(tmp_path, ["data.clip_seconds=1.6"]))
    datamodule, model, _ = build(compose_train(tmp_path, ["data.clip_seconds=1.25", "data.batch_size=1"]))
    check_carried_windows(datamodule, model)  # a lone row that restarts takes a fresh state whole: fine
    lact = ["model=lact", "data.clip_seconds=9", "trainer.max_steps=1", "data.source.num_clips=4"]
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.train_checks"):
        run(compose_train(tmp_path / "lact", lact))
    (line,) = [r.getMessage() for r in caplog.records if "LaCT chunks" in r.getMessage()]
    assert (
        "(144 tokens) is not a whole number of LaCT chunks of 128 tokens" in line
        and "e.g. model.backbone.mixer.chunk_size=72" in line  # (not 144: a chunk must leave later tokens to teach)
    )


@pytest.mark.parametrize("stream", ["true", "false"])
def test_a_lact_chunk_that_fills_the_training_window_is_a_config_error(tmp_path, stream):
    """Its update reaches no later token of the window: the step sizes got no gradient, silently (and
    DDP stopped at its second step on their unused parameters); the warning suggested the window itself.
    The chunk suggested is a quarter of the window, as conf/model/lact.yaml advises (it was a half)."""
    lact = ["model=lact", "data.clip_seconds=4", f"data.stream={stream}", "trainer.max_steps=1"]
    with pytest.raises(
        ConfigError,
        match=r"^data.clip_seconds=4 \(64 tokens\) holds no more than one of the LaCT chunks of 128 tokens and the 4 "
        r"predicted ahead, whose update reaches only the tokens after it: .* e.g. model.backbone.mixer.chunk_size=16 "
        r"or data.clip_seconds=16 \(256 tokens: two LaCT chunks\)$",
    ):
        run(compose_train(tmp_path, lact))
    # the loss reaches the tokens after the chunk only where a target 4 tokens on (one step) is in the window
    datamodule, model, _ = build(compose_train(tmp_path, [*lact[:-1], "model.backbone.mixer.chunk_size=60"]))
    with pytest.raises(ConfigError, match=r"^data.clip_seconds=4 \(64 tokens\) holds no more than one of the LaCT"):
        train_checks.check_updates_learn(datamodule, model)  # (one token after the chunk was said to teach)
    datamodule, model, _ = build(compose_train(tmp_path, [*lact[:-1], "model.backbone.mixer.chunk_size=59"]))
    train_checks.check_updates_learn(datamodule, model)  # the loss reaches one token after the chunk: it learns


def test_training_files_no_longer_than_a_lact_chunk_are_said(tmp_path, caplog):
    """A file shorter than the window is read as a window of its length: with every file within one chunk
    (sound effects under the default chunk's 5 s), training ran without a word and the step sizes never
    learned; with most of them, they learned from the rest alone."""
    lact = ["model=lact", "data.clip_seconds=9", "data.source.duration=6", "data.source.num_clips=8"]
    with pytest.raises(
        ConfigError,
        match=r"^8 of the 8 training files last under 8.5 s, no more than one of the LaCT chunks of 128 tokens and .*"
        r"teach its step sizes nothing; e.g. model.backbone.mixer.chunk_size=24 \(with every file so",
    ):
        run(compose_train(tmp_path, [*lact, "data.val_fraction=0", "data.test_fraction=0"]))
    assert not list(tmp_path.glob("checkpoints/*"))
    datamodule, model, _ = build(compose_train(tmp_path, lact))
    # (8 s: 128 tokens, one chunk; 8.25 s: one step more, the target of the chunk's last token; 8.5 s teaches)
    durations = [4.0, 6.0, 8.0, 8.25, 8.5, 30.0, 30.0]
    datamodule.splits["train"] = [ClipInfo(SyntheticClip(0, i, d)) for i, d in enumerate(durations)]
    caplog.clear()  # (the window is not whole chunks: said apart)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.train_checks"):
        train_checks.check_files_hold_updates(datamodule, model)
    (line,) = caplog.messages
    assert (
        line.startswith("4 of the 7 training files last under 8.5 s")
        and "e.g. model.backbone.mixer.chunk_size=" in line
    )
    caplog.clear()
    datamodule.splits["train"] = datamodule.splits["train"][3:]  # (one of four: said nothing)
    train_checks.check_files_hold_updates(datamodule, model)
    for span in (  # the spans as training reads them: from a start; to a stated end past the file's, the file's
        ClipInfo(SyntheticClip(0, 0, 30.0), start=25.0),
        ClipInfo(SyntheticClip(0, 0, 6.0), end=30.0),
    ):
        datamodule.splits["train"] = [span]
        with pytest.raises(ConfigError, match=r"^1 of the 1 training files last under 8.5 s"):
            train_checks.check_files_hold_updates(datamodule, model)
    assert not caplog.messages


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        (["data.modalities=[audio]"], "tokenizer=audio"),  # the synthetic clips' sound, a video tokenizer
        (["experiment=synthetic_av", "data.modalities=[video]"], "tokenizer=video"),
        (["data.modalities=[video,audio]"], "tokenizer=av"),
    ],
)
def test_data_that_does_not_read_what_the_tokenizer_takes_is_a_config_error(tmp_path, overrides, fix):
    with pytest.raises(ConfigError, match=f"but the tokenizer takes .*: set {fix} ") as caught:
        run(compose_train(tmp_path, [*TINY, *overrides]))
    assert "[" in str(caught.value) and "'" not in str(caught.value)
    fixed = compose_train(tmp_path, [*TINY, *overrides, fix])
    datamodule, model, _ = build(fixed)
    train_checks.check_modalities(datamodule, model)  # the suggested tokenizer fits


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "tokenizer.video.fps=4",
            r"reads video at 4 fps \(its fps\) but the data decodes video at 8.0 fps \(data.fps\): set data.fps=4 ",
        ),
        (
            "tokenizer.video.size=64",
            r"reads frames of 64 px \(its size\) but the data decodes frames of 32 px \(data.size\)",
        ),
        (
            "tokenizer.audio.sample_rate=32000",
            r"reads audio at 32000 Hz .* \(data.sample_rate\): set data.sample_rate=32000 ",
        ),
    ],
)
def test_a_tokenizer_clock_set_apart_from_the_data_is_a_config_error(tmp_path, override, message):
    """(the run failed at its first step, after probing every file, with a traceback)"""
    datamodule, model, _ = build(compose_train(tmp_path, [*TINY, "experiment=synthetic_av", override]))
    with pytest.raises(ConfigError, match=message):
        train_checks.check_media_clock(datamodule, model)
    datamodule, model, _ = build(compose_train(tmp_path, [*TINY, "experiment=synthetic_av"]))
    train_checks.check_media_clock(datamodule, model)  # the shipped configs agree


def test_a_loss_that_stops_being_finite_ends_the_run_in_one_line_naming_the_step(tmp_path):
    """(the run trained on NaN to its end, exit 0, and reported val/loss nan and a best checkpoint)"""
    diverging = [*TINY, "model.lr=1e4", "model.warmup_steps=0", "trainer.max_steps=8"]
    with pytest.raises(
        ConfigError, match=r"^the training loss is not finite at step \d+ .*lower model.lr \(now 10000\)"
    ):
        run(compose_train(tmp_path / "diverged", diverging))
    out = run(compose_train(tmp_path / "sane", [*TINY, "trainer.max_steps=8"]))  # (finite: it trains on)
    assert math.isfinite(out["metrics"]["train/loss"])


def test_a_window_too_short_to_predict_is_a_config_error_naming_the_shortest(tmp_path):
    datamodule, model, _ = build(compose_train(tmp_path, [*TINY, "data.clip_seconds=0.1"]))
    with pytest.raises(ConfigError, match="too few to predict") as caught:
        check_window_length(datamodule, model)
    shortest = float(str(caught.value).rsplit("=", 1)[1])
    datamodule, model, _ = build(compose_train(tmp_path, [*TINY, f"data.clip_seconds={shortest}"]))
    assert model.hparams.carry_state and datamodule.batch_size > 1  # rows restart alone: whole mini-batches too
    check_window_length(datamodule, model)  # the suggested value works
    check_carried_windows(datamodule, model)  # (0.5 s was suggested, which this refused)


def test_a_validation_window_too_short_to_score_is_a_config_error_before_training(tmp_path):
    """0.25 s holds 4 tokens of the default model, which predicts 4 ahead: the first validation scored
    nothing and the checkpoint callback failed on the missing val/loss, possibly hours in."""
    datamodule, model, _ = build(compose_train(tmp_path, [*TINY, "data.eval_window_seconds=0.25"]))
    with pytest.raises(ConfigError, match=r"^data.eval_window_seconds=0.25 holds 4 tokens, too few") as caught:
        check_window_length(datamodule, model)
    shortest = float(str(caught.value).rsplit("=", 1)[1])
    datamodule, model, _ = build(compose_train(tmp_path, [*TINY, f"data.eval_window_seconds={shortest}"]))
    check_window_length(datamodule, model)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["trainer.max_steps=-1"], "trainer.max_steps=-1: training draws windows without end"),
        (["trainer.max_epochs=3"], "trainer.max_epochs=3 has no effect: training draws windows without end"),
        (["trainer.max_steps=-1", "trainer.max_epochs=1"], "trainer.max_epochs=1 has no effect"),
        (["trainer.max_epochs=1", "trainer.limit_train_batches=1.0"], "trainer.max_epochs=1 has no effect"),
        (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches must be >= 1; got 0"),
    ],
)
def test_a_run_that_would_never_end_or_crash_on_its_schedule_is_a_config_error(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as caught:
        run(compose_train(tmp_path, [*TINY, *overrides]))
    assert str(caught.value).startswith(message)


def test_epochs_of_a_set_number_of_batches_set_the_runs_length(tmp_path):
    over = ["trainer.max_steps=-1", "trainer.max_epochs=2", "trainer.limit_train_batches=2"]
    out = run(compose_train(tmp_path, [*TINY, *over, "trainer.val_check_interval=2"]))
    assert torch.load(out["last_ckpt"], weights_only=False)["global_step"] == 4


@pytest.mark.slow
def test_the_progress_bar_counts_the_batches_of_the_run_resumed_or_accumulated(tmp_path):
    """Lightning's bar took its total from the steps left: with two batches a step it ran past it, and a
    resumed run, whose epoch counts on from the checkpoint's batches, showed ``8/?``."""

    def fit(folder, *overrides, ckpt_path=None):
        steps = ["callbacks.progress_bar.refresh_rate=1", "callbacks.last_checkpoint.every_n_train_steps=1"]
        datamodule, model, trainer = build(compose_train(tmp_path / folder, [*TINY, *steps, *overrides]))
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        (bar,) = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
        assert bar.train_progress_bar.desc.startswith("Epoch ")  # (a resumed run's read "Training")
        return (bar.train_progress_bar.n, bar.train_progress_bar.total), trainer

    assert fit("acc", "trainer.max_steps=3", "trainer.accumulate_grad_batches=2")[0] == (6, 6)
    done, trainer = fit("first", "trainer.max_steps=4")
    assert done == (4, 4)
    last = trainer.checkpoint_callbacks[-1].last_model_path
    assert fit("first", "trainer.max_steps=6", ckpt_path=last)[0] == (6, 6)


@pytest.mark.slow
def test_where_stdout_is_no_terminal_the_bar_prints_plain_lines(tmp_path, capsys):
    """A bar written to a log file is carriage returns and cursor moves on one endless line; there a
    plain line is printed instead, at most every line_seconds, after each validation and at the end."""
    every = ["callbacks.progress_bar.refresh_rate=1", "callbacks.progress_bar.line_seconds=1000"]
    datamodule, model, trainer = build(
        compose_train(tmp_path, [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", *every])
    )
    capsys.readouterr()
    trainer.fit(model, datamodule=datamodule)
    out = capsys.readouterr().out  # (captured: no terminal)
    assert "\r" not in out and "\x1b" not in out
    lines = [line for line in out.splitlines() if line.startswith("Epoch ")]
    assert [line.split(" batches,")[0] for line in lines] == ["Epoch 0: 2/4", "Epoch 0: 4/4"]
    assert "val/loss_ratio_copy=" in lines[0] and "batches/s" in lines[0]
    datamodule, model, trainer = build(compose_train(tmp_path / "b", [*TINY, "trainer.max_steps=3", *every]))
    trainer.fit(model, datamodule=datamodule)  # (no validation at its end: the end has its own line)
    assert [line.split(" batches,")[0] for line in capsys.readouterr().out.splitlines()] == ["Epoch 0: 3/3"]
    epochs = ["trainer.max_steps=-1", "trainer.max_epochs=2", "trainer.limit_train_batches=2"]
    datamodule, model, trainer = build(compose_train(tmp_path / "c", [*TINY, *epochs, *every]))
    trainer.fit(model, datamodule=datamodule)
    assert [line.split(" batches,")[0] for line in capsys.readouterr().out.splitlines()] == ["Epoch 1: 2/2"]
    (bar,) = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
    assert bar._batches == 4  # the rate's: the run's batches (the bar's count starts again each epoch)
    # a line due at a validation's batch is the validation's line, not one more beside it
    often = ["callbacks.progress_bar.refresh_rate=1", "callbacks.progress_bar.line_seconds=0"]
    steps = ["trainer.max_steps=4", "trainer.val_check_interval=2"]
    datamodule, model, trainer = build(compose_train(tmp_path / "d", [*TINY, *steps, *often]))
    trainer.fit(model, datamodule=datamodule)
    lines = [line.split(" batches,")[0] for line in capsys.readouterr().out.splitlines()]
    assert lines == ["Epoch 0: 1/4", "Epoch 0: 2/4", "Epoch 0: 3/4", "Epoch 0: 4/4"]
    # an epoch's last line is its own, not the next epoch's bar reset to 0
    epochs = ["trainer.max_steps=-1", "trainer.max_epochs=2", "trainer.limit_train_batches=2"]
    datamodule, model, trainer = build(
        compose_train(tmp_path / "e", [*TINY, *epochs, "trainer.limit_val_batches=0", *often])
    )
    trainer.fit(model, datamodule=datamodule)
    lines = [line.split(" batches,")[0] for line in capsys.readouterr().out.splitlines()]
    assert lines == ["Epoch 0: 1/2", "Epoch 0: 2/2", "Epoch 1: 1/2", "Epoch 1: 2/2"]


def test_the_plain_line_rate_leaves_validation_out(tmp_path, capsys, monkeypatch):
    """Its batches/s divided by the time since the start, validations included: with validations as long
    as the training between them, it read half the training rate and fell as the run went on."""
    from ttt_mm.callbacks import progress_bar

    clock = [0.0]  # seconds added to the real clock: each validation batch takes 1000 s
    monkeypatch.setattr(progress_bar, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + clock[0]))

    class SlowValidation(L.Callback):
        def on_validation_batch_end(self, *args, **kwargs):
            clock[0] += 1000.0

    every = ["callbacks.progress_bar.refresh_rate=1", "callbacks.progress_bar.line_seconds=1e6"]
    steps = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1"]
    datamodule, model, trainer = build(compose_train(tmp_path, [*TINY, *steps, *every]))
    trainer.callbacks.append(SlowValidation())
    capsys.readouterr()
    trainer.fit(model, datamodule=datamodule)
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch ")]
    when, rate = line.split(" batches, ")[1].split(", ")[:2]
    minutes, seconds = when.split(":")
    assert 1000 <= 60 * int(minutes) + int(seconds) < 1300  # (the validation's 1000 s, and the real run's time)
    assert float(rate.removesuffix(" batches/s")) > 0.01  # (with it: 2 / 1000 s; 2 / 200 s of real training)


def test_a_test_only_run_tests_the_checkpoint_it_is_given_and_says_which(tmp_path, capsys):
    """It tested the model's fresh weights: ckpt_path was used only to resume a fit. Its summary said
    the run had no last or best checkpoint, while they sat in the folder it wrote to."""
    steps = ["trainer.max_steps=2", "trainer.val_check_interval=2"]
    trained = run(compose_train(tmp_path / "a", [*TINY, *steps, "test=true"]))
    tested = run(
        compose_train(tmp_path / "b", [*TINY, "train=false", "test=true", f"ckpt_path={trained['best_ckpt']}"])
    )
    assert tested["metrics"]["test/loss"] == pytest.approx(trained["metrics"]["test/loss"], rel=1e-6)
    capsys.readouterr()
    report(tested)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"tested:          {trained['best_ckpt']}" and lines[2].startswith("logs:")
    assert not any(line.startswith(("last checkpoint", "best checkpoint")) for line in lines)


def test_ctrl_c_while_the_data_is_listed_says_nothing_was_trained_and_began_nothing(tmp_path, monkeypatch):
    """It ended as a bare KeyboardInterrupt: the run folder, holding only Hydra's record, was left."""
    from ttt_mm.data import datamodule

    def interrupted(self, stage=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(datamodule.MediaDataModule, "setup", interrupted)
    with pytest.raises(Interrupted, match=r"^nothing was trained \(the data was being listed\)$") as stopped:
        run(compose_train(tmp_path, TINY))
    assert stopped.value.before_it_began  # (so its stamped run folder goes: `forget_refused_run`)


def test_sigterm_while_the_data_is_listed_stops_as_ctrl_c_does(tmp_path, monkeypatch):
    """A scheduler's SIGTERM while a large folder was probed ended the run at once, without a word, and
    the probes since the index was last saved were lost (Lightning takes SIGTERM only once it fits)."""
    from ttt_mm.data import datamodule
    from ttt_mm.processes import termination

    def terminated(self, stage=None):
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler), "SIGTERM would end the process at once"
        handler(signal.SIGTERM, None)  # (as the signal would run it)

    monkeypatch.setattr(datamodule.MediaDataModule, "setup", terminated)
    try:
        with pytest.raises(Interrupted, match=r"^nothing was trained \(the data was being listed\)$"):
            run(compose_train(tmp_path, TINY))
        assert termination.terminated()  # (exit status 143, "terminated (SIGTERM)": `config_errors_end_the_command`)
    finally:
        termination.forget_termination()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # (Lightning's own, in fit, is set on the default)


def test_a_test_only_run_scores_its_runs_test_split_and_leaves_out_files_it_trained_on(tmp_path, caplog):
    """Drawn with the defaults (or other fractions) instead of the run's, the test split held the run's
    training files: all of them left out was a config error ("raise data.test_fraction"); some, a
    warning. The run's fractions are used, as evaluate split=test uses them; a checkpoint that records
    none (an older run's) still has its training files left out. Tested in other windows than its run's
    (test/* changed with data.clip_seconds, unsaid), it is warned about."""
    clips = "data.source.num_clips=24"  # (the default's 0.5 of its clips, in windows of 0.5 s, took a minute)
    fit = [*TINY, clips, "trainer.max_steps=2", "trainer.val_check_interval=2", "data.test_fraction=0.25", "test=true"]
    trained = run(compose_train(tmp_path / "a", fit))
    test_only = ["train=false", "test=true", f"ckpt_path={trained['best_ckpt']}", "data.test_fraction=0.5"]
    with caplog.at_level(logging.INFO, logger="ttt_mm.tasks"):
        tested = run(compose_train(tmp_path / "b", [*TINY, clips, *test_only]))
    said = "test-only: the checkpoint's test files, as its run split them (data.test_fraction=0.5 -> 0.25)"
    assert said in caplog.text and "trained on, left out" not in caplog.text and "test windows" not in caplog.text
    assert tested["metrics"]["test/loss"] == pytest.approx(trained["metrics"]["test/loss"], rel=1e-6)

    older = torch.load(trained["best_ckpt"], weights_only=False)
    del older["MediaDataModule"]["split"]
    torch.save(older, tmp_path / "older.ckpt")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks"):
        tested = run(
            compose_train(
                tmp_path / "c",
                [
                    *TINY,
                    clips,
                    *test_only[:2],
                    f"ckpt_path={tmp_path / 'older.ckpt'}",
                    test_only[3],
                    "data.eval_window_seconds=0.5",
                ],
            )
        )
    (line,) = [r.getMessage() for r in caplog.records if "trained on, left out" in r.getMessage()]
    assert line.startswith("split=test: ") and line.endswith("test it with the data settings it trained with)")
    assert (
        "test-only: test windows of 0.5 s (data.eval_window_seconds), the checkpoint's run tested in 1 s: test/* "
        "compares only roughly with its run's" in caplog.text
    )
    assert tested["metrics"]["test/loss"] > 0


def test_a_test_only_run_scores_the_held_out_span_of_a_file_its_run_trained_on(tmp_path, media_tree, caplog):
    """A manifest may train on a recording's first seconds and test on its last, and test=true after the
    fit scored them: tested alone, every span of a trained file was left out, and the run refused."""
    video = media_tree["videos"] / "bounce" / "a.mp4"  # (3 s)
    rows = f"path,start,end,split\n{video},0,2,train\n{video},2,3,test\n{video},1.5,2.5,test\n"
    (tmp_path / "spans.csv").write_text(rows)
    data = [*TINY, "data=manifest", f"data.root={tmp_path / 'spans.csv'}", "data.val_fraction=0"]
    trained = run(compose_train(tmp_path / "a", [*data, "trainer.max_steps=1"]))
    test_only = ["train=false", "test=true", f"ckpt_path={trained['last_ckpt']}"]
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks"):
        tested = run(compose_train(tmp_path / "b", [*data, *test_only]))
    (line,) = [r.getMessage() for r in caplog.records if "trained on, left out" in r.getMessage()]
    assert line.startswith("split=test: 1 of its 2 clips overlap what the checkpoint's run trained on")  # (1.5-2.5)
    assert tested["metrics"]["test/loss"] > 0


def test_a_test_only_run_of_a_checkpoint_whose_run_held_out_no_test_files_says_so(tmp_path):
    """Its fractions replace data.*'s: the error said to raise data.test_fraction, which changed nothing."""
    fit = [*TINY, "trainer.max_steps=2", "trainer.val_check_interval=2", "data.test_fraction=0"]
    trained = run(compose_train(tmp_path / "a", fit))
    test_only = ["train=false", "test=true", f"ckpt_path={trained['last_ckpt']}", "data.test_fraction=0.3"]
    with pytest.raises(ConfigError, match=r"the checkpoint's run held out no test files, data.test_fraction=0: "):
        run(compose_train(tmp_path / "b", [*TINY, *test_only]))


def test_a_test_only_run_of_another_models_checkpoint_is_a_config_error(tmp_path):
    """It ended in torch's traceback (a resume of the same checkpoint ends in one line)."""
    trained = run(compose_train(tmp_path / "a", [*TINY, "trainer.max_steps=2", "trainer.val_check_interval=2"]))
    test_only = ["train=false", "test=true", f"ckpt_path={trained['last_ckpt']}", "model=attention"]
    said = r"cannot be tested with this config \(its weights do not fit this model: \d+ weights of another model: "
    with pytest.raises(ConfigError, match=said) as refused:  # (not torch's list of every weight's name)
        run(compose_train(tmp_path / "b", [*TINY, *test_only]))
    assert str(refused.value).endswith(
        "; test it with the overrides that trained it (its run directory's .hydra/overrides.yaml)"
    )  # (composed here: Hydra wrote no record)
    assert not (tmp_path / "b" / "csv").exists() or not list((tmp_path / "b" / "csv").iterdir())
    (tmp_path / "a" / ".hydra").mkdir()  # what a run started by `python train.py ...` keeps
    (tmp_path / "a" / ".hydra" / "config.yaml").write_text("{}")
    (tmp_path / "a" / ".hydra" / "overrides.yaml").write_text(f"- {TINY[1]}\n- size=tiny\n- test=true\n")
    with pytest.raises(ConfigError) as refused:
        run(compose_train(tmp_path / "b", [*TINY, *test_only]))
    assert str(refused.value).endswith(
        "; test it with the overrides that trained it: python -m ttt_mm.tasks.train data.clip_seconds=1.0 size=tiny "
        f"train=false test=true ckpt_path={trained['last_ckpt']}"
    )


def test_a_run_that_neither_trains_nor_tests_is_refused(tmp_path):
    """It printed a summary of nothing and exited 0."""
    with pytest.raises(ConfigError, match="train=false and test=false leave nothing to run"):
        run(compose_train(tmp_path, [*TINY, "train=false"]))


@pytest.mark.slow
def test_a_run_resumed_from_a_copy_of_its_folder_keeps_its_ranking_there(tmp_path):
    """Lightning's ModelCheckpoint drops its ranking when its folder changes: the copy named the
    original's best file, and its next validation was saved as best whatever its score (here the
    ranking is by step, lowest first: step 2 stays the best)."""
    rank = [*TINY, "callbacks.model_checkpoint.monitor=step", "callbacks.model_checkpoint.mode=min"]
    rank += ["trainer.val_check_interval=2"]
    first = run(compose_train(tmp_path / "a", [*rank, "trainer.max_steps=2"]))
    assert Path(first["best_ckpt"]).name == "step000002.ckpt"
    copy = tmp_path / "b"
    shutil.copytree(tmp_path / "a", copy)
    out = run(compose_train(copy, [*rank, "trainer.max_steps=4", f"ckpt_path={copy / 'checkpoints' / 'last.ckpt'}"]))
    assert out["best_ckpt"] == str(copy / "checkpoints" / "step000002.ckpt")
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["last.ckpt", "step000002.ckpt"]


def test_a_resume_from_an_earlier_checkpoint_of_its_run_says_its_saves_replace_the_later_one(tmp_path, caplog):
    """Resumed in its run's folder from step 2 while last.ckpt was at step 4, the run saved over it unsaid."""
    rank = [*TINY, "callbacks.model_checkpoint.monitor=step", "callbacks.model_checkpoint.mode=min"]
    rank += ["trainer.val_check_interval=2"]
    first = run(compose_train(tmp_path, [*rank, "trainer.max_steps=4"]))
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("{}\n")  # (a run folder, as Hydra leaves one)
    earlier = Path(first["best_ckpt"])
    shutil.copy(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "checkpoints" / "step000004.ckpt")  # (a later best)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.train"):
        run(compose_train(tmp_path, [*rank, "trainer.max_steps=6", f"ckpt_path={earlier}"]))
    said, held = [m for m in caplog.messages if m.startswith("resuming from step 2, in its run's folder")]
    assert f"whose {tmp_path / 'checkpoints' / 'last.ckpt'} was saved later (step 4): this run's saves" in said
    # a later best stayed on disk, outside the resumed run's ranking, and nothing named it
    assert "which holds checkpoints saved later (step000004.ckpt): they stay, outside this run's ranking" in held
    assert "unless it saves a best of the same step, which replaces one" in held


def test_a_sweeps_job_resumed_outside_the_sweep_says_its_results_row_stays(tmp_path, caplog):
    """Resumed with ckpt_path= alone, a sweep's job went on in its folder, and the sweep's results.csv
    kept naming its earlier best checkpoint, which the resume then removed."""
    job = tmp_path / "sweep" / "0"
    first = run(compose_train(job, [*TINY, "trainer.max_steps=1"]))
    (job / ".hydra").mkdir()
    (job / ".hydra" / "config.yaml").write_text("{}\n")  # (a run folder, as Hydra leaves one)
    write_csv(
        job.parent / "results.csv",
        [{"job": 0, "run_dir": str(job), "best_ckpt": first["best_ckpt"]}],
        ["job", "run_dir", "best_ckpt"],
    )
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.train"):
        run(compose_train(job, [*TINY, "trainer.max_steps=2", f"ckpt_path={job / 'checkpoints' / 'last.ckpt'}"]))
    said = f"resuming job 0 of the sweep in {job.parent} outside a sweep: its row in that sweep's results.csv stays"
    assert said in caplog.text and "resume it as a sweep of one" in caplog.text


def test_ctrl_c_between_fit_and_test_stops_the_processes_the_launcher_started(tmp_path, monkeypatch):
    """Inside fit or test Lightning stops them on Ctrl-C. Between the two it reached the first process
    alone, and the others, which ignore it, would have waited for it in test until the collective timeout."""
    killed = []

    class Launcher:  # (as Lightning's DDP launcher does in the first process: it runs the call here)
        def launch(self, function, *args, trainer=None, **kwargs):
            return function(*args, **kwargs)

        def kill(self, signum):
            killed.append(signum)

    fitted = []

    class FitEnds(L.Callback):
        def on_fit_end(self, trainer, pl_module):
            fitted.append(True)

    metrics = L.Trainer.callback_metrics.fget

    def callback_metrics(trainer):  # (read by `fit_and_test` after fit: Ctrl-C there)
        if fitted:
            raise KeyboardInterrupt
        return metrics(trainer)

    def build_with_launcher(cfg):
        datamodule, model, trainer = build(cfg)
        trainer.strategy._launcher = Launcher()
        trainer.callbacks.append(FitEnds())
        return datamodule, model, trainer

    monkeypatch.setattr(L.Trainer, "callback_metrics", property(callback_metrics))
    monkeypatch.setattr(train_task, "build", build_with_launcher)
    with pytest.raises(KeyboardInterrupt):
        run(compose_train(tmp_path, [*TINY, "trainer.max_steps=2", "test=true"]))
    assert killed == [signal.SIGKILL]


@pytest.mark.slow
def test_ctrl_c_ends_training_with_status_130_and_where_to_resume(tmp_path, monkeypatch, capsys):
    """Lightning shuts an interrupted fit down and calls exit(1); the run still reports its checkpoints,
    says how to resume, and exits 130 as an interrupted command does (its test run is not started).
    A resumed run stopped before its first save names the checkpoint it resumed from (it said none).
    The steps since the last save are named: they are trained again (it is saved every few steps)."""
    stop_at = 3

    class Interrupt(L.Callback):
        def on_train_batch_start(self, trainer, *args):  # (a Ctrl-C lands in a batch, as here, more often than not)
            if trainer.global_step == stop_at:
                raise KeyboardInterrupt

    trainers = []

    def build_and_interrupt(cfg):
        datamodule, model, trainer = build(cfg)
        trainer.callbacks.append(Interrupt())
        trainers.append(trainer)
        return datamodule, model, trainer

    def interrupted(*overrides, folder=tmp_path):
        sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores Ctrl-C while it shuts down
        try:
            every = "callbacks.last_checkpoint.every_n_train_steps=2"
            return run(compose_train(folder, [*TINY, "trainer.max_steps=20", every, "test=true", *overrides]))
        finally:
            signal.signal(signal.SIGINT, sigint)

    monkeypatch.setattr(train_task, "build", build_and_interrupt)
    out = interrupted()
    assert out["interrupted"] and Path(out["last_ckpt"]).is_file()
    assert out["batches"] == 3  # (not the batch it was in: a run that ended before validating says so)
    (bar,) = [c for c in trainers[0].callbacks if isinstance(c, ProgressBar)]
    assert bar.train_progress_bar.disable  # closed now: at exit it was drawn again, after the summary
    assert torch.load(out["last_ckpt"], map_location="cpu", weights_only=False)["global_step"] == 2
    log_file = logging.FileHandler(tmp_path / "train.log")  # (Hydra's, in a real run)
    logging.getLogger().addHandler(log_file)
    try:
        with pytest.raises(SystemExit) as ended:
            report(out)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    assert ended.value.code == 130
    resume = f"interrupted at step 3: resume with ckpt_path={out['last_ckpt']} (saved at step 2: the step since is"
    assert resume in capsys.readouterr().err and resume in (tmp_path / "train.log").read_text()
    again = interrupted(f"ckpt_path={out['last_ckpt']}")  # from step 2, stopped at 3: saves at 4
    assert again["interrupted"] and again["last_ckpt"] == out["last_ckpt"]
    with pytest.raises(SystemExit):
        report(again)
    assert resume in capsys.readouterr().err
    stop_at = 1  # before the first save
    with pytest.raises(SystemExit):
        report(interrupted(folder=tmp_path / "early"))
    printed = capsys.readouterr()
    assert "last checkpoint: none (interrupted before the first save)" in printed.out
    assert "interrupted at step 1: no checkpoint was saved (every 2 steps" in printed.err
    monkeypatch.setattr(train_task, "rerun_this_job", lambda: "python train.py -m seed=1 hydra.sweep.subdir=2")
    assert train_task._how_to_resume({"last_ckpt": None, "save_every": 2}) == (  # (a sweep's job)
        "no checkpoint was saved (every 2 steps: callbacks.last_checkpoint.every_n_train_steps), so there is nothing "
        "to resume from; to run this sweep job again (it joins the sweep's results): python train.py -m seed=1 "
        "hydra.sweep.subdir=2"
    )
    at_a_save = {"last_ckpt": "last.ckpt", "last_ckpt_step": 4, "save_every": 2}
    for step, said in ((4, "no step is"), (5, "the step since is"), (7, "the 3 steps since are")):
        line = train_task._how_to_resume({**at_a_save, "step": step})
        assert line == f"resume with ckpt_path=last.ckpt (saved at step 4: {said} trained again)"


def test_sigterm_ends_training_with_status_143_and_where_to_resume(tmp_path, monkeypatch, capsys):
    """A scheduler stops a job with SIGTERM: Lightning stops the fit as for Ctrl-C, and the run exits
    143, as shells report SIGTERM (it exited 130, as for Ctrl-C), saying so and how to resume."""

    class Terminate(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: the fit stops after this batch

    def build_and_terminate(cfg):
        datamodule, model, trainer = build(cfg)
        trainer.callbacks.append(Terminate())
        return datamodule, model, trainer

    monkeypatch.setattr(train_task, "build", build_and_terminate)
    every = "callbacks.last_checkpoint.every_n_train_steps=2"
    out = run(compose_train(tmp_path, [*TINY, "trainer.max_steps=20", every]))
    assert out["interrupted"] and out["terminated"] and out["step"] == 3
    with pytest.raises(SystemExit) as ended:
        report(out)
    assert ended.value.code == 143
    assert f"terminated (SIGTERM) at step 3: resume with ckpt_path={out['last_ckpt']}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ended:
        report({**out, "global_zero": False})  # the other processes of a DDP run
    assert ended.value.code == 143


@pytest.mark.slow
@pytest.mark.parametrize("reads", ["windows", "stream", "validation"])
def test_a_run_whose_decoder_crashes_on_a_file_lists_it_and_trains_to_the_end(tmp_path, monkeypatch, reads):
    """A read kills its worker as a native crash would (the fifth in training, the second in
    validation); the run used to end there (and its last line said to resume)."""
    from ttt_mm.data import datasets, training_order

    module = datasets if reads == "validation" else training_order  # (each reads with its own name for the reader)
    read, count, crashing = module.read_item, tmp_path / "reads", 2 if reads == "validation" else 5
    count.write_text("0")

    def one_read_crashes(clip, *args):
        n = int(count.read_text()) + 1  # (in a file: each new worker starts from the training process's state)
        count.write_text(str(n))
        if n == crashing:
            os.kill(os.getpid(), signal.SIGSEGV)
        return read(clip, *args)

    monkeypatch.setattr(module, "read_item", one_read_crashes)
    steps = 10 if reads == "validation" else 6  # (validation at step 10: debug=default)
    overrides = [*TINY, f"trainer.max_steps={steps}", "data.num_workers=1", f"data.stream={reads == 'stream'}"]
    out = run(compose_train(tmp_path, overrides + (["data.val_fraction=0"] if reads != "validation" else [])))
    assert out["step"] == steps and int(count.read_text()) > crashing
    listed = SkipList(tmp_path / "skipped_media.tsv").reasons
    assert list(listed.values()) == ["decoder crashed: SIGSEGV"] and list(listed)[0].startswith("synthetic/")
    if reads == "validation":
        assert 0 < out["metrics"]["val/loss_copy"] < float("inf")


def test_resuming_from_a_checkpoint_that_does_not_fit_is_a_config_error(tmp_path):
    first = run(compose_train(tmp_path / "a", [*TINY, "trainer.max_steps=2"]))
    logs = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("version_*"))
    assert logs == ["a/csv/version_0", "a/tensorboard/version_0"]
    other_model = [*TINY, "size=small", f"ckpt_path={first['last_ckpt']}"]
    with pytest.raises(ConfigError, match=r"cannot resume this run \(its weights do not fit this model: \d+ of") as err:
        run(compose_train(tmp_path / "a", other_model))  # in place, as a resume runs
    assert ": backbone.blocks.2." in str(err.value) and "of other shapes: tokenizer." in str(err.value)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("version_*")) == logs  # no empty version_1
    (tmp_path / "a" / ".hydra").mkdir()  # as `python train.py <TINY> trainer.max_steps=2` records its run
    (tmp_path / "a" / ".hydra" / "config.yaml").write_text("{}")
    (tmp_path / "a" / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in [*TINY, "trainer.max_steps=2"])
    )
    with pytest.raises(ConfigError) as err:  # (its step against this run's length was said first)
        run(
            compose_train(
                tmp_path / "b", [*TINY, "size=small", "trainer.max_steps=1", f"ckpt_path={first['last_ckpt']}"]
            )
        )
    assert "nothing is left to train" not in str(err.value) and str(err.value).endswith(
        f"resume with the overrides that trained it: python -m ttt_mm.tasks.train {' '.join(TINY)} "
        f"trainer.max_steps=2 ckpt_path={first['last_ckpt']}"
    )


def test_a_resume_validates_on_the_file_its_run_moved_to_validation(tmp_path, caplog):
    """Where no file hashes into validation, which moves there depends on the files usable now and on
    this version's rule: a resume took another, and warned that val/* no longer compared."""
    from mediafiles import tone, write_wav

    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(4):
        write_wav(folder / f"{i}.wav", tone(2.0, 16000, 200.0 * (i + 1)), 16000)
    common = [*TINY, "data=audio_folder", f"data.root={folder}", "data.val_fraction=1e-9", "data.test_fraction=0"]
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        first = run(compose_train(tmp_path / "run", [*common, "trainer.max_steps=1"]))
    (said,) = [m for m in caplog.messages if "no file hashed into validation" in m]
    moved = said.split("validating on ", 1)[1].split(" ", 1)[0]
    other = next(f"{i}.wav" for i in range(4) if f"{i}.wav" != moved)  # (as if the run had validated on this one)
    ckpt = torch.load(first["last_ckpt"], map_location="cpu", weights_only=False)
    trained = [ClipInfo(str(folder / f"{i}.wav")) for i in range(4) if f"{i}.wav" != other]
    ckpt["MediaDataModule"]["training clips"] = clip_record(trained)
    ckpt["MediaDataModule"]["validation clips"] = clip_record([ClipInfo(str(folder / other))])
    torch.save(ckpt, first["last_ckpt"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        run(compose_train(tmp_path / "run", [*common, "trainer.max_steps=2", f"ckpt_path={first['last_ckpt']}"]))
    assert any(f"validating on {other} " in m for m in caplog.messages), caplog.messages


def test_an_error_read_as_a_refused_resume_after_training_went_on_keeps_the_logs(tmp_path, monkeypatch):
    """Only an attempt that trained nothing has its log versions removed."""
    first = run(compose_train(tmp_path, [*TINY, "trainer.max_steps=2"]))

    class FailsLater(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3:
                raise RuntimeError("PytorchStreamReader failed reading a file it had to read")

    def build_and_fail(cfg):
        datamodule, model, trainer = build(cfg)
        trainer.callbacks.append(FailsLater())
        return datamodule, model, trainer

    monkeypatch.setattr(train_task, "build", build_and_fail)
    with pytest.raises(ConfigError):
        run(compose_train(tmp_path, [*TINY, "trainer.max_steps=6", f"ckpt_path={first['last_ckpt']}"]))
    assert (tmp_path / "csv" / "version_1").is_dir() and (tmp_path / "tensorboard" / "version_1").is_dir()
    regrouped = tmp_path / "regrouped.ckpt"  # as written by a version that decayed one more parameter
    ckpt = torch.load(first["last_ckpt"], map_location="cpu", weights_only=False)
    decayed, kept = ckpt["optimizer_states"][0]["param_groups"]
    kept["params"].insert(0, decayed["params"].pop())
    torch.save(ckpt, regrouped)
    with pytest.raises(ConfigError, match=r"cannot resume this run \(loaded state dict contains a parameter group"):
        run(compose_train(tmp_path / "r", [*TINY, f"ckpt_path={regrouped}"]))
    with pytest.raises(ConfigError, match=r"^ckpt_path: checkpoint .*missing.ckpt does not exist$"):
        run(compose_train(tmp_path / "m", [*TINY, f"ckpt_path={tmp_path / 'missing.ckpt'}"]))
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(Path(first["last_ckpt"]).read_bytes()[:4096])
    with pytest.raises(ConfigError, match=r"is not a PyTorch checkpoint \(a zip archive\): truncated, damaged"):
        run(compose_train(tmp_path / "c", [*TINY, f"ckpt_path={damaged}"]))


def test_resuming_with_other_settings_says_what_they_change(tmp_path, caplog, monkeypatch):
    short = [*TINY, "model.warmup_steps=1"]
    first = run(compose_train(tmp_path / "a", [*short, "trainer.max_steps=4"]))
    assert torch.load(first["last_ckpt"], map_location="cpu", weights_only=False)["lr_schedule_steps"] == 4
    changed = ["trainer.max_steps=8", "data.batch_size=1", "model.lr=1e-5", f"ckpt_path={first['last_ckpt']}"]
    changed.append("model.backbone.mixer.base_lr=0.5")  # the weights fit: nothing else said it changed
    rates = []

    class FirstRate(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    def build_and_watch(cfg):
        datamodule, model, trainer = build(cfg)
        trainer.callbacks.append(FirstRate())
        return datamodule, model, trainer

    monkeypatch.setattr(train_task, "build", build_and_watch)
    with caplog.at_level(logging.WARNING, logger="ttt_mm"):
        run(compose_train(tmp_path / "a", [*short, *changed]))
    monkeypatch.undo()
    assert rates[0] == pytest.approx(1.3e-3, rel=1e-3)  # the first resumed step is on the new schedule (as logged)
    lines = [r.getMessage() for r in caplog.records]
    # at the end of a 4-step cosine the rate is at its floor (0.1 lr); 4 of 8 steps in, mid-way down; the
    # base rate stays the checkpoint's 2e-3, as the restored optimizer has it
    assert (
        "resuming at step 4 a run whose learning-rate schedule was planned for 4 steps, now 8: the learning rate "
        "follows the new schedule and goes from 0.0002 to 0.0013" in lines
    )
    assert (
        "resuming keeps the optimizer state of the checkpoint, so these stay as it has them: model.lr=0.002 "
        "(given 1e-05)" in lines
    )
    assert any(line.startswith("resuming with other data settings (data.batch_size 2 -> 1)") for line in lines)
    assert (
        "resuming with other model settings (model.backbone.mixer.base_lr None -> 0.5): the weights load as the "
        "checkpoint has them, and train on with these" in lines
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm"):
        SequenceModel.load_from_checkpoint(first["last_ckpt"], lr=1e-4)  # loading is not resuming: no warning
    assert not [r for r in caplog.records if "resuming" in r.getMessage()]
    with pytest.raises(ConfigError, match="is at step 8 and trainer.max_steps=8: nothing is left to train"):
        run(compose_train(tmp_path / "a", [*short, "trainer.max_steps=8", f"ckpt_path={first['last_ckpt']}"]))


def test_resuming_with_another_objective_or_schedule_says_so(tmp_path, caplog):
    """model.predict, model.loss and the schedule's warm-up and floor changed on resume went unsaid (where
    the run's length stayed, the rate jumped at the next step, silently); the rate before the jump is the
    checkpoint's own (it was recomputed with the new floor: "is 0.002 under both"); a checkpoint saved
    before the mixer was injected (its mixer a name) ended the resume in a traceback."""
    first = run(compose_train(tmp_path / "a", [*TINY, "model.warmup_steps=1", "trainer.max_steps=4"]))
    saved = torch.load(first["last_ckpt"], map_location="cpu", weights_only=False)
    saved["lr_schedule_steps"] = 8  # (as if stopped half-way through an 8-step run)
    torch.save(saved, tmp_path / "half.ckpt")
    changed = ["model.predict=next_token", "model.loss=l1", "model.min_lr_ratio=1.0", "trainer.max_steps=8"]
    with caplog.at_level(logging.WARNING, logger="ttt_mm"):
        run(
            compose_train(
                tmp_path / "b", [*TINY, "model.warmup_steps=1", *changed, f"ckpt_path={tmp_path / 'half.ckpt'}"]
            )
        )
    lines = [r.getMessage() for r in caplog.records]
    assert (
        "resuming with other model settings (model.loss mse -> l1, model.min_lr_ratio 0.1 -> 1.0, model.predict "
        "next_step -> next_token): the weights load as the checkpoint has them, and train on with these" in lines
    )
    assert (
        "resuming at step 4 a run whose learning-rate schedule changed (model.min_lr_ratio 0.1 -> 1.0): the "
        "learning rate follows the new schedule and goes from 0.0002 to 0.002" in lines
    )
    backbone = saved["hyper_parameters"]["backbone"]
    mixer = backbone.pop("mixer")
    backbone |= {"mixer": "ttt_linear", "num_heads": mixer["num_heads"], "mini_batch_size": mixer["mini_batch_size"]}
    torch.save(saved, tmp_path / "older.ckpt")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm"):
        run(
            compose_train(
                tmp_path / "c",
                [*TINY, "model.warmup_steps=1", "trainer.max_steps=8", f"ckpt_path={tmp_path / 'older.ckpt'}"],
            )
        )
    assert not [r for r in caplog.records if "other model settings" in r.getMessage()]


def test_a_sweep_cannot_start_its_own_ddp_processes(tmp_path, monkeypatch):
    ddp = L.Trainer(
        strategy="ddp", accelerator="cpu", devices=2, max_steps=10, logger=False, enable_checkpointing=False
    )
    cfg = compose_train(tmp_path, TINY)
    train_checks.check_launch(cfg, ddp)  # a single run: Lightning starts the second process itself
    monkeypatch.setattr(train_checks, "in_a_sweep", lambda: True)
    with pytest.raises(ConfigError, match="a sweep \\(-m\\) cannot start 2 processes of DDPStrategy"):
        train_checks.check_launch(cfg, ddp)
    one = L.Trainer(
        strategy="ddp", accelerator="cpu", devices=1, max_steps=10, logger=False, enable_checkpointing=False
    )
    train_checks.check_launch(cfg, one)  # nothing to start: a sweep of one-process DDP runs is fine


def torchrun_process(rank: int) -> dict[str, str]:
    """What torchrun gives the process of this rank that it starts, of two on one machine."""
    ranks = {"RANK": str(rank), "LOCAL_RANK": str(rank), "GROUP_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    return ranks | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29531", "TORCHELASTIC_RUN_ID": "test"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("devices", "rank", "said"),
    [
        (
            "4",
            0,
            "error: trainer.devices=4 and trainer.num_nodes=1 do not match the launch (TorchElasticEnvironment: You "
            "set `devices=4` and `num_nodes=1` in Lightning, but the product (4 * 1) does not match the world size "
            "(2).): make trainer.devices (processes per node) and trainer.num_nodes match it",
        ),
        (
            "2",
            0,
            "error: each of the 2 processes of this launch names the run folder by its own start time (this one: ",
        ),
        ("2", 1, "[rank 1] error: each of the 2 processes of this launch names the run folder by its own start time"),
    ],
    ids=["devices", "run-folder", "run-folder-rank-1"],
)
def test_a_torchrun_launch_that_cannot_work_is_one_line_before_it_starts(tmp_path, devices, rank, said):
    """Under torchrun, devices that did not match the launch were a traceback from every process as the
    fit began; without hydra.run.dir every process wrote a run folder of its own, without a word."""
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true", f"trainer.devices={devices}"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *TINY, *ddp, "trainer.max_steps=2", f"paths.log_dir={tmp_path}"],
        env={**os.environ, **torchrun_process(rank)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and said in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "train" / "runs").glob("*"))  # (each refused process's stamped folder is gone)


def test_a_launch_of_several_processes_resumed_without_a_run_folder_is_refused_unless_in_its_checkpoints_run(
    tmp_path, monkeypatch
):
    """A resume from a checkpoint kept outside a run folder gets a folder stamped by each process."""
    run = tmp_path / "runs" / "2026-12-07_08-00-00-000000"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    two = SimpleNamespace(world_size=lambda: 2, validate_settings=lambda num_devices, num_nodes: None)
    launcher = SimpleNamespace(cluster_environment=two, num_processes=2, num_nodes=1)
    monkeypatch.setattr(train_checks, "stamped_run_folder", lambda: run)  # (where Hydra's run_dir put it)
    train_checks.check_started_outside(
        OmegaConf.create({"ckpt_path": str(run / "checkpoints" / "last.ckpt")}), launcher
    )
    monkeypatch.setattr(train_checks, "stamped_run_folder", lambda: tmp_path / "runs" / "2026-12-07_08-00-01-000001")
    with pytest.raises(ConfigError, match="^each of the 2 processes of this launch names the run folder by its own"):
        train_checks.check_started_outside(OmegaConf.create({"ckpt_path": str(tmp_path / "saved.ckpt")}), launcher)


def test_a_run_that_ended_before_its_first_validation_says_when_that_comes(tmp_path, capsys):
    """``best checkpoint: none (no validation has run)`` after a short run gave no reason: the interval."""
    out = run(compose_train(tmp_path, [*TINY, "trainer.max_steps=2", "trainer.val_check_interval=5"]))
    assert (out["batches"], out["val_every"], out["best_ckpt"]) == (2, 5, None)
    assert out["cost"]["train tokens/s"] > 0 and out["cost"]["fit minutes"] > 0
    report(out)
    said = "best checkpoint: none (no validation has run: it comes every 5 training batches, "
    assert said + "trainer.val_check_interval, and this run ended at batch 2)" in capsys.readouterr().out
    report(out | {"batches": 5, "val_every": 5})  # (validation ran but saved nothing: no reason to give)
    said = capsys.readouterr().out
    assert "best checkpoint: none (no validation has run)\n" in said
    speed = round(out["cost"]["train tokens/s"])
    assert f"\ntraining:        {speed} tokens/s (its mean, validation left out), " in said
    report(out | {"cost": {"train tokens/s": 1000.4, "fit minutes": 2.0}})
    assert (
        "\ntraining:        1000 tokens/s (its mean, validation left out), 2.0 min in all\n" in capsys.readouterr().out
    )
    report(out | {"cost": {"train tokens/s": 1000.4, "fit minutes": 0.25}})
    assert "validation left out), 15 s in all\n" in capsys.readouterr().out
    report(out | {"cost": {}})  # (interrupted, or without the Throughput callback)
    assert "training:" not in capsys.readouterr().out


def test_only_the_first_process_prints_the_summary(capsys):
    out = {"metrics": {}, "run_dir": "r", "last_ckpt": "l", "best_ckpt": None, "log_dirs": [], "global_zero": False}
    report(out)
    assert capsys.readouterr().out == ""
    report(out | {"global_zero": True})
    said = capsys.readouterr().out
    assert "run directory:   r" in said and "best checkpoint: none (no validation has run)" in said
    report(out | {"global_zero": True, "metrics": {"val/loss": 1.0}, "log_dirs": [None]})  # as fast_dev_run ends
    said = capsys.readouterr().out
    assert "best checkpoint: none (this run saves no checkpoints)" in said and "logs:            none (" in said


def test_a_validation_whose_files_all_fail_says_it_scored_nothing(tmp_path, monkeypatch, caplog, capsys):
    """When the one validation file failed partway, val/* went missing with only Lightning's warning
    about its monitored key, and the summary said that no validation had run."""
    from ttt_mm.data import datasets
    from ttt_mm.data.decode import MediaError

    def gone(clip, *args):
        raise MediaError(clip.name, "deleted since the index probed it")

    monkeypatch.setattr(datasets, "read_item", gone)  # (the windows that validation walks; training reads on)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.module"):
        out = run(compose_train(tmp_path, [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2"]))
    assert out["unscored"] == ["val"] and not [k for k in out["metrics"] if k.startswith("val/")]
    (warning,) = [r.message for r in caplog.records if "no token was scored" in r.message]  # once, not per epoch
    assert warning.startswith("validation: no token was scored (its files failed")
    report(out)
    assert "best checkpoint: none (validation ran but scored no token" in capsys.readouterr().out


def test_a_validation_whose_windows_score_no_token_ranks_no_checkpoint(tmp_path, monkeypatch, caplog):
    """Its batches ran, none scored (windows of silence read for missing sound): Lightning's best-checkpoint
    callback ended the fit over the missing val/loss_ratio_copy."""
    monkeypatch.setattr(SequenceModel, "_score", lambda self, batch: None)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.module"):
        out = run(compose_train(tmp_path, [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2"]))
    assert out["unscored"] == ["val"] and out["best_ckpt"] is None and Path(out["last_ckpt"]).is_file()
    assert "validation: no token was scored" in caplog.text
    monkeypatch.undo()
    score = SequenceModel._score  # scoring only the first validation: the later ones took its score

    def first_only(self, batch):
        if self.global_step <= 2:
            score(self, batch)

    monkeypatch.setattr(SequenceModel, "_score", first_only)
    every = ["trainer.max_steps=6", "trainer.val_check_interval=2", "callbacks.model_checkpoint.save_top_k=-1"]
    out = run(compose_train(tmp_path / "later", [*TINY, *every]))
    ranked = torch.load(out["last_ckpt"], weights_only=False)["callbacks"]
    (kept,) = [state["best_k_models"] for key, state in ranked.items() if key.startswith("ModelCheckpoint")]
    assert [Path(p).name for p in kept] == ["step000002.ckpt"]
    # nor did the summary show the first validation's scores as the last one's
    assert out["unscored"] == ["val"] and not [k for k in out["metrics"] if k.startswith("val/")]


def test_a_validation_file_that_fails_mid_run_is_named_in_the_summary(tmp_path, monkeypatch, capsys):
    """Its first validation scored the file, the later ones did not: the summary showed val/* as if
    every validation had averaged over the same files, with no word of the one left out."""
    from ttt_mm.data import datasets
    from ttt_mm.data.decode import MediaError

    read, walked = datasets.read_item, []

    def fails_once_read(clip, *args):
        if clip.name == (walked or [clip.name])[0] and len(walked) > 1:  # (its first window, in a later pass)
            raise MediaError(clip.name, "deleted since the index probed it")
        walked.append(clip.name)
        return read(clip, *args)

    monkeypatch.setattr(datasets, "read_item", fails_once_read)  # (the windows that validation walks)
    steps = ["trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0"]
    out = run(compose_train(tmp_path, [*TINY, *steps]))
    assert out["failed_when_read"] == {"val": [walked[0]]} and any(k.startswith("val/") for k in out["metrics"])
    report(out)
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("failed mid-run:")]
    assert line == (
        f"failed mid-run:  1 file (validation's: {walked[0]}), with its reason in {tmp_path}/skipped_media.tsv; "
        "validations before and after a file failed scored different files: val/* compare only roughly"
    )
    report(out | {"failed_when_read": {"train": ["a.mp4", "b.mp4"], "val": [walked[0]]}, "skip_list": None})
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("failed mid-run:")]
    assert line.startswith(f"failed mid-run:  3 files (1 of them validation's: {walked[0]}); validations before")


def test_a_best_checkpoint_from_the_resumed_run_is_said_to_be_from_there(tmp_path, capsys):
    out = {"metrics": {}, "run_dir": str(tmp_path / "new"), "last_ckpt": "l", "log_dirs": [], "resumed": True}
    report(out | {"best_ckpt": str(tmp_path / "new" / "checkpoints" / "step000050.ckpt")})
    assert capsys.readouterr().out.splitlines()[2] == f"best checkpoint: {tmp_path}/new/checkpoints/step000050.ckpt"
    old = tmp_path / "old" / "checkpoints" / "step000030.ckpt"
    report(out | {"best_ckpt": str(old)})
    assert capsys.readouterr().out.splitlines()[2] == (
        f"best checkpoint: {old} (in the run this one resumed: this run has saved no validated checkpoint yet)"
    )
    report(out | {"best_ckpt": str(old), "resumed": False})  # (a checkpoint folder set elsewhere: no note)
    assert capsys.readouterr().out.splitlines()[2] == f"best checkpoint: {old}"
    report(out | {"best_ckpt": str(old), "resumed": False, "best_score": {"val/loss": 0.18461}})
    assert capsys.readouterr().out.splitlines()[2] == f"best checkpoint: {old} (val/loss 0.1846)"


def test_a_run_without_cpu_threads_gets_the_default_back(tmp_path):
    """Sweep jobs share one process: one job's thread count must not leak into the next."""
    threads = command_keys.DEFAULT_THREADS + 1  # (not the default, on any machine)
    run(compose_train(tmp_path / "a", [*TINY, "trainer.max_steps=1", f"cpu_threads={threads}"]))
    assert torch.get_num_threads() == threads
    run(compose_train(tmp_path / "b", [*TINY, "trainer.max_steps=1"]))
    assert torch.get_num_threads() == command_keys.DEFAULT_THREADS


@pytest.mark.parametrize("resuming", [False, True])
def test_lightning_notices_that_say_nothing_about_the_run_are_left_out(resuming):
    """Every run printed Lightning's advertisement for its cloud logger, a deprecation inside Lightning
    and a warning about the module's own batch hook; every resumed run, that its folder has checkpoints."""
    notices = [
        "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead.",
        "You have overridden `on_before_batch_transfer` in `LightningModule` but have passed in a "
        "`LightningDataModule`. It will use the implementation from `LightningModule` instance.",
        "Checkpoint directory /runs/a/checkpoints exists and is not empty.",
        "The number of training batches (2) is smaller than the logging interval.",  # (about this run: kept)
    ]
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    rank_zero.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_lightning(resuming)
            for notice in notices:
                warnings.warn(notice, UserWarning, stacklevel=1)
            rank_zero.warning("💡 Tip: For seamless cloud logging, try installing [litlogger]")
            rank_zero.warning("GPU available: False, used: False")
    finally:
        rank_zero.removeHandler(handler)
    assert [str(w.message) for w in caught] == notices[2 + resuming :]
    assert seen == ["GPU available: False, used: False"]
