"""MediaDataModule: splits, loaders, workers that open their own decoders, the run's skip list."""

from __future__ import annotations

import itertools
import shutil
from types import SimpleNamespace

import torch

from ttt_mm.data import FolderSource, MediaDataModule, SyntheticSource, io


def test_synthetic_default_batches():
    dm = MediaDataModule(
        SyntheticSource(num_clips=30, duration=6.0),
        batch_size=3,
        size=32,
        clip_seconds=1.0,
        val_fraction=0.2,
        test_fraction=0.1,
    )
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 30 and sizes["val"] > 0 and sizes["test"] > 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (3, 16000) and batch["video"].shape == (3, 8, 3, 32, 32)
    assert batch["audio_lengths"].tolist() == [16000] * 3 and batch["video_lengths"].tolist() == [8] * 3
    assert batch["label"].dtype == torch.long and len(batch["path"]) == 3
    val = list(dm.val_dataloader())
    windows = sum(len(b["path"]) for b in val)
    assert windows == sizes["val"] * 6  # every val clip walked whole in 1 s windows
    assert val[0]["window_index"][:3].tolist() == [0, 1, 2]


def test_workers_open_their_own_decoders_and_share_the_skip_list(media, tmp_path):
    for name in ("av", "faststart", "zero", "corrupt"):
        shutil.copy(media[name], tmp_path / f"{name}.mp4" if name != "corrupt" else tmp_path / "corrupt.mkv")
    root = tmp_path / "run"
    dm = MediaDataModule(
        FolderSource(str(tmp_path)),
        batch_size=2,
        num_workers=2,
        size=32,
        clip_seconds=1.0,
        val_fraction=0.0,
        test_fraction=0.0,
        max_retries=20,
    )
    dm.trainer = SimpleNamespace(default_root_dir=str(root))  # what Lightning attaches
    dm.setup("fit")
    io.clear_caches()
    io.read_video(tmp_path / "av.mp4", 0.0, 0.5, fps=8, size=32)  # the parent holds a reader when workers fork
    batches = list(itertools.islice(dm.train_dataloader(), 2))  # the training stream is endless
    assert sum(len(b["path"]) for b in batches) == 4
    assert {p.rsplit("/", 1)[-1] for b in batches for p in b["path"]} <= {"av.mp4", "faststart.mp4"}
    assert len(io._video_readers) == 1 and len(io._audio_tracks) == 0  # workers decoded with their own readers
    lines = (root / "skipped_media.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0].rsplit("/", 1)[-1] for line in lines) == ["corrupt.mkv", "zero.mp4"]
    dm2 = MediaDataModule(FolderSource(str(tmp_path)), size=32, val_fraction=0.0, test_fraction=0.0)
    dm2.trainer = SimpleNamespace(default_root_dir=str(root))
    dm2.setup("fit")
    assert len(dm2.splits["train"]) == 2  # known bad files are not listed again


def test_epochs_draw_new_windows_and_a_resumed_run_continues_the_stream():
    dm = MediaDataModule(
        SyntheticSource(num_clips=4, duration=20.0),
        batch_size=4,
        size=32,
        clip_seconds=1.0,
        val_fraction=0.0,
        test_fraction=0.0,
    )
    dm.setup("fit")
    first, second, third = itertools.islice(dm.train_dataloader(), 3)  # 4 clips: one batch is one epoch
    assert sorted(first["path"]) == sorted(second["path"])  # every clip once per epoch ...
    assert not torch.equal(first["start"], second["start"])  # ... at new random windows
    dm.trainer = SimpleNamespace(
        global_step=2, accumulate_grad_batches=1, global_rank=0, world_size=1, default_root_dir="."
    )
    resumed = next(iter(dm.train_dataloader()))
    assert resumed["path"] == third["path"] and torch.equal(resumed["start"], third["start"])
