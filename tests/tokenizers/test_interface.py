"""What callers read from the `Tokenizer` interface agrees with the tokens each tokenizer makes."""

from __future__ import annotations

import pytest
import torch

from ttt_mm.data import ReadSpec, SyntheticClip, collate
from ttt_mm.data.datasets import read_item
from ttt_mm.data.sources import ClipInfo
from ttt_mm.tokenizers import AUDIO, VIDEO, AudioTokenizer, AVTokenizer, Tokenizer, VideoTokenizer
from ttt_mm.tokenizers.base import token_loss

TOKENIZERS = {
    "audio": lambda: AudioTokenizer(dim=16, n_mels=20),
    "video": lambda: VideoTokenizer(dim=16, size=32),
    "video-pixels": lambda: VideoTokenizer(dim=16, size=32, target_pool=1),
    "av": lambda: AVTokenizer(
        dim=16, audio=AudioTokenizer(dim=16, n_mels=20, frames_per_token=5), video=VideoTokenizer(dim=16, size=32)
    ),
    "av-pixels": lambda: AVTokenizer(
        dim=16,
        audio=AudioTokenizer(dim=16, n_mels=20, frames_per_token=5),
        video=VideoTokenizer(dim=16, size=32, target_pool=1),
    ),
}
EXACT = ("audio", "video-pixels", "av-pixels")  # targets that invert to the very media that was read


def batch_for(tokenizer: Tokenizer, seconds: float = 1.25) -> dict:
    d = tokenizer.decoding
    spec = ReadSpec(
        d.modalities, sample_rate=d.sample_rate or 16000, fps=d.fps or 8.0, size=d.size or 128, min_seconds=0.1
    )
    return collate([read_item(ClipInfo(SyntheticClip(0, i)), 2.0, seconds, spec) for i in range(2)])


@pytest.fixture(params=sorted(TOKENIZERS))
def tokenizer(request) -> Tokenizer:
    return TOKENIZERS[request.param]()


def test_the_slot_layout_is_the_layout_of_the_tokens(tokenizer):
    tokens = tokenizer(batch_for(tokenizer))
    P = tokenizer.tokens_per_step
    assert len(tokenizer.slot_modality) == len(tokenizer.slot_offsets) == P
    steps = tokens.mask.shape[1] // P
    assert steps == int(1.25 / tokenizer.seconds_per_step) and tokens.mask.all()  # 5 steps of 0.25 s, 31 of 0.04 s
    assert torch.equal(tokens.modality[0], torch.tensor(tokenizer.slot_modality).repeat(steps))
    start = 2.0 + torch.arange(steps, dtype=torch.float64)[:, None] * tokenizer.seconds_per_step
    expected = (start + torch.tensor(tokenizer.slot_offsets, dtype=torch.float64)[None]).reshape(-1)
    torch.testing.assert_close(tokens.timestamps[1], expected, rtol=0, atol=1e-12)  # float64: exact anywhere in a file


def test_decoding_names_the_streams_and_rates_the_tokenizer_checks(tokenizer):
    d = tokenizer.decoding
    assert set(d.modalities) == {{AUDIO: "audio", VIDEO: "video"}[m] for m in tokenizer.slot_modality}
    assert ("audio" in d.modalities) == (d.sample_rate is not None) and ("video" in d.modalities) == (d.fps is not None)
    batch = batch_for(tokenizer) | {"sample_rate": 8000, "fps": 4.0}
    with pytest.raises(ValueError, match="was decoded with"):
        tokenizer(batch)


def test_invert_gives_media_per_step_rows_per_step(tokenizer):
    tokens = tokenizer(batch_for(tokenizer))
    steps = tokens.mask.shape[1] // tokenizer.tokens_per_step
    media = tokenizer.invert(tokens.targets, tokens.target_stats)
    assert media.keys() == tokenizer.media_per_step.keys() == set(tokenizer.decoding.modalities)
    for name, per_step in tokenizer.media_per_step.items():
        assert media[name].shape[1] == steps * per_step


def test_a_clip_shorter_than_a_step_inverts_and_embeds_to_nothing(tokenizer):
    """Its tokens are [B, 0]; inverting them or embedding them again raised "cannot reshape tensor of 0
    elements" (a dimension left to -1)."""
    tokens = tokenizer(batch_for(tokenizer))
    none = tokens.targets[:, :0], None if tokens.target_stats is None else tokens.target_stats[:, :0]
    media = tokenizer.invert(*none)
    assert all(media[name].shape[:2] == (2, 0) for name in tokenizer.decoding.modalities)
    if none[1] is not None or "video" not in tokenizer.decoding.modalities:
        assert tokenizer.embed_targets(*none).shape == (2, 0, 16)


@pytest.mark.parametrize("name", ["video", "av"])
def test_targets_that_are_not_whole_steps_are_refused(name):
    tokenizer = TOKENIZERS[name]()
    tokens = tokenizer(batch_for(tokenizer))
    cut, stats = tokens.targets[:, 1:], tokens.target_stats[:, 1:]
    n, P = cut.shape[1], tokenizer.tokens_per_step
    for call in (tokenizer.invert, tokenizer.embed_targets):
        with pytest.raises(ValueError, match=f"^{n} tokens is not a whole number of steps of {P}$"):
            call(cut, stats)


def test_seconds_suggested_in_errors_read_back_as_the_whole_steps_they_stand_for(tokenizer):
    """At 22.05 kHz a step of 4 x 256 samples is 0.0464399... s: ``:g`` printed 7 of them as 0.325079,
    which is not whole steps, and the error that suggested it refused it again when typed."""
    odd = AudioTokenizer(dim=16, n_mels=20, sample_rate=22050, hop_length=256)
    for tok in (tokenizer, odd):
        for steps in (1, 7, 10, 333, 10**6):
            assert tok.whole_steps(float(tok.seconds_text(steps))) == steps
    assert odd.whole_steps(float(f"{7 * odd.seconds_per_step:g}")) is None  # (what was suggested)


def test_target_widths_mark_the_real_target_entries(tokenizer):
    tokens = tokenizer(batch_for(tokenizer))
    widths = tokenizer.target_widths(tokens.modality)
    assert widths.shape == tokens.mask.shape
    for modality, width in tokenizer.target_dims.items():
        chosen = tokens.modality == modality
        assert (widths[chosen] == width).all()
        assert tokens.targets[chosen][:, width:].abs().sum() == 0  # the rest is padding


@pytest.mark.parametrize("name", EXACT)
def test_embed_targets_of_true_targets_are_the_embeddings(name):
    tokenizer = TOKENIZERS[name]()
    tokens = tokenizer(batch_for(tokenizer))
    with torch.no_grad():
        again = tokenizer.embed_targets(tokens.targets, tokens.target_stats)
    torch.testing.assert_close(again, tokens.embeddings, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["video", "av"])
def test_embed_targets_of_block_means_embed_the_block_frames(name):
    tokenizer = TOKENIZERS[name]()
    batch = batch_for(tokenizer)
    tokens = tokenizer(batch)
    blocks = tokenizer.invert(tokens.targets, tokens.target_stats)["video"]  # each 4 x 4 block one colour
    assert not torch.equal(blocks, batch["video"][:, : blocks.shape[1]])
    with torch.no_grad():
        again = tokenizer.embed_targets(tokens.targets, tokens.target_stats)
        expected = tokenizer(batch | {"video": blocks}).embeddings
    video = tokens.modality == VIDEO
    torch.testing.assert_close(again[video], expected[video], atol=1e-5, rtol=0)


def test_token_loss_uses_only_the_real_entries_of_each_token():
    # token 0 has 2 real entries, token 1 has 3 (targets zero-padded to width 3)
    target = torch.tensor([[[1.0, 2.0, 0.0], [1.0, 1.0, 1.0]]])
    pred = torch.tensor([[[2.0, 4.0, 9.0], [1.0, 1.0, 4.0]]])  # the 9 is padding: ignored
    widths = torch.tensor([[2, 3]])
    # token 0: ((2-1)^2 + (4-2)^2) / 2 = 2.5; token 1: (0 + 0 + 9) / 3 = 3
    assert token_loss(pred, target, widths, "mse").tolist() == [[2.5, 3.0]]
    # l1: (1 + 2) / 2 = 1.5 and 3 / 3 = 1
    assert token_loss(pred, target, widths, "l1").tolist() == [[1.5, 1.0]]


def test_a_single_start_and_length_stand_for_every_row_of_a_batch(tokenizer):
    """A hand-built batch of two rows with ``"start": 0.5`` failed: "shape '[2]' is invalid for input of size 1"."""
    batch = batch_for(tokenizer)
    lengths = {k: v[0].item() for k, v in batch.items() if k.endswith("_lengths")}
    per_row = tokenizer(batch | {"start": torch.tensor([0.5, 0.5])})
    single = tokenizer(batch | {"start": 0.5} | lengths)
    torch.testing.assert_close(single.timestamps, per_row.timestamps)
    torch.testing.assert_close(single.embeddings, per_row.embeddings)
    assert lengths and (single.timestamps[:, 0] > 0.5 - 1e-9).all()
