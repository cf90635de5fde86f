"""Training windows, evaluation walks, collate, and streaming equality with one-pass tokens."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import soundfile as sf
import torch

from ttt_mm.data import (
    ClipInfo,
    MediaError,
    ReadSpec,
    SequentialWindows,
    SkipList,
    SyntheticClip,
    SyntheticSource,
    WindowDataset,
    collate,
    iter_windows,
)
from ttt_mm.data.datasets import clip_span, read_item, reads_nothing
from ttt_mm.tokenizers import AudioTokenizer, AVTokenizer, Tokens, VideoTokenizer


def cat_tokens(parts: list[Tokens]) -> Tokens:
    """Join token sequences along time: the windows of a stream, to compare with one pass."""
    out = {}
    for f in fields(Tokens):
        values = [getattr(p, f.name) for p in parts]
        out[f.name] = None if any(v is None for v in values) else torch.cat(values, dim=1)
    return Tokens(**out)


SPEC = ReadSpec(size=32)


def test_training_windows_are_reproducible_and_change_per_epoch():
    clips = SyntheticSource(num_clips=3, duration=30.0).clips()
    dataset = WindowDataset(clips, clip_seconds=2.0, spec=SPEC, seed=5)
    first = [dataset[(i, 0)]["start"] for i in range(3)]
    assert first == [dataset[(i, 0)]["start"] for i in range(3)]
    assert first != [dataset[(i, 1)]["start"] for i in range(3)]
    starts = [dataset[(1, e)]["start"] for e in range(20)]
    assert all(0 <= s <= 28.0 and (s * 8) == round(s * 8) for s in starts)  # inside, on the 1/fps grid
    item = dataset[(0, 0)]
    assert item["audio"].shape == (32000,) and item["video"].shape == (16, 3, 32, 32)
    assert item["audio_context"].shape == (400,) and item["label"] == clips[0].media.label
    assert torch.equal(item["audio_context"], clips[0].media.audio(item["start"] - 0.025, 0.025))


def test_short_clips_are_read_whole(media):
    dataset = WindowDataset([ClipInfo(str(media["av"]), start=0.5, end=1.75)], clip_seconds=4.0, spec=SPEC)
    item = dataset[0]
    assert item["start"] == 0.5 and len(item["video"]) == 10 and len(item["audio"]) == 20000


def test_evaluation_walks_files_in_order_whole(media):
    clips = [ClipInfo(str(media["av"])), ClipInfo(SyntheticClip(0, 1, 2.5))]
    items = list(SequentialWindows(clips, window_seconds=1.0, spec=SPEC))
    assert [(it["path"], it["start"], it["window_index"]) for it in items] == [
        (str(media["av"]), 0.0, 0),
        (str(media["av"]), 1.0, 1),
        (str(media["av"]), 2.0, 2),
        ("synthetic/seed=0/index=1", 0.0, 0),
        ("synthetic/seed=0/index=1", 1.0, 1),
        ("synthetic/seed=0/index=1", 2.0, 2),
    ]
    assert len(items[-1]["video"]) == 4 and len(items[-1]["audio"]) == 8000  # the last window is shorter
    with pytest.raises(ValueError, match="not a whole number of 1/fps"):
        SequentialWindows(clips, window_seconds=0.3, spec=SPEC)


def test_a_process_whose_share_of_the_files_all_failed_evaluates_one_another_has(tmp_path, monkeypatch):
    """Two processes, two files, the second listed: the second process had no batch, and under FSDP the
    validation of every resumed run ended in "no evaluation batch of its own"."""
    clips = [ClipInfo(SyntheticClip(0, i, 1.0)) for i in range(2)]
    skips = SkipList(str(tmp_path / "skips.tsv"))
    skips.add(clips[1].name, "damaged")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None, rank=rank: rank)
        walked = SequentialWindows(clips, window_seconds=1.0, spec=SPEC, skip_list=skips)
        assert [item["path"] for item in walked] == [clips[0].name]  # (scored twice, as with fewer files than ranks)
    skips.add(clips[0].name, "damaged")
    assert list(SequentialWindows(clips, window_seconds=1.0, spec=SPEC, skip_list=skips)) == []  # (none left)


def test_a_tail_too_short_to_read_a_sample_ends_the_walk_and_is_no_fault(tmp_path):
    """A 44.1 kHz file one sample longer than two windows ended in a window of no 16 kHz sample: "no
    audio samples at 10.000 s" listed the healthy file, left out of every later validation."""
    audio = ReadSpec(modalities=("audio",))
    rng = np.random.default_rng(0)
    for samples, starts, last in [(441001, [0.0, 5.0], 80000), (441030, [0.0, 5.0, 10.0], 11)]:
        path = tmp_path / f"{samples}.wav"
        sf.write(path, (0.1 * rng.standard_normal(samples)).astype(np.float32), 44100)
        walked = SequentialWindows([ClipInfo(str(path))], window_seconds=5.0, spec=audio)
        items = list(walked)
        assert [it["start"] for it in items] == starts and len(items[-1]["audio"]) == last
        assert not walked.skips.holds(ClipInfo(str(path)))
    assert reads_nothing(ReadSpec(("video",), fps=8, sample_rate=None)) == 1e-6 / 8  # (no clock for a stream unread)


def test_collate_pads_and_masks():
    items = [read_item(ClipInfo(SyntheticClip(0, 0, 10.0)), 0.0, d, SPEC) for d in (1.0, 0.5)]
    batch = collate(items)
    assert batch["audio"].shape == (2, 16000) and batch["audio_lengths"].tolist() == [16000, 8000]
    assert batch["video"].shape == (2, 8, 3, 32, 32) and batch["video_lengths"].tolist() == [8, 4]
    assert batch["video_mask"].sum(1).tolist() == [8, 4] and batch["audio_mask"][1, 8000:].any().item() is False
    assert batch["audio"][1, 8000:].abs().max() == 0 and batch["video"][1, 4:].max() == 0
    assert batch["start"].dtype == torch.float64 and batch["label"].tolist() == [items[0]["label"]] * 2
    assert batch["sample_rate"] == 16000 and batch["fps"] == 8.0 and batch["audio_context"].shape == (2, 400)


def _one_pass(media, spec: ReadSpec):
    clip = ClipInfo(media)
    start, end = clip_span(clip, spec)
    return collate([read_item(clip, start, end - start, spec)])


@pytest.mark.parametrize("source", ["av", "av44k", "synthetic"])
def test_streamed_windows_give_the_one_pass_tokens(media, source):
    """Audio from decord (av.mp4, av44k.mkv) and generated clips: windows of 0.5 s, AV tokens."""
    path = SyntheticClip(2, 7, 3.25) if source == "synthetic" else str(media[source])
    tokenizer = AVTokenizer(
        dim=32, video=VideoTokenizer(dim=32, size=32), audio=AudioTokenizer(dim=32, frames_per_token=5)
    )
    with torch.no_grad():
        whole = tokenizer(_one_pass(path, SPEC))
        streamed = cat_tokens([tokenizer(w) for w in iter_windows(path, 0.5, SPEC)])
    assert streamed.mask.shape == whole.mask.shape and whole.mask.sum() > 0
    assert torch.equal(streamed.timestamps, whole.timestamps) and torch.equal(streamed.modality, whole.modality)
    assert torch.allclose(streamed.targets, whole.targets, atol=1e-4)
    assert torch.allclose(streamed.embeddings, whole.embeddings, atol=1e-4)


def test_streamed_resampled_audio_gives_the_one_pass_tokens(media):
    spec = ReadSpec(("audio",))
    tokenizer = AudioTokenizer(dim=16)
    with torch.no_grad():
        whole = tokenizer(_one_pass(str(media["wav44k"]), spec))
        windows = list(iter_windows(str(media["wav44k"]), 0.32, spec))
        streamed = cat_tokens([tokenizer(w) for w in windows])
    assert len(windows) == 8 and whole.mask.shape == (1, 62)
    assert torch.allclose(streamed.targets, whole.targets, atol=1e-4)
    assert torch.allclose(streamed.timestamps, whole.timestamps)


def test_iter_windows_raises_for_a_bad_file(media):
    with pytest.raises(MediaError, match="no audio stream"):
        next(iter_windows(str(media["video_only"]), 1.0, SPEC))
    assert np.isclose(
        sum(len(w["audio"][0]) for w in iter_windows(str(media["wav16k"]), 1.0, ReadSpec(("audio",)))), 40000
    )


def test_a_video_without_sound_reads_as_silence_only_when_asked(media):
    clip = ClipInfo(str(media["video_only"]))  # 2 s of video, no audio track
    silence = ReadSpec(size=32, missing_audio="silence")
    assert clip_span(clip, silence) == (0.0, pytest.approx(2.0))
    item = read_item(clip, 0.5, 1.0, silence)
    assert item["audio"].shape == (16000,) and item["audio_context"].shape == (400,)
    assert item["audio"].abs().max() == 0 and item["audio_context"].abs().max() == 0
    assert item["video"].shape == (8, 3, 32, 32) and item["video"].float().mean() > 0
    windows = list(iter_windows(str(media["video_only"]), 0.5, silence))
    assert len(windows) == 4 and all(w["audio"].shape == (1, 8000) for w in windows)
    assert all(w["audio_silent"].tolist() == [True] for w in windows)  # read, not scored (Tokens.scored)
    heard = next(iter_windows(str(media["av"]), 0.5, silence))
    assert heard["audio_silent"].tolist() == [False]
    with pytest.raises(MediaError, match="no audio stream"):
        clip_span(clip, ReadSpec(size=32))  # the default: a file without the stream is a bad file
    longer = ReadSpec(("audio", "video"), size=32, missing_audio="silence", min_seconds=60)
    with pytest.raises(MediaError, match=r"only [\d.]+ s of video in the clip"):  # (it has no audio to be short of)
        clip_span(clip, longer)
    with pytest.raises(ValueError, match="missing_audio must be one of"):
        ReadSpec(missing_audio="zeros")


def test_a_clip_just_short_of_the_least_says_how_long_it_is(tmp_path):
    """639 samples at 16 kHz were "only 0.040 s of audio in the clip (min_seconds=0.04)"."""
    path = tmp_path / "short.wav"
    sf.write(path, np.full(639, 0.1, dtype=np.float32), 16000)
    with pytest.raises(MediaError, match=r"only 0.0399375 s of audio in the clip \(data.min_seconds=0.04\)$"):
        clip_span(ClipInfo(str(path)), ReadSpec(modalities=("audio",), min_seconds=0.04))


def test_a_clip_shorter_than_a_token_says_so_not_a_data_setting_that_embedding_lacks(tmp_path):
    from ttt_mm.tokenizers import AudioTokenizer

    path = tmp_path / "short.wav"
    sf.write(path, np.full(500, 0.1, dtype=np.float32), 16000)
    spec = ReadSpec.for_tokenizer(AudioTokenizer(dim=16, frames_per_token=4))
    with pytest.raises(MediaError, match=r"only 0.03125 s of audio in the clip \(less than one token step, 0.04 s\)$"):
        clip_span(ClipInfo(str(path)), spec)
