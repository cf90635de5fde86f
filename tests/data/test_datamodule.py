"""MediaDataModule: splits, loaders, workers that open their own decoders, the run's skip list,
files chosen by their streams from the dataset index, small folders that still get validation."""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import decord
import lightning as L
import numpy as np
import pytest
import torch
from mediafiles import write_video
from omegaconf import OmegaConf

from ttt_mm.data import (
    ClipInfo,
    FolderSource,
    ManifestSource,
    MediaDataModule,
    SkipList,
    SyntheticSource,
    WindowDataset,
    decode,
    reading_notes,
)
from ttt_mm.data.datamodule import validation_unit
from ttt_mm.data.decode import MediaInfo
from ttt_mm.tasks.common import CONF_DIR, ConfigError
from ttt_mm.tasks.probe import main as probe_command
from ttt_mm.tokenizers import AudioTokenizer


def synthetic_module(num_clips: int, duration: float, **kwargs) -> MediaDataModule:
    """Synthetic clips read at 32 px in 1 s windows."""
    return MediaDataModule(SyntheticSource(num_clips=num_clips, duration=duration), size=32, clip_seconds=1.0, **kwargs)


def at_step(step: int, rank: int = 0, world: int = 1, accumulate: int = 1) -> SimpleNamespace:
    """What the data module reads of a trainer: where a (resumed) fit stands, and in which process."""
    return SimpleNamespace(
        global_step=step,
        accumulate_grad_batches=accumulate,
        global_rank=rank,
        world_size=world,
        default_root_dir=".",
        overfit_batches=0,
        limit_train_batches=1.0,
    )


def test_synthetic_default_batches():
    dm = synthetic_module(30, 6.0, batch_size=3, val_fraction=0.2, test_fraction=0.1)
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


def test_loader_workers_share_out_the_evaluation_windows_each_once():
    dm = synthetic_module(10, 3.0, batch_size=2, val_fraction=0.5, test_fraction=0.0, num_workers=2)
    dm.setup("fit")
    seen = [(path, float(start)) for b in dm.val_dataloader() for path, start in zip(b["path"], b["start"])]
    assert len(dm.splits["val"]) > 2
    assert sorted(seen) == sorted((clip.name, float(t)) for clip in dm.splits["val"] for t in range(3))


def test_a_sigterm_to_the_process_group_leaves_the_loader_workers_to_their_reader():
    """``timeout`` or a scheduler signals every process of the job: a loader worker killed by it ended
    the run as a crash ("DataLoader worker exited unexpectedly") before Lightning could stop it cleanly."""
    dm = synthetic_module(10, 3.0, batch_size=2, val_fraction=0.5, test_fraction=0.0, num_workers=1)
    dm.setup("fit")
    batches = iter(dm.val_dataloader())
    seen = len(next(batches)["path"])
    (worker,) = multiprocessing.active_children()
    os.kill(worker.pid, signal.SIGTERM)
    worker.join(timeout=2.0)
    assert worker.is_alive()
    seen += sum(len(b["path"]) for b in batches)
    assert seen == len(dm.splits["val"]) * 3 and not dm.failed_when_read()


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
    )
    dm.trainer = SimpleNamespace(default_root_dir=str(root))  # what Lightning attaches
    dm.setup("fit")
    decode.clear_caches()
    decode.read_video(tmp_path / "av.mp4", 0.0, 0.5, fps=8, size=32)  # the parent holds a reader when workers fork
    batches = list(itertools.islice(dm.train_dataloader(), 2))  # the training stream is endless
    assert sum(len(b["path"]) for b in batches) == 4
    assert {p.rsplit("/", 1)[-1] for b in batches for p in b["path"]} <= {"av.mp4", "faststart.mp4"}
    assert (
        len(decode.video._video_readers) == 1 and len(decode.audio._audio_tracks) == 0
    )  # workers decoded with their own readers
    lines = (root / "skipped_media.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0].rsplit("/", 1)[-1] for line in lines) == ["corrupt.mkv", "zero.mp4"]
    assert dm.failed_when_read() == {}  # (the index left those out: none failed when read)
    SkipList(root / "skipped_media.tsv").add(str(tmp_path / "av.mp4"), "failed in a worker")  # (its own list)
    assert dm.failed_when_read() == {"train": [str(tmp_path / "av.mp4")]}
    stale = Path(reading_notes._note(999999999, 7))  # of a run that is over (no such pid now)
    stale.write_text(str(tmp_path / "av.mp4"))
    dm2 = MediaDataModule(FolderSource(str(tmp_path)), size=32, val_fraction=0.0, test_fraction=0.0)
    dm2.trainer = SimpleNamespace(default_root_dir=str(root))
    dm2.setup("fit")
    assert len(dm2.splits["train"]) == 2  # known bad files are not listed again
    assert not stale.exists()
    assert not list(
        stale.parent.glob(os.path.basename(reading_notes._note(os.getpid(), "*")))
    )  # each worker's note went with its read


def test_a_reader_left_in_a_reference_cycle_is_never_freed_in_a_forked_child(media):
    """A decord reader that is garbage in a reference cycle (an exception kept with its traceback keeps
    the frames that held it) must be freed before a fork, not by a child's collector: its decoder
    threads are not in the child, and freeing it there waits for them forever."""

    class Cycle:
        pass

    gc.disable()  # the parent's own collector must not free it first
    try:
        held = Cycle()
        held.itself, held.reader = held, decord.VideoReader(str(media["av"]), num_threads=1)
        held.reader.get_batch([0, 1, 2])  # its decoder thread is running
        del held
        child = multiprocessing.get_context("fork").Process(target=gc.collect)
        child.start()
    finally:
        gc.enable()
    child.join(30)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung and child.exitcode == 0


def test_epochs_draw_new_windows_and_a_resumed_run_continues_the_stream():
    dm = synthetic_module(4, 20.0, batch_size=4, val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    first, second, third = itertools.islice(dm.train_dataloader(), 3)  # 4 clips: one batch is one epoch
    assert sorted(first["path"]) == sorted(second["path"])  # every clip once per epoch ...
    assert not torch.equal(first["start"], second["start"])  # ... at new random windows
    dm.trainer = at_step(2)
    resumed = next(iter(dm.train_dataloader()))
    assert resumed["path"] == third["path"] and torch.equal(resumed["start"], third["start"])
    dm.trainer = at_step(1, accumulate=2)  # an optimizer step of two batches
    resumed = next(iter(dm.train_dataloader()))
    assert resumed["path"] == third["path"] and torch.equal(resumed["start"], third["start"])


def test_each_rank_draws_its_own_share_of_the_random_windows():
    dm = synthetic_module(4, 20.0, batch_size=2, val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    firsts = []
    for rank in range(2):
        dm.trainer = at_step(0, rank=rank, world=2)
        firsts += next(iter(dm.train_dataloader()))["path"]
    assert sorted(firsts) == sorted(clip.name for clip in dm.splits["train"])  # one epoch, shared out


def test_a_resume_with_another_seed_or_other_training_clips_is_warned_about(caplog):
    def module(seed=0, clips=4):
        dm = MediaDataModule(SyntheticSource(num_clips=clips), seed=seed, val_fraction=0.0, test_fraction=0.0)
        dm.setup("fit")
        dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), is_global_zero=True, default_root_dir=".")
        return dm

    saved = module().state_dict()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        module().load_state_dict(saved)
        assert not caplog.records
        module(seed=1, clips=5).load_state_dict(saved)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("resuming with other data settings (seed 0 -> 1, training clips 4 (")
    # the files, not only the digest of their list
    assert line.endswith("; training clips since the checkpoint: 1 added (synthetic/seed=0/index=4@0-60)")


def test_a_checkpoint_carries_its_training_files_failures_to_a_resume_in_another_folder(tmp_path, caplog):
    """Resumed with a skip list of its own (a checkpoint copied elsewhere), the run knew nothing of a file
    that had failed part-way: its stream counted all of that file's windows and ran behind for good."""

    def module(folder):
        dm = MediaDataModule(
            SyntheticSource(num_clips=4), val_fraction=0.0, test_fraction=0.0, skip_list=str(folder / "skips.tsv")
        )
        dm.setup("fit")
        dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), is_global_zero=True, default_root_dir=".")
        return dm

    first = module(tmp_path / "a")
    damaged, other = first.splits["train"][1].name, "not/a/training/file.wav"
    SkipList(str(tmp_path / "a" / "skips.tsv")).add(damaged, "1280 NaN/Inf audio samples", read_to=15.36)
    SkipList(str(tmp_path / "a" / "skips.tsv")).add(other, "unreadable")  # (by a worker: the file has it)
    saved = first.state_dict()
    resumed, other_process = module(tmp_path / "b"), module(tmp_path / "b")
    other_process.trainer.is_global_zero = False
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        other_process.load_state_dict(saved)  # (another process took the list's lock first: the first still says it)
        resumed.load_state_dict(saved)
    again = SkipList(str(tmp_path / "b" / "skips.tsv"))
    assert again.reasons == {damaged: "1280 NaN/Inf audio samples"} and again.read_to == {damaged: 15.36}
    assert resumed.skips.readable_until(first.splits["train"][1]) == 15.36  # (what the stream it builds reads)
    assert resumed.failed_when_read() == {}  # (it failed in the checkpoint's run, not in this one)
    assert "the checkpoint's run listed 1 training files that failed when read" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        module(tmp_path / "a").load_state_dict(saved)  # (resumed in place: its own list has them)
    assert "the checkpoint's run listed" not in caplog.text


def test_a_resume_whose_validation_clips_changed_is_warned_about(caplog):
    """Its val/* and the best checkpoint's ranking then mix two validation sets, which went unsaid (the
    data order, and its warning, concern the training clips only)."""

    def module():
        dm = MediaDataModule(SyntheticSource(num_clips=8), val_fraction=0.5, test_fraction=0.0)
        dm.setup("fit")
        dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), is_global_zero=True, default_root_dir=".")
        return dm

    saved = module().state_dict()
    fewer = module()
    gone = fewer.splits["val"].pop()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        module().load_state_dict(saved)
        assert not caplog.records
        fewer.load_state_dict(saved)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"validation clips since the checkpoint: 1 removed ({gone.segment}): val/* from now on")


def test_a_resume_that_validates_in_other_windows_is_warned_about(caplog):
    """Resumed with data.eval_window_seconds (or data.clip_seconds, which it defaults to) changed, its
    val/* and the best checkpoint's ranking mixed scores of two window lengths without a word."""

    def module(**windows):
        dm = MediaDataModule(SyntheticSource(num_clips=8), val_fraction=0.5, test_fraction=0.0, **windows)
        dm.setup("fit")
        dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), is_global_zero=True, default_root_dir=".")
        return dm

    saved = module(clip_seconds=2.0).state_dict()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        module(clip_seconds=2.0).load_state_dict(saved)
        module(clip_seconds=1.0, eval_window_seconds=2.0).load_state_dict(saved)  # (validates as it did)
        module(clip_seconds=2.0 + 1e-12).load_state_dict(saved)  # (the same up to rounding)
        assert not [r for r in caplog.records if "validat" in r.getMessage()]
        module(clip_seconds=1.0).load_state_dict(saved)
        module(clip_seconds=1.0).load_state_dict(saved | {"eval window": 7 * 1024 / 22050})
    lines = [r.getMessage() for r in caplog.records if "validat" in r.getMessage()]
    assert lines[0] == (
        "validation windows of 1 s (data.clip_seconds), the checkpoint's run validated in 2 s: val/* from now on "
        "are not comparable with the earlier validations', nor is the best checkpoint's score "
        "(data.eval_window_seconds=2 validates as it did)"
    )
    typed = float(re.search(r"data.eval_window_seconds=([\d.]+) validates", lines[1])[1])  # (whole steps, typed)
    assert typed == pytest.approx(7 * 1024 / 22050, rel=1e-14) and len(lines) == 2


def test_the_test_after_a_fit_says_how_its_files_are_read_once(monkeypatch):
    """A truncated test file was read as far as it went without its warning: the data was listed for the
    fit, which says its notes of train and val files only, and the test's setup found it listed."""
    from ttt_mm.data import datamodule

    said = []
    monkeypatch.setattr(datamodule, "say_how_read", lambda selection, spec, clips: said.append(list(clips)))
    dm = MediaDataModule(SyntheticSource(num_clips=40), val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    assert said == [dm.splits["train"] + dm.splits["val"]]
    dm.setup("test")
    dm.setup("test")  # (a second test of the run: said already)
    assert said[1:] == [dm.splits["test"]] and dm.splits["test"]


def test_the_clip_records_are_made_once_not_at_every_save(monkeypatch):
    from ttt_mm.data import datamodule

    made = []
    monkeypatch.setattr(datamodule, "clip_record", lambda clips: made.append(len(clips)) or b"")
    dm = MediaDataModule(SyntheticSource(num_clips=8), val_fraction=0.5, test_fraction=0.0)
    dm.setup("fit")
    dm.state_dict(), dm.state_dict()
    assert sorted(made) == sorted([len(dm.splits["train"]), len(dm.splits["val"])])
    dm.splits["train"].pop()  # (the list changed: made again)
    dm.state_dict()
    assert len(made) == 3


def test_a_resume_after_a_file_was_rewritten_with_another_length_is_warned_about(caplog):
    """Its rows walk another number of windows, so the order after it changes; the list of names alone
    did not say."""

    def module(seconds: float):
        dm = MediaDataModule(SyntheticSource(num_clips=4), val_fraction=0.0, test_fraction=0.0)
        dm.setup("fit")
        first, *rest = dm.splits["train"]
        info = MediaInfo(
            first.name, 1000, has_audio=True, audio_duration=seconds, has_video=True, video_duration=seconds
        )
        dm.splits["train"] = [dataclasses.replace(first, info=info), *rest]
        dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), is_global_zero=True, default_root_dir=".")
        return dm

    saved = module(20.0).state_dict()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        module(20.0).load_state_dict(saved)
        assert not caplog.records
        module(12.5).load_state_dict(saved)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("resuming with other data settings (training clip lengths ")
    first = module(20.0).splits["train"][0].segment
    assert line.endswith(f"; training clips since the checkpoint: 1 with another length ({first})")


def test_loader_workers_are_forked_whatever_the_default():
    """A worker names its reading note after its parent (`reading_notes`): started by a fork server (the
    default on Linux from Python 3.14), its parent is that server, and a crashed decoder's file went
    unnamed (the run ended, where it costs one file)."""
    for stream in (False, True):
        dm = synthetic_module(6, 3.0, batch_size=2, val_fraction=0.5, test_fraction=0.0, num_workers=1, stream=stream)
        dm.setup("fit")
        for loader in (dm.train_dataloader().loader, dm.val_dataloader().loader):
            assert loader.multiprocessing_context.get_start_method() == "fork"
    serial = synthetic_module(6, 3.0, val_fraction=0.5, test_fraction=0.0, num_workers=0)
    serial.setup("fit")
    assert serial.train_dataloader().loader.multiprocessing_context is None  # (no worker: nothing to start)


def test_a_streamed_run_says_once_that_it_trains_with_one_worker(caplog):
    """It was said again with every epoch's loader (four times in a run of eight steps), and by every rank."""
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        dm = MediaDataModule(
            SyntheticSource(num_clips=4, duration=4.0), size=32, clip_seconds=1.0, stream=True, num_workers=3
        )
        dm.setup("fit")
        loaders = [dm.train_dataloader() for _ in range(3)]
    assert [loader.loader.num_workers for loader in loaders] == [1, 1, 1]
    said = [r.message for r in caplog.records if "trains with one loader worker" in r.message]
    assert said == [
        "data.stream=true trains with one loader worker (its rows walk files in order), not data.num_workers=3 "
        "(which validation and testing use)"
    ]
    assert dm.val_dataloader().loader.num_workers == 3
    timed = MediaDataModule(
        SyntheticSource(num_clips=4, duration=4.0), size=32, stream=True, num_workers=1, timeout=7.0
    )
    timed.setup("fit")
    assert timed.train_dataloader().loader.timeout == 7.0  # (data.timeout: a stream's hung read waited forever)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        crops = MediaDataModule(SyntheticSource(num_clips=4, duration=4.0), size=32, clip_seconds=1.0, num_workers=3)
        crops.setup("fit")
        loader = crops.train_dataloader()
    assert crops.stream is False and isinstance(loader.loader.dataset, WindowDataset) and loader.loader.num_workers == 3
    assert not [r for r in caplog.records if "trains with one loader worker" in r.message]


def test_the_audio_context_read_covers_what_the_tokenizer_needs():
    source = SyntheticSource(num_clips=2, duration=4.0)
    dm = MediaDataModule(source, ["audio"], 1.0, batch_size=2, val_fraction=0.0, test_fraction=0.0)
    tokenizer = AudioTokenizer(16, win_length=1024, hop_length=256)  # 768 samples before a window's first frame
    dm.cover_context(tokenizer, AudioTokenizer(16))  # the larger need of the two
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio_context"].shape[-1] == 768
    assert tokenizer(batch).targets.shape[1] > 0  # (400 samples, the default, would be refused)


class _Recorder(L.LightningModule):
    """Records each training batch's clips and window starts; learns nothing that matters."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def training_step(self, batch, index):
        self.seen.append((tuple(batch["path"]), tuple(batch["start"].tolist())))
        return self.weight**2 + 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("stream", [False, True])
def test_epochs_ended_by_limit_train_batches_go_on_and_overfit_repeats_its_batch(tmp_path, stream):
    def fit(**trainer_kwargs):
        source = SyntheticSource(num_clips=8, duration=8.0)
        dm = MediaDataModule(source, batch_size=2, size=32, clip_seconds=1.0, val_fraction=0.0, stream=stream)
        model = _Recorder()
        trainer = L.Trainer(
            max_steps=6,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            default_root_dir=str(tmp_path),
            use_distributed_sampler=False,
            **trainer_kwargs,
        )
        trainer.fit(model, datamodule=dm)
        return model.seen

    reload = OmegaConf.load(Path(CONF_DIR) / "trainer" / "default.yaml").reload_dataloaders_every_n_epochs
    epochs = fit(limit_train_batches=2, reload_dataloaders_every_n_epochs=reload)
    endless = fit()
    assert len(epochs) == 6 and epochs == endless  # three epochs of two batches: the one stream, going on
    overfit = fit(overfit_batches=1, reload_dataloaders_every_n_epochs=reload)
    assert len(overfit) == 6 and overfit == [overfit[0]] * 6  # one batch, trained on again and again


def folder_module(root, run_dir, **kwargs) -> MediaDataModule:
    dm = MediaDataModule(FolderSource(str(root)), size=32, clip_seconds=1.0, batch_size=2, **kwargs)
    dm.trainer = SimpleNamespace(default_root_dir=str(run_dir))
    return dm


def test_a_video_config_trains_on_the_videos_of_a_mixed_folder(media, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, target in [("av", "a.mp4"), ("video_only", "b.mp4"), ("wav16k", "c.wav"), ("flac16k", "d.flac")]:
        shutil.copy(media[name], data / target)
    dm = folder_module(data, tmp_path / "run", modalities=["video"], val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    assert sorted(c.key for c in dm.splits["train"]) == ["a.mp4", "b.mp4"]
    assert all(c.info.video_backend == "decord" for c in dm.clips)
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 8, 3, 32, 32)
    skipped = dict(line.split("\t") for line in (tmp_path / "run" / "skipped_media.tsv").read_text().splitlines())
    assert skipped == {str(data / n): "no video stream (the model reads video)" for n in ("c.wav", "d.flac")}
    audio = folder_module(data, tmp_path / "run2", modalities=["audio"], val_fraction=0.0, test_fraction=0.0)
    audio.setup("fit")
    assert sorted(c.key for c in audio.splits["train"]) == ["a.mp4", "c.wav", "d.flac"]
    unclocked = folder_module(
        data, tmp_path / "run3", modalities=["audio"], fps=None, val_fraction=0.0, test_fraction=0.0
    )
    unclocked.setup("fit")  # a stream not read needs no clock (it failed at the first batch: a window grid of None)
    assert next(iter(unclocked.train_dataloader()))["audio"].shape[0] == 2
    with pytest.raises(ValueError, match=r"data.fps is null, but this run reads video: set it \(the default is 8"):
        folder_module(data, tmp_path / "run4", modalities=["video"], fps=None)


@pytest.mark.parametrize("policy", ["skip", "silence"])
def test_videos_without_sound_follow_the_missing_audio_policy(media, tmp_path, policy):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(media["av"], data / "a.mp4")
    shutil.copy(media["video_only"], data / "silent.mp4")
    dm = folder_module(data, tmp_path / "run", missing_audio=policy, val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    keys = sorted(c.key for c in dm.splits["train"])
    if policy == "skip":
        assert keys == ["a.mp4"] and "no audio stream" in dm.rejected[str(data / "silent.mp4")]
        return
    assert keys == ["a.mp4", "silent.mp4"]
    batches = list(itertools.islice(dm.train_dataloader(), 2))
    rows = [(p, a) for b in batches for p, a in zip(b["path"], b["audio"])]
    silent = [a for p, a in rows if p.endswith("silent.mp4")]
    assert silent and all(a.shape == (16000,) and a.abs().max() == 0 for a in silent)
    assert all(a.abs().max() > 0 for p, a in rows if p.endswith("a.mp4"))


def test_no_usable_file_is_one_error_with_the_reasons_counted(media, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, target in [("zero", "a.mp4"), ("corrupt", "b.mkv"), ("truncated", "c.mp4"), ("wav16k", "d.wav")]:
        shutil.copy(media[name], data / target)
    dm = folder_module(data, tmp_path / "run", modalities=["video"])
    with pytest.raises(ValueError) as caught:
        dm.setup("fit")
    assert str(caught.value) == (
        "none of the 4 files can be used: 2 x not a readable media container, 1 x empty file, 1 x no video stream; "
        f"each is listed with its reason in {tmp_path / 'run' / 'skipped_media.tsv'}"
    )


def test_sound_files_read_as_videos_say_which_modalities_to_set(media, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        shutil.copy(media["wav16k"], data / f"{i}.wav")
    dm = folder_module(data, tmp_path / "run", modalities=["video"])
    with pytest.raises(ValueError, match=r"3 x no video stream \(3 have no video stream: files of audio alone need "):
        dm.setup("fit")
    dm = folder_module(data, tmp_path / "run2", modalities=["audio", "video"])
    with pytest.raises(ValueError, match=r"need data.modalities=\[audio\] tokenizer=audio\); each is listed"):
        dm.setup("fit")


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_small_folders_still_validate(tmp_path, caplog, count):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(count):
        write_video(data / f"v{i}.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=None)
    dm = folder_module(data, tmp_path / "run", modalities=["video"], val_fraction=0.05, test_fraction=0.0)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        dm.setup("fit")
    train, val = ({c.key for c in dm.splits[s]} for s in ("train", "val"))
    warnings = [r.message for r in caplog.records if "validating on the training files" in r.message]
    if count >= 3:  # one file moves to validation, the others train
        assert len(val) == 1 and not val & train and len(train) == count - 1 and not warnings
    else:  # too few to spare one: validate on the training files, and say so once
        assert val == train and len(train) == count and len(warnings) == 1
        assert dm.split_summary() == f"{count} files: {count} train, {count} val (the training files), 0 test"
    assert sum(len(b["path"]) for b in dm.val_dataloader()) > 0  # a validation metric will be logged


def test_a_long_recording_nearest_the_validation_hash_is_not_moved_out_of_training(tmp_path, caplog):
    """Four files, none hashed into validation: the nearest went, though it held most of the clips."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        write_video(data / f"v{i}.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=None)
    short = folder_module(data, tmp_path / "short", modalities=["video"], val_fraction=1e-9, test_fraction=0.0)
    short.setup("fit")
    (nearest,) = {c.file_key for c in short.splits["val"]}  # (all as short: the nearest hash's)
    write_video(data / nearest, seconds=8.0, fps=8, width=32, height=32, audio_rate=None)
    dm = folder_module(data, tmp_path / "run", modalities=["video"], val_fraction=1e-9, test_fraction=0.0)
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        dm.setup("fit")
    (val,) = {c.file_key for c in dm.splits["val"]}
    assert val != nearest and nearest in {c.file_key for c in dm.splits["train"]}
    assert f"validating on {val} (1.0 s of the training files' 11.0 s)" in "\n".join(caplog.messages)
    assert validation_unit(["a", "b", "c"], Counter(a=4, b=3, c=3)) == "b"  # (none small enough: the shortest)
    # evaluating a checkpoint of a run that validated on the long one (an older version's choice): that one
    older = folder_module(data, tmp_path / "eval", modalities=["video"], val_fraction=1e-9, test_fraction=0.0)
    older.trained_on = {str(data / f"v{i}.mp4") for i in range(4)} - {str(data / nearest)}
    older.setup("validate")
    assert {c.file_key for c in older.splits["val"]} == {nearest}
    recorded = folder_module(data, tmp_path / "again", modalities=["video"], val_fraction=1e-9, test_fraction=0.0)
    recorded.trained_on, recorded.validated_on = older.trained_on | {str(data / val)}, {str(data / val)}
    recorded.setup("validate")  # (its record of validation names the file, though it is listed as trained on too)
    assert {c.file_key for c in recorded.splits["val"]} == {val}


def test_a_resumed_run_keeps_validating_on_its_file_when_a_new_one_hashes_into_validation(media, tmp_path, caplog):
    """The file the run had moved to validation went back into training once an added file hashed into
    validation: the resumed run trained on what its val/* had measured."""
    data = tmp_path / "data"
    data.mkdir()
    for name in _hashed("take", 0.15, 1.0, count=5):
        shutil.copy(media["wav16k"], data / name)
    fractions = {"modalities": ["audio"], "val_fraction": 0.05, "test_fraction": 0.05}
    first = folder_module(data, tmp_path / "run", **fractions)
    first.setup("fit")
    ((moved,), trained) = ({str(data / c.file_key) for c in first.splits[s]} for s in ("val", "train"))
    (added,) = _hashed("clip", 0.05, 0.1)
    shutil.copy(media["wav16k"], data / added)
    resumed = folder_module(data, tmp_path / "run", **fractions)
    resumed.trained_on, resumed.validated_on = trained, {moved}
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        resumed.setup("fit")
    assert {str(data / c.file_key) for c in resumed.splits["val"]} == {moved, str(data / added)}
    assert {str(data / c.file_key) for c in resumed.splits["train"]} == trained
    assert f"validation keeps {os.path.basename(moved)}, which the checkpoint's run validated on" in caplog.text
    # a run that validated on its training files (too few to hold one out) keeps training on them
    few = folder_module(data, tmp_path / "few", **fractions)
    few.trained_on = few.validated_on = trained | {moved}
    few.setup("fit")
    assert {str(data / c.file_key) for c in few.splits["train"]} == trained | {moved}


def test_training_says_how_many_files_each_split_has_and_names_the_few_it_validates_and_tests_on(tmp_path, caplog):
    """Nothing said which files val/* was measured on: a user matched the score against evaluate's
    per-file output to find out."""
    data = tmp_path / "data"
    data.mkdir()
    rows = ["path,split"]
    for i, split in enumerate(["train", "train", "train", "val", "test", "test"]):
        write_video(data / f"v{i}.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=None)
        rows.append(f"v{i}.mp4,{split}")
    (data / "m.csv").write_text("\n".join(rows) + "\n")
    dm = MediaDataModule(ManifestSource(str(data / "m.csv")), modalities=["video"], size=32, clip_seconds=1.0)
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        dm.setup("fit")
    assert "data: 6 files: 3 train, 1 val (v3.mp4), 2 test (v4.mp4, v5.mp4)" in caplog.messages


def test_a_span_that_fails_when_read_is_counted_in_its_own_split(tmp_path):
    """A span's own trouble is listed under its span's name, which the split lookup did not know: a failing
    validation span was reported as a training file."""
    dm = MediaDataModule(SyntheticSource(num_clips=2), skip_list=str(tmp_path / "skips.tsv"))
    dm.setup("fit")
    val = ClipInfo(str(tmp_path / "f.wav"), start=0.0, end=0.2)
    dm.splits["val"] = [val]
    SkipList(str(tmp_path / "skips.tsv")).add(val.segment, "only 0.2 s of audio in the clip")
    assert dm.failed_when_read() == {"val": [val.segment]}


@pytest.mark.parametrize("modalities", [["audio"], ["audio", "video"]])
def test_a_run_reading_only_the_sound_of_videos_says_so_and_how_to_read_the_pictures(tmp_path, caplog, modalities):
    """A probe's manifest of videos (``data=manifest``: audio unless told) trained on their sound without a word."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_video(data / f"v{i}.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=16000)
    (data / "m.csv").write_text("path\n" + "".join(f"v{i}.mp4\n" for i in range(3)))
    dm = MediaDataModule(ManifestSource(str(data / "m.csv")), modalities=modalities, size=32, clip_seconds=1.0)
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        dm.setup("fit")
    said = [m for m in caplog.messages if "reads the sound alone" in m]
    assert said == (
        []
        if len(modalities) == 2
        else [
            "data: 3 of the 3 files are videos, of which this run reads the sound alone (data.modalities=[audio]); "
            "data.modalities=[audio,video] tokenizer=av reads both, data.modalities=[video] tokenizer=video the "
            "pictures"
        ]
    )


@pytest.mark.parametrize("count", [1, 2])
def test_a_folder_of_one_or_two_files_trains_on_them_whatever_their_names_hash_to(tmp_path, caplog, count):
    """With one file hashed into validation, training ended at launch: 'no training clips among 1'."""
    held_out = [n for n in (f"v{i}.mp4" for i in range(200)) if ClipInfo(n, key=n).split_of(0.5, 0.45) != "train"]
    data = tmp_path / "data"
    data.mkdir()
    for name in held_out[:count]:
        write_video(data / name, seconds=1.0, fps=8, width=32, height=32, audio_rate=None)
    dm = folder_module(data, tmp_path / "run", modalities=["video"], val_fraction=0.5, test_fraction=0.45)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        dm.setup("fit")
    assert sorted(c.key for c in dm.splits["train"]) == sorted(held_out[:count]) and not dm.splits["test"]
    assert {c.key for c in dm.splits["val"]} == set(held_out[:count])  # validated on, as any tiny folder is
    assert f"only {count} usable file(s), none hashed into training: training on them all" in caplog.text


def test_a_manifest_that_fixes_every_split_and_none_to_val_is_said_so(tmp_path, caplog):
    """Files whose split a manifest fixes are never moved to validation; the warning names that cause
    rather than a lack of files."""
    data = tmp_path / "data"
    data.mkdir()
    rows = ["path,split"]
    for i in range(4):
        write_video(data / f"v{i}.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=None)
        rows.append(f"v{i}.mp4,{'test' if i == 3 else 'train'}")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    dm = MediaDataModule(ManifestSource(str(data / "manifest.csv")), modalities=["video"], size=32, clip_seconds=1.0)
    dm.trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"))
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        dm.setup("fit")
    assert {c.key for c in dm.splits["val"]} == {c.key for c in dm.splits["train"]} == {"v0.mp4", "v1.mp4", "v2.mp4"}
    warnings = [r.message for r in caplog.records if "validating on the training files" in r.message]
    assert warnings == [
        "the manifest's split column puts no row in val: validating on the training files, "
        "so val/* measures fit, not generalisation"
    ]


def test_validation_on_the_training_files_is_not_said_to_be_never_trained_on(tmp_path):
    """One file hashed, one whose split the manifest fixes: validation fell back to the training files, and
    the summary went on that the validation split held a file "never trained on" (it compared the hashed
    files alone with every training file)."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        write_video(data / f"v{i}.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=None)
    (data / "manifest.csv").write_text("path,start,end,split\nv0.mp4,,,\nv1.mp4,0,0.5,train\nv1.mp4,0.5,1,test\n")
    dm = MediaDataModule(ManifestSource(str(data / "manifest.csv")), modalities=["video"], size=32, clip_seconds=0.5)
    dm.trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"))
    dm.setup("fit")
    assert dm.split_summary() == "2 files: 2 train, 2 val (the training files), 1 test (v1.mp4)"


def test_a_manifest_whose_val_rows_cannot_be_used_says_so_rather_than_that_it_has_none(tmp_path, caplog):
    """Its one val row, of a file that cannot be read, was left out: the warning said that the split
    column put no file in val, and evaluate's split=val error named data.val_fraction, unused there."""
    from ttt_mm.tasks.evaluate import select_clips

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_video(data / f"v{i}.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=None)
    (data / "bad.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (data / "manifest.csv").write_text("path,split\nv0.mp4,train\nv1.mp4,train\nv2.mp4,test\nbad.mp4,val\n")
    source = ManifestSource(str(data / "manifest.csv"))
    dm = MediaDataModule(source, modalities=["video"], size=32, clip_seconds=1.0)
    dm.trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"))
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        dm.setup("fit")
    said = f"the manifest's 1 val row(s) cannot be used, listed with their reasons in {tmp_path / 'run'}"
    warnings = [r.message for r in caplog.records if "validating on the training files" in r.message]
    assert warnings == [
        f"{said}/skipped_media.tsv: validating on the training files, so val/* measures fit, not generalisation"
    ]
    later = MediaDataModule(source, modalities=["video"], size=32, clip_seconds=1.0)  # (evaluate's)
    later.skip_list_path = str(tmp_path / "evaluated" / "skipped_media.tsv")
    with pytest.raises(
        ConfigError, match=r"^no clips in split 'val' of the data config \(the manifest's 1 val row\(s\) cannot be used"
    ):
        select_clips(later, "val")


def test_a_files_rows_that_name_their_split_are_not_moved_to_validation(tmp_path):
    """A file with rows of two splits and a row without one was movable, and all its training rows went to val."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_video(data / f"v{i}.mp4", seconds=1.5, fps=8, width=32, height=32, audio_rate=None)
    rows = ["v0.mp4,0,0.5,train", "v0.mp4,0.5,1,test", "v0.mp4,1,1.5,", "v1.mp4,,,train", "v2.mp4,,,train"]
    (data / "m.csv").write_text("path,start,end,split\n" + "\n".join(rows) + "\n")
    dm = MediaDataModule(ManifestSource(str(data / "m.csv")), modalities=["video"], size=32, clip_seconds=0.5)
    dm.trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"))
    dm.setup("fit")
    assert "v0.mp4@0-0.5" in {c.segment.removeprefix(f"{data}/") for c in dm.splits["train"]}
    assert all(c.split != "val" for c in dm.splits["val"])  # validation on the training files, none moved


def test_the_probe_commands_bad_rows_are_skipped_with_their_reasons_like_a_folders(tmp_path, caplog):
    """A manifest written by the probe command lists unreadable files with an error: training leaves
    them out with one log line and lists each in the skip list, as it does for a folder's bad files."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_video(data / f"v{i}.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=None)
    (data / "empty.mp4").write_bytes(b"")
    assert probe_command([str(data), "-o", str(data / "m.jsonl")]) == 0
    rows = [json.loads(line) for line in (data / "m.jsonl").read_text().splitlines()]
    assert [r.get("error") for r in rows if r["path"] == "empty.mp4"] == ["empty file (0 bytes)"]
    dm = MediaDataModule(ManifestSource(str(data / "m.jsonl")), modalities=["video"], size=32, clip_seconds=1.0)
    dm.trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"))
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        dm.setup("fit")
    assert not [r.message for r in caplog.records if "unknown column" in r.message]
    assert sorted(c.key for c in dm.clips) == ["v0.mp4", "v1.mp4", "v2.mp4"]
    assert (tmp_path / "run" / "skipped_media.tsv").read_text() == f"{data / 'empty.mp4'}\tempty file (0 bytes)\n"
    assert any(r.message.startswith("skipping 1 of 4 files (1 x empty file)") for r in caplog.records)
    spans = "v0.mp4,0,0.5\nv0.mp4,0.5,1\nempty.mp4,0,1\nempty.mp4,1,2\n"  # each span of the bad file counts
    (data / "spans.csv").write_text(f"path,start,end\n{spans}")
    dm = MediaDataModule(ManifestSource(str(data / "spans.csv")), modalities=["video"], size=32, clip_seconds=0.5)
    dm.trainer = SimpleNamespace(default_root_dir=str(tmp_path / "spans"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        dm.setup("fit")
    assert any(r.message.startswith("skipping 2 of 4 clips (2 x empty file)") for r in caplog.records)
    (data / "bad.csv").write_text("path,start,end\nempty.mp4,0,1\nempty.mp4,1,2\n")
    dm = MediaDataModule(ManifestSource(str(data / "bad.csv")), modalities=["video"], size=32, clip_seconds=0.5)
    with pytest.raises(ValueError, match=r"^none of the 2 clips can be used: 2 x empty file"):
        dm.setup("fit")


def test_an_empty_folder_says_so(tmp_path):
    (tmp_path / "data").mkdir()
    dm = folder_module(tmp_path / "data", tmp_path / "run")
    with pytest.raises(ValueError, match=f"^no media files in {tmp_path / 'data'}$"):
        dm.setup("fit")


def test_evaluation_of_a_small_folder_has_no_validation_split_rather_than_the_training_files(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        write_video(data / f"v{i}.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=None)
    dm = folder_module(data, tmp_path / "run", modalities=["video"], val_fraction=0.05, test_fraction=0.0)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        dm.setup("validate")  # as evaluate sets it up: split=val then says there is none
    assert dm.splits["val"] == [] and {c.key for c in dm.splits["train"]} == {"v0.mp4", "v1.mp4"}
    assert not [r for r in caplog.records if "validating on the training files" in r.message]


def test_a_resumed_run_says_which_files_its_skip_list_already_leaves_out(tmp_path, caplog):
    """The skip list logs only what it adds, so a resumed run, whose list already holds the bad files,
    said nothing of them: one line counts them, with their reasons, and names the list."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        write_video(data / f"v{i}.mp4", seconds=1.0, fps=8, width=32, height=32, audio_rate=None)
    (data / "empty.mp4").write_bytes(b"")
    for attempt in ("first", "resumed"):
        caplog.clear()
        dm = MediaDataModule(FolderSource(str(data)), modalities=["video"], size=32, clip_seconds=1.0)
        dm.trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"))
        with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
            dm.setup("fit")
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping 1 of 3 files")]
        if attempt == "first":
            assert line.startswith("skipping 1 of 3 files (1 x empty file)")
        else:
            listed = tmp_path / "run" / "skipped_media.tsv"
            assert line == f"skipping 1 of 3 files already listed in {listed} (1 x empty file)"


def _splits_of_groups(dm: MediaDataModule, group_of: dict[str, str]) -> dict[str, set[str]]:
    """Each group's splits, as ``dm`` drew them."""
    out: dict[str, set[str]] = {}
    for name, clips in dm.splits.items():
        for c in clips:
            out.setdefault(group_of[c.file_key], set()).add(name)
    return out


def test_a_manifests_group_lies_in_one_split_and_moves_to_validation_whole(media, tmp_path, caplog):
    """Clips of one conversation were split by their own names: a model validated and tested on the
    halves of conversations it had trained on (only the probe's folds kept a group together)."""
    data = tmp_path / "data"
    data.mkdir()
    group_of = {f"c{i}.wav": f"talk{i // 4}" for i in range(32)}  # 8 groups of 4 files
    for name in group_of:
        shutil.copy(media["wav16k"], data / name)
    fractions = {"val_fraction": 0.25, "test_fraction": 0.25}

    def module(rows: dict[str, str], column: bool, **kwargs) -> MediaDataModule:
        listed = "".join(f"{n},{g}\n" if column else f"{n}\n" for n, g in rows.items())
        (data / "m.csv").write_text(("path,group\n" if column else "path\n") + listed)
        dm = MediaDataModule(ManifestSource(str(data / "m.csv")), modalities=["audio"], clip_seconds=0.5, **kwargs)
        dm.trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"))
        dm.setup("fit")
        return dm

    by_file = _splits_of_groups(module(group_of, column=False, **fractions), group_of)
    assert max(map(len, by_file.values())) > 1  # (by their own names, the clips of a group straddle splits)
    with_groups = module(group_of, column=True, **fractions)
    grouped = _splits_of_groups(with_groups, group_of)
    assert all(len(splits) == 1 for splits in grouped.values()) and len(set().union(*grouped.values())) == 3
    held = {name: sorted(g for g, splits in grouped.items() if splits == {name}) for name in ("val", "test")}
    said = with_groups.split_summary()  # (the data line names the groups held out, where it named files)
    assert said.startswith(f"32 files in 8 groups: {4 * (8 - len(held['val']) - len(held['test']))} train, ")
    plural = "s" if len(held["val"]) > 1 else ""
    assert f"{4 * len(held['val'])} val (group{plural} {', '.join(held['val'])})" in said
    ungrouped = module(group_of | {"c0.wav": ""}, column=True, **fractions).split_summary()  # (a row with no group)
    assert ungrouped.startswith("32 files (31 in 8 groups): ")
    # none hashed into validation (a tiny fraction): one group moves there, all of its files
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        moved = module(group_of, column=True, val_fraction=1e-9, test_fraction=0.0)
    (val,) = {group_of[c.file_key] for c in moved.splits["val"]}
    assert len(moved.splits["val"]) == 4 and val not in {group_of[c.file_key] for c in moved.splits["train"]}
    assert f"validating on group {val} (4 files, 10.0 s of the training files' 80.0 s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        module(
            {n: f"solo{i}" for i, n in enumerate(list(group_of)[:4])}, column=True, val_fraction=1e-9, test_fraction=0
        )
    assert re.search(r"validating on group solo\d \(1 file, 2\.5 s of the training files' 10\.0 s\)", caplog.text)
    one_talk = module(dict.fromkeys(list(group_of)[:4], "talk"), column=True, val_fraction=1e-9, test_fraction=0.0)
    assert one_talk.splits["val"] == one_talk.splits["train"]  # (one group: nothing to hold out, fit measured)
    assert "all training files are in one group (talk): validating on the training files" in caplog.text


def test_a_manifest_of_one_group_that_hashes_out_of_training_trains_on_it(media, tmp_path, caplog):
    """Four files of one speaker whose group hashed into validation: "no training clips among 4" (one
    one-group manifest in ten, at the default fractions), where the same files without the column
    trained. A manifest whose split column names no training row says so, not to lower the fractions."""
    data = tmp_path / "data"
    data.mkdir()
    talk = next(g for g in (f"speaker{i}" for i in range(1000)) if ClipInfo("x").split_hash(f"group:{g}") < 0.1)
    for i in range(4):
        shutil.copy(media["wav16k"], data / f"c{i}.wav")

    def module(rows: str) -> MediaDataModule:
        (data / "m.csv").write_text(rows)
        dm = MediaDataModule(ManifestSource(str(data / "m.csv")), modalities=["audio"], clip_seconds=0.5)
        dm.trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"))
        dm.setup("fit")
        return dm

    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        dm = module("path,group\n" + "".join(f"c{i}.wav,{talk}\n" for i in range(4)))
    assert len(dm.splits["train"]) == 4 and dm.splits["val"] == dm.splits["train"] and not dm.splits["test"]
    assert "only 4 usable file(s) in 1 group(s), none hashed into training: training on them all" in caplog.text
    assert f"all training files are in one group ({talk}): validating on the training files" in caplog.text
    with pytest.raises(
        ValueError, match=r"^no training clips among 4 \(the manifest's split column puts no row in train\)$"
    ):
        module("path,split\n" + "".join(f"c{i}.wav,{'val' if i else 'test'}\n" for i in range(4)))


def _hashed(prefix: str, low: float, high: float, count: int = 1) -> list[str]:
    """``count`` file names whose split hash lies in ``[low, high)``."""
    names = (f"{prefix}{i}.wav" for i in range(1000))
    return [n for n in names if low <= ClipInfo(n, key=n).split_hash() < high][:count]


def _data_line(media, tmp_path, caplog, names: list[str], **fractions) -> str:
    """The line setup logs of a folder of ``names`` (copies of one WAV file) read with ``fractions``."""
    data = tmp_path / "data"
    data.mkdir()
    for name in names:
        shutil.copy(media["wav16k"], data / name)
    dm = folder_module(data, tmp_path / "run", modalities=["audio"], **fractions)
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        dm.setup("fit")
    (said,) = [m for m in caplog.messages if m.startswith(f"data: {len(names)} files:")]
    return said


def test_a_few_files_one_of_them_hashed_into_validation_say_it_is_never_trained_on(media, tmp_path, caplog):
    """Of two files, the hash put one in validation (5% asked): half the data was never trained on, and
    the data line only named it."""
    (val,), trained = _hashed("clip", 0.05, 0.1), _hashed("take", 0.15, 1.0)
    said = _data_line(media, tmp_path, caplog, [val, *trained], val_fraction=0.05, test_fraction=0.05)
    assert said.endswith(
        f"1 val ({val}), 0 test; the validation split holds 1 of the 2 (data.val_fraction=0.05), never trained "
        "on: name the validation files in a manifest's split column, or data.val_fraction=0 trains on every file "
        "(validation off)"
    )


def test_a_few_files_one_of_them_hashed_into_test_say_it_is_held_out_and_how_to_train_on_it(media, tmp_path, caplog):
    """Of a user's 3 files one went to the test split (5% asked) and was never trained on, unsaid."""
    (held,), trained = _hashed("clip", 0.0, 0.05), _hashed("take", 0.15, 1.0, count=2)
    said = _data_line(media, tmp_path, caplog, [held, *trained], val_fraction=0.1, test_fraction=0.05)
    assert said.endswith(
        f"1 test ({held}); the test split holds 1 of the 3 (data.test_fraction=0.05), never trained on: test=true "
        "scores it, data.test_fraction=0 returns it to training and validation"
    )
    data = tmp_path / "data"
    again = folder_module(data, tmp_path / "again", modalities=["audio"], val_fraction=0.1, test_fraction=0.0)
    again.setup("fit")  # (as said: every file trains or validates; a hash below 0.05 is now the validation's)
    assert not again.splits["test"] and len({c.file_key for c in again.splits["train"]}) == 2


def test_the_file_moved_to_validation_is_named_on_one_line(media, tmp_path, caplog):
    """A name with a line break was logged raw: the log line broke in two (the summary escaped it)."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        shutil.copy(media["wav16k"], data / f"take\n{i}.wav")
    dm = folder_module(data, tmp_path / "run", modalities=["audio"], val_fraction=1e-9, test_fraction=0.0)
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        dm.setup("fit")
    (said,) = [m for m in caplog.messages if "validating on" in m]
    assert "validating on take\\n" in said and "\n" not in said
