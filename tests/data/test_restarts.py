"""A decoder crash in a training loader worker: the file is listed and training reads on, the batches
those of a run in which the file failed in Python."""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import time

import pytest
import torch

from ttt_mm.data import MediaDataModule, MediaError, SyntheticSource, datasets, reading_notes, restarts, training_order

pytestmark = pytest.mark.slow  # (worker processes started, crashed and restarted; a training step's sleep)

BATCHES = 10


def module(stream: bool, num_workers: int, val_fraction: float = 0.0, **kwargs) -> MediaDataModule:
    dm = MediaDataModule(
        SyntheticSource(num_clips=20, duration=3.0),
        ["audio"],
        clip_seconds=1.0,
        batch_size=2,
        stream=stream,
        num_workers=num_workers,
        val_fraction=val_fraction,
        test_fraction=0.0,
        **kwargs,
    )
    dm.setup("fit")
    return dm


def reads(dm: MediaDataModule, busy: float = 0.0) -> list[dict]:
    """The first batches; ``busy`` seconds of work on each (as a training step, during which a worker
    may die: PyTorch's SIGCHLD handler would raise its error there, outside the loader)."""
    batches = []
    for batch in itertools.islice(dm.train_dataloader(), BATCHES):
        batches.append(batch)
        if busy:
            time.sleep(busy)
    return batches


def later_clip(batches: list[dict]) -> str:
    """A clip first read in the seventh batch or later: workers read at most four batches ahead, so the
    crash comes after batches were yielded (the batches a worker had sent just before it died may be
    lost with it: the new loader reads them again)."""
    first = {}
    for i, batch in enumerate(batches):
        for path in batch["path"]:
            first.setdefault(path, i)
    return next(path for path, i in first.items() if i >= 6)


def failing(monkeypatch, bad: str, fail) -> None:
    """Reads of clip ``bad`` call ``fail`` (in whichever process reads), in training and evaluation."""
    read = datasets.read_item

    def read_item(clip, *args):
        if clip.name == bad:
            fail(clip)
        return read(clip, *args)

    monkeypatch.setattr(training_order, "read_item", read_item)
    monkeypatch.setattr(datasets, "read_item", read_item)


def crash(signum: int):
    def fail(clip):
        os.kill(os.getpid(), signum)

    return fail


def unreadable(clip):
    raise MediaError(clip.name, "unreadable")


@pytest.mark.parametrize("stream", [False, True], ids=["windows", "stream"])
def test_a_decoder_crash_lists_the_file_and_the_loader_reads_on_as_if_it_had_failed_in_python(
    monkeypatch, caplog, stream
):
    bad = later_clip(reads(module(stream, num_workers=0)))
    failing(monkeypatch, bad, unreadable)
    expected = reads(module(stream, num_workers=0))

    failing(monkeypatch, bad, crash(signal.SIGSEGV))
    dm = module(stream, num_workers=2)
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        got = reads(dm, busy=0.3)  # (the old code ended here: "DataLoader worker ... exited unexpectedly")
    assert dm.skips.reasons == {bad: "decoder crashed: SIGSEGV"}
    assert [(b["path"], b["start"].tolist()) for b in got] == [(b["path"], b["start"].tolist()) for b in expected]
    assert torch.equal(got[0]["audio"], expected[0]["audio"]) and torch.equal(got[-1]["audio"], expected[-1]["audio"])
    restarts = [
        int(m[1])
        for r in caplog.records
        if (m := re.search(r"new data loader goes on from batch (\d+)", r.getMessage()))
    ]
    assert len(restarts) == 1 and 1 <= restarts[0] < BATCHES
    if stream:  # every row starts afresh at the first batch of the new loader, and only there
        changed = [i for i in range(BATCHES) if not torch.equal(got[i]["reset"], expected[i]["reset"])]
        assert got[restarts[0]]["reset"].all() and set(changed) <= {restarts[0]}
    assert not reading_notes.left_by(None)  # no note of the stopped workers is left behind


def test_a_worker_killed_from_outside_still_ends_the_iteration(monkeypatch):
    """SIGKILL is what the out-of-memory killer sends: not the file's fault, so nothing is listed."""
    dm = module(stream=False, num_workers=1)
    bad = later_clip(reads(module(stream=False, num_workers=0)))
    failing(monkeypatch, bad, crash(signal.SIGKILL))
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        reads(dm)
    assert len(dm.skips) == 0
    assert reading_notes.left_by(None) == bad  # left for the run's last line to name (`train.dead_worker`)


def test_a_decoder_crash_in_validation_lists_the_file_and_the_pass_starts_again_without_it(monkeypatch, caplog):
    def key(batches):
        return [(b["path"], b["start"].tolist()) for b in batches]

    clean = list(module(False, num_workers=2, val_fraction=0.5).val_dataloader())
    bad = clean[-1]["path"][0]  # read last: the pass has scored batches when it crashes
    assert len(clean) > 4 and all(bad not in b["path"] for b in clean[:-2])
    failing(monkeypatch, bad, unreadable)
    expected = list(module(False, num_workers=2, val_fraction=0.5).val_dataloader())

    failing(monkeypatch, bad, crash(signal.SIGBUS))
    dm = module(False, num_workers=2, val_fraction=0.5)
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        got = list(dm.val_dataloader())
    assert dm.skips.reasons == {bad: "decoder crashed: SIGBUS"}
    marked = [i for i, b in enumerate(got) if b.get("restarted")]
    assert len(marked) == 1 and marked[0] > 0 and key(got[marked[0] :]) == key(expected)
    assert "a new data loader goes on from its start" in caplog.text


def test_a_crash_of_a_persistent_worker_reading_ahead_between_passes_is_listed_at_the_next_pass(monkeypatch):
    """A pass that ends early (``limit_val_batches``, the sanity check) leaves persistent workers reading
    ahead; the next pass's ``iter`` waits for them, and raised there before."""

    def key(batches):
        return [(b["path"], b["start"].tolist()) for b in batches]

    def val(**kwargs):
        return module(False, num_workers=1, val_fraction=0.5, eval_batch_size=1, persistent_workers=True, **kwargs)

    clean = list(val().val_dataloader())
    first = {}
    for i, batch in enumerate(clean):
        first.setdefault(batch["path"][0], i)
    bad, at = next((path, i) for path, i in first.items() if i >= 2)
    failing(monkeypatch, bad, unreadable)
    expected = list(val().val_dataloader())

    failing(monkeypatch, bad, crash(signal.SIGSEGV))
    dm = val()
    loader = dm.val_dataloader()
    assert len(list(itertools.islice(loader, at - 1))) == at - 1  # the worker goes on to batch `at` (2 ahead)
    time.sleep(1.0)
    got = list(loader)
    assert dm.skips.reasons == {bad: "decoder crashed: SIGSEGV"} and key(got) == key(expected)


def test_an_error_the_dataset_raises_in_a_worker_is_raised_at_once(monkeypatch):
    """Its worker lives: nothing to wait for (the loader waited `DEATH_WAIT_S` for a death first)."""
    dm = module(stream=False, num_workers=1)
    bad = later_clip(reads(module(stream=False, num_workers=0)))

    def fail(clip):
        raise OSError("the disk went away")

    failing(monkeypatch, bad, fail)

    def waits(seconds):
        raise AssertionError("waited for a worker to die")

    monkeypatch.setattr(restarts.time, "sleep", waits)
    with pytest.raises(OSError, match="Caught OSError in DataLoader worker process 0"):
        reads(dm)
