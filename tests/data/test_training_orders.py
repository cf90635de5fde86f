"""Training orders: the endless resumable sampler and per-row streams of whole clips."""

import itertools
import logging
import math

import pytest
import torch

from ttt_mm.data import ClipInfo, ReadSpec, SyntheticClip, training_order
from ttt_mm.data.datasets import SequentialWindows
from ttt_mm.data.decode import MediaError, NotAsProbed
from ttt_mm.data.media import TensorMedia
from ttt_mm.data.skiplist import SkipList, unusable_message
from ttt_mm.data.training_order import ResumableSampler, StreamWindows

SPEC = ReadSpec(sample_rate=8000, fps=8.0, size=32)


def test_sampler_visits_every_clip_once_per_epoch_and_resumes_exactly():
    sampler = ResumableSampler(5, seed=3)
    pairs = list(itertools.islice(sampler, 15))
    for epoch in range(3):
        chunk = pairs[5 * epoch : 5 * epoch + 5]
        assert sorted(i for i, _ in chunk) == list(range(5)) and {e for _, e in chunk} == {epoch}
    assert [i for i, _ in pairs[:5]] != [i for i, _ in pairs[5:10]]
    assert list(itertools.islice(ResumableSampler(5, seed=3, start=7), 8)) == pairs[7:15]


def test_ranks_split_the_stream_without_overlap_and_each_resumes_where_it_stopped():
    ranks = [list(itertools.islice(ResumableSampler(6, seed=0, rank=r, world=2), 9)) for r in range(2)]
    assert sorted(i for r in ranks for i, _ in r[:3]) == list(range(6))
    for rank, pairs in enumerate(ranks):  # ``start``: the rank's own position (a step's batch rows)
        assert list(itertools.islice(ResumableSampler(6, seed=0, start=4, rank=rank, world=2), 5)) == pairs[4:]


def clips(durations):
    return [ClipInfo(SyntheticClip(0, i, d), end=d, key=str(i)) for i, d in enumerate(durations)]


def test_stream_rows_walk_whole_clips_in_order_and_flag_new_clips():
    durations = {f"synthetic/seed=0/index={i}": d for i, d in enumerate([2.0, 3.0, 1.0])}
    stream = StreamWindows(clips(durations.values()), window_seconds=1.0, batch_size=2, spec=SPEC, seed=1)
    batches = list(itertools.islice(stream, 12))
    for row in range(2):
        walk = [(b["path"][row], float(b["start"][row]), bool(b["reset"][row])) for b in batches]
        for (path, start, reset), (prev_path, prev_start, _) in zip(walk[1:], walk[:-1]):
            if reset:  # a new clip starts at its beginning, once the one before has ended
                assert start == 0.0 and prev_start + 1.0 == durations[prev_path]
            else:
                assert path == prev_path and start == prev_start + 1.0  # the next window of the same clip
        assert walk[0][2] and walk[0][1] == 0.0  # the first batch starts every row afresh
    assert all(b["audio"].shape[1] == 8000 and b["video"].shape[1] == 8 for b in batches)


def test_the_rows_of_all_ranks_stream_distinct_clips():
    """Clips of one window each: every row of every rank starts a new clip at every step, and one
    epoch's clips are shared out among the 2 ranks' 2 rows, none twice."""
    listed = clips([1.0] * 8)
    paths = [
        [
            path
            for batch in itertools.islice(StreamWindows(listed, 1.0, 2, SPEC, seed=4, rank=rank, world=2), 2)
            for path in batch["path"]
        ]
        for rank in range(2)
    ]
    assert sorted(paths[0] + paths[1]) == sorted(clip.name for clip in listed)


def test_stream_resumes_at_a_step_without_decoding_the_skipped_windows(monkeypatch):
    full = list(itertools.islice(StreamWindows(clips([2.0, 3.0, 1.0, 2.0]), 1.0, 2, SPEC, seed=1), 5))
    decoded, read = [], training_order.read_item

    def read_item(clip, start, duration, spec):
        decoded.append((clip.name, start))
        return read(clip, start, duration, spec)

    monkeypatch.setattr(training_order, "read_item", read_item)
    resumed = list(itertools.islice(StreamWindows(clips([2.0, 3.0, 1.0, 2.0]), 1.0, 2, SPEC, seed=1, start_step=3), 2))
    for a, b in zip(full[3:], resumed):
        assert a["path"] == b["path"] and a["start"].tolist() == b["start"].tolist()
    assert decoded == [(p, float(s)) for b in full[3:] for p, s in zip(b["path"], b["start"])]  # those 4 only
    for a, b in zip(full[3:], resumed):  # rows mid-clip are not flagged: the model knows it has no state
        assert a["reset"].tolist() == b["reset"].tolist() and int(a["stream_step"]) == int(b["stream_step"])
    assert [int(b["stream_step"]) for b in full] == [0, 1, 2, 3, 4]


def test_a_clips_last_window_too_short_to_train_on_is_left_out():
    """A 4.004 s video in 4 s windows gave a 0.004 s window: no token to score, a wasted row."""
    stream = StreamWindows(clips([2.1, 1.2, 1.6]), window_seconds=1.0, batch_size=1, spec=SPEC, seed=0)
    walk = [
        (b["path"][0], float(b["start"][0]), int(b["audio_lengths"][0]) / 8000) for b in itertools.islice(stream, 12)
    ]
    assert all(duration >= SPEC.min_seconds for _, _, duration in walk)
    starts = {path: sorted({s for p, s, _ in walk if p == path}) for path, _, _ in walk}
    assert starts == {
        "synthetic/seed=0/index=0": [0.0, 1.0],
        "synthetic/seed=0/index=1": [0.0],
        "synthetic/seed=0/index=2": [0.0, 1.0],
    }


def test_stream_skips_unreadable_clips(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    spec = ReadSpec(modalities=("audio",), sample_rate=8000)
    stream = StreamWindows([ClipInfo(str(bad)), *clips([2.0])], 1.0, 1, spec, skip_list=str(tmp_path / "skip.tsv"))
    batch = next(iter(stream))
    assert batch["path"] == ["synthetic/seed=0/index=0"] and bool(batch["reset"][0])
    assert "bad.wav" in (tmp_path / "skip.tsv").read_text()
    with pytest.raises(ValueError, match="no clips"):
        StreamWindows([], 1.0, 1, spec)


def test_a_skip_listed_clip_is_passed_over_and_the_others_keep_their_order(tmp_path):
    """A file that failed in an earlier attempt of a run stays in the list, so the resumed run draws
    the same clips in the same order and only that file's windows are missing."""
    listed = clips([1.0, 1.0, 1.0, 1.0, 1.0])

    def walked(steps, skip_list=None):
        stream = StreamWindows(listed, 1.0, 1, SPEC, seed=2, skip_list=skip_list)
        return [b["path"][0] for b in itertools.islice(stream, steps)]

    order = walked(20)
    (tmp_path / "skip.tsv").write_text(f"{order[1]}\tfailed in an earlier attempt\n")
    assert walked(12, str(tmp_path / "skip.tsv")) == [p for p in order if p != order[1]][:12]


def failing_from(name, second, monkeypatch):
    """Make every read of clip ``name`` at or after ``second`` fail, as a file damaged from there on."""
    read = training_order.read_item

    def read_item(clip, start, duration, spec):
        if clip.name == name and start >= second:
            raise MediaError(clip.name, "damaged from here on")
        return read(clip, start, duration, spec)

    monkeypatch.setattr(training_order, "read_item", read_item)


@pytest.mark.parametrize("resume_at", [2, 5, 9])  # before the clip, inside it after its failure, after it
def test_a_stream_resumed_after_a_clip_failed_part_way_goes_on_with_the_data_it_would_have_seen(
    resume_at, tmp_path, monkeypatch
):
    """The interrupted run trained on the clip's windows before the failure; the resumed one found the
    clip listed and used to leave all of it out, so its fast-forward landed that many windows later."""
    listed = clips([3.0, 5.0, 2.0, 4.0])

    def walk(skip_list, start_step, steps):
        stream = StreamWindows(listed, 1.0, 1, SPEC, seed=3, skip_list=skip_list, start_step=start_step)
        return [(b["path"][0], float(b["start"][0]), bool(b["reset"][0])) for b in itertools.islice(stream, steps)]

    damaged = "synthetic/seed=0/index=1"  # 5 s: three windows read, then the file fails
    failing_from(damaged, 3.0, monkeypatch)
    skip_list = tmp_path / "run" / "skipped_media.tsv"
    uninterrupted = walk(str(skip_list), 0, 14)
    assert [(p, s) for p, s, _ in uninterrupted if p == damaged][:3] == [(damaged, 0.0), (damaged, 1.0), (damaged, 2.0)]
    assert SkipList(str(skip_list)).readable_until(listed[1]) == 3.0
    resumed = walk(str(skip_list), resume_at, 14 - resume_at)
    assert resumed == uninterrupted[resume_at:]


@pytest.mark.parametrize("resume_at", [3, 8])
def test_a_span_that_fails_part_way_leaves_the_files_other_spans_in_the_stream(resume_at, tmp_path, monkeypatch):
    """A failure 2 s into a manifest's span [0, 4) was listed under the file's name: its span [4, 7) then
    counted as failed too, never read again, and a resumed stream's fast-forward left it out of the
    passes that had read it, landing elsewhere than the interrupted run."""
    media = TensorMedia(samples=torch.zeros(8000 * 8), sample_rate=8000, name="f.wav")
    spans = [ClipInfo(media, start=0.0, end=4.0), ClipInfo(media, start=4.0, end=7.0)]
    spec = ReadSpec(modalities=("audio",), sample_rate=8000)
    read = training_order.read_item

    def read_item(clip, start, duration, spec):
        if 2.0 <= start < 3.0:  # (a damaged stretch inside the first span)
            raise MediaError(clip.name, "damaged stretch")
        return read(clip, start, duration, spec)

    monkeypatch.setattr(training_order, "read_item", read_item)

    def walk(skip_list, start_step, steps):
        stream = StreamWindows(spans, 1.0, 1, spec, seed=3, skip_list=skip_list, start_step=start_step)
        return [float(b["start"][0]) for b in itertools.islice(stream, steps)]

    skip_list = str(tmp_path / "skipped_media.tsv")
    uninterrupted = walk(skip_list, 0, 16)
    assert uninterrupted.count(4.0) > 1  # (the other span is read in every pass)
    listed = SkipList(skip_list)
    assert listed.read_to == {"f.wav@0-4": 2.0} and [listed.readable_until(c) for c in spans] == [2.0, math.inf]
    assert walk(skip_list, resume_at, 16 - resume_at) == uninterrupted[resume_at:]
    assert listed.holds(spans[0]) and not listed.holds(spans[1])
    listed.add("f.wav@4-7", "too short")  # (the error when none is left names a span's reason, not "unknown")
    assert unusable_message(spans, listed).startswith("none of the 2 clips can be read: 1 x damaged stretch, 1 x too ")


def test_a_file_found_changed_mid_stream_is_listed_whole(tmp_path, monkeypatch):
    """Changed since it was probed, none of it is read: listed from the window where that was found, its
    earlier windows were tried in every later pass, each failing unsaid (and read by a resumed run)."""
    listed = clips([3.0, 5.0, 2.0, 4.0])
    changed = "synthetic/seed=0/index=1"
    read = training_order.read_item

    def read_item(clip, start, duration, spec):
        if clip.name == changed and start >= 2.0:
            raise NotAsProbed(clip.name, "the file changed since it was probed")
        return read(clip, start, duration, spec)

    monkeypatch.setattr(training_order, "read_item", read_item)
    skip_list = tmp_path / "skipped_media.tsv"
    stream = StreamWindows(listed, 1.0, 1, SPEC, seed=3, skip_list=str(skip_list))
    list(itertools.islice(stream, 14))
    assert SkipList(str(skip_list)).readable_until(listed[1]) == -math.inf


def test_the_skip_list_keeps_where_a_file_stopped_reading_and_reads_older_lists_whole(tmp_path, caplog):
    path = tmp_path / "skips.tsv"
    skips = SkipList(str(path))
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        skips.add("a.wav", "damaged", read_to=0.1 + 0.2)  # (a float that prints long: it must read back the same)
    assert "skipping a.wav from 0.300 s on: damaged" in caplog.text
    skips.add("b.wav", "not media")
    path.write_text(path.read_text() + "c.wav\tfrom an older run\n")
    again = SkipList(str(path))
    a, b, c, d = (ClipInfo(f"{n}.wav") for n in "abcd")
    assert again.readable_until(a) == 0.1 + 0.2
    assert again.readable_until(b) == again.readable_until(c) == -math.inf and again.readable_until(d) == math.inf
    assert again.reasons == {"a.wav": "damaged", "b.wav": "not media", "c.wav": "from an older run"}


def test_a_span_too_short_to_read_leaves_the_files_other_spans_in(tmp_path):
    """A clip's own trouble (too short, starting past the file's end) used to be listed under its file's
    name, and every dataset then passed over all the file's spans."""
    media = TensorMedia(samples=torch.zeros(8000 * 10), sample_rate=8000, name="f.wav")
    spec = ReadSpec(modalities=("audio",), sample_rate=8000)
    spans = [ClipInfo(media, start=0.0, end=0.2), ClipInfo(media, start=2.0, end=6.0), ClipInfo(media, start=12.0)]
    skips = SkipList(str(tmp_path / "skips.tsv"))
    windows = list(SequentialWindows(spans, 1.0, spec, skip_list=skips))
    assert [w["start"] for w in windows] == [2.0, 3.0, 4.0, 5.0]
    assert sorted(skips.reasons) == ["f.wav@0-0.2", "f.wav@12-end"]
    assert [skips.holds(c) for c in spans] == [True, False, True]


def test_a_stream_whose_every_file_failed_part_way_still_streams_what_came_before(tmp_path):
    """The interrupted run went on with the windows before each failure; resumed, it was refused at once:
    'no clips to stream (all in the skip list)'."""
    listed = clips([3.0, 3.0])
    skips = SkipList(str(tmp_path / "skips.tsv"))
    for clip in listed:
        skips.add(clip.name, "damaged from here on", read_to=2.0)
    stream = StreamWindows(listed, 1.0, 1, SPEC, seed=0, skip_list=skips)
    walked = [(b["path"][0], float(b["start"][0])) for b in itertools.islice(stream, 4)]
    assert sorted(walked) == sorted((c.name, s) for c in listed for s in (0.0, 1.0))
    whole = SkipList(str(tmp_path / "whole.tsv"))
    for clip in listed:
        whole.add(clip.name, "damaged from its start", read_to=0.0)
    with pytest.raises(ValueError, match="no clips to stream"):
        StreamWindows(listed, 1.0, 1, SPEC, skip_list=whole)


def test_a_torn_last_line_of_the_skip_list_leaves_its_whole_file_out(tmp_path):
    """A run killed while writing 'x.wav<TAB>damaged<TAB>12.5' may leave '...<TAB>1': read as 1 s, the
    resumed stream counted too few windows of it."""
    path = tmp_path / "skips.tsv"
    path.write_text("a.wav\tdamaged\t3.5\nx.wav\tdamaged\t1")
    skips = SkipList(str(path))
    assert skips.read_to == {"a.wav": 3.5} and skips.readable_until(ClipInfo("x.wav")) == -math.inf
    # the line was being appended by another process: once it is whole, it is read whole
    with open(path, "a") as f:
        f.write("2.5\n")
    skips._looked = -math.inf  # (as if `REFRESH_S` had passed)
    assert skips.readable_until(ClipInfo("x.wav")) == 12.5 and skips.read_to == {"a.wav": 3.5, "x.wav": 12.5}
