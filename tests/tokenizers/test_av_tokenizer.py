"""AVTokenizer: step layout, alignment of audio and video clocks, padded targets, inverse."""

from __future__ import annotations

import pytest
import torch

from ttt_mm.data import ReadSpec, SyntheticClip, collate
from ttt_mm.data.datasets import read_item
from ttt_mm.data.sources import ClipInfo
from ttt_mm.tokenizers import AUDIO, VIDEO, AudioTokenizer, AVTokenizer, Decoding, VideoTokenizer


@pytest.fixture
def tokenizer() -> AVTokenizer:
    torch.manual_seed(0)
    pixels = VideoTokenizer(dim=32, size=32, target_pool=1)  # video targets wider than audio ones, inverted exactly
    return AVTokenizer(dim=32, audio=AudioTokenizer(dim=32, frames_per_token=5), video=pixels)


@pytest.fixture
def batch() -> dict:
    items = [read_item(ClipInfo(SyntheticClip(0, i)), 3.0, 1.375, ReadSpec(size=32)) for i in range(2)]
    return collate(items)


def test_defaults():
    tokenizer = AVTokenizer()
    assert (tokenizer.tokens_per_step, tokenizer.tokens_per_second, tokenizer.target_dim) == (69, 276.0, 400)
    assert tokenizer.target_dims == {AUDIO: 400, VIDEO: 96}  # video: 2 frames x 4 x 4 block means x 3
    assert tokenizer.decoding == Decoding(("audio", "video"), 16000, 8.0, 128, context_samples=240)
    assert tokenizer.slot_modality == (AUDIO,) * 5 + (VIDEO,) * 64
    assert tokenizer.slot_offsets[:6] == (0.0, 0.05, 0.1, 0.15, 0.2, 0.0)
    assert tokenizer.media_per_step == {"audio": 25, "video": 2}  # mel frames, video frames


def test_interleaving_order_and_alignment(tokenizer, batch):
    tokens = tokenizer(batch)
    steps = 5  # 1.375 s: 5 whole steps of 0.25 s (the last 0.125 s fills no tubelet)
    assert tokens.mask.shape == (2, steps * 9) and tokens.mask.all()
    layout = torch.tensor([AUDIO] * 5 + [VIDEO] * 4).repeat(steps)
    assert torch.equal(tokens.modality[0], layout)
    clock = tokens.timestamps[0].reshape(steps, 9)
    video_time = clock[:, 5:]
    torch.testing.assert_close(
        video_time,
        3.0 + torch.arange(steps, dtype=torch.float64)[:, None] * 0.25 + torch.zeros(1, 4, dtype=torch.float64),
    )
    audio_time = clock[:, :5]  # the audio of each step lies within the step's video interval
    assert ((audio_time >= video_time[:, :1] - 1e-6) & (audio_time < video_time[:, :1] + 0.25)).all()
    torch.testing.assert_close(audio_time.flatten(), 3.0 + torch.arange(25, dtype=torch.float64) * 0.05)


def test_targets_are_padded_per_modality_and_invert(tokenizer, batch):
    tokens = tokenizer(batch)
    audio_rows = tokens.modality == AUDIO
    assert tokens.targets[audio_rows][:, 400:].abs().max() == 0
    assert tokens.targets[~audio_rows].abs().sum() > 0
    media = tokenizer.invert(tokens.targets, tokens.target_stats)
    assert torch.equal(media["video"], batch["video"][:, :10])
    expected_mel = tokenizer.audio.invert(tokenizer.audio(batch).targets[:, :25])["audio"]
    assert torch.allclose(media["audio"], expected_mel, atol=1e-5)


def test_a_shorter_modality_is_masked(tokenizer, batch):
    batch = dict(batch, audio_lengths=torch.tensor([22000, 8000]))  # row 1: audio for 0.5 s only
    tokens = tokenizer(batch)
    audio_valid = (tokens.mask & (tokens.modality == AUDIO)).sum(1)
    assert audio_valid.tolist() == [25, 10] and (tokens.mask & (tokens.modality == VIDEO)).sum(1).tolist() == [20, 20]
    assert tokens.embeddings[1][~tokens.mask[1]].abs().sum() == 0


def test_sound_that_ends_before_the_picture_in_every_row_masks_its_steps_and_keeps_the_video(tokenizer, batch):
    """A batch of a file's last window, where the sound (the tensor itself, not a length) ends first."""
    batch = dict(batch, audio=batch["audio"][:, :8000], audio_lengths=torch.tensor([8000, 8000]))  # 0.5 s
    tokens = tokenizer(batch)
    assert tokens.mask.shape == (2, 5 * 9)  # the video's 5 steps, not the sound's 2
    assert (tokens.mask & (tokens.modality == VIDEO)).sum(1).tolist() == [20, 20]
    assert (tokens.mask & (tokens.modality == AUDIO)).sum(1).tolist() == [10, 10]


def test_sound_that_ends_inside_a_step_keeps_its_tokens_there_however_it_ends(tokenizer, batch):
    """Sound to 0.55 s: the 0.05 s of it in the third step was dropped where the tensor itself ended
    there, and kept where a length said so, over a longer tensor."""
    cut = dict(batch, audio=batch["audio"][:, :8800], audio_lengths=torch.tensor([8800, 8800]))
    told = dict(batch, audio_lengths=torch.tensor([8800, 8800]))
    real = [(t.mask & (t.modality == AUDIO)).sum(1).tolist() for t in map(tokenizer, (cut, told))]
    assert real == [[11, 11], [11, 11]]


def test_mismatched_rates_are_refused():
    with pytest.raises(ValueError, match="giving 6.25 audio tokens per step"):
        AVTokenizer(dim=16, audio=AudioTokenizer(dim=16), video=VideoTokenizer(dim=16))
    with pytest.raises(ValueError, match=r"\(5512.5 samples at 22050 Hz\) and an audio token 800 samples"):
        AVTokenizer(dim=16, audio=AudioTokenizer(dim=16, sample_rate=22050, frames_per_token=5))
    with pytest.raises(ValueError, match="must both equal dim 16"):
        AVTokenizer(dim=16, audio=AudioTokenizer(dim=8, frames_per_token=5), video=VideoTokenizer(dim=16))


def test_a_silent_track_read_in_place_of_sound_is_not_scored(tokenizer, batch):
    """Per row, as collated; or one flag for a lone item, as the data benchmark passes it."""
    audio = tokenizer(batch).modality == AUDIO
    rows = tokenizer(dict(batch, audio_silent=torch.tensor([True, False])))
    assert rows.mask.all() and torch.equal(rows.scored[0], ~audio[0]) and rows.scored[1].all()
    lone = tokenizer({k: v[:1] if torch.is_tensor(v) else v for k, v in batch.items()} | {"audio_silent": True})
    assert torch.equal(lone.scored[0], ~audio[0])
