"""AudioTokenizer: counts, clock, causal framing, context, targets and their inverse."""

from __future__ import annotations

import pytest
import torch
import torchaudio

from ttt_mm.tokenizers import AUDIO, AudioTokenizer


@pytest.fixture
def tokenizer() -> AudioTokenizer:
    torch.manual_seed(0)
    return AudioTokenizer(dim=24)


@pytest.mark.parametrize("n", [640, 6399, 16000, 20011], ids=lambda n: f"n{n}")
def test_token_count_and_clock(tokenizer, n):
    audio = torch.randn(2, n) * 0.1
    tokens = tokenizer({"audio": audio, "start": torch.tensor([0.0, 12.5]), "audio_lengths": torch.tensor([n, n // 2])})
    count = n // 640
    assert tokens.embeddings.shape == (2, count, 24) and tokens.targets.shape == (2, count, 320)
    assert count == int(tokenizer.tokens_per_second * n / 16000 + 1e-9)  # 25 tokens per second
    torch.testing.assert_close(tokens.timestamps[1], 12.5 + torch.arange(count, dtype=torch.float64) * 0.04)
    assert tokens.mask.sum(1).tolist() == [count, (n // 2) // 640]
    assert (tokens.modality == AUDIO).all()
    assert tokens.embeddings[1, (n // 2) // 640 :].abs().sum() == 0  # padding is zero


def test_targets_are_normalized_log_mel_and_invert_back(tokenizer):
    audio = torch.randn(1, 8000) * 0.2
    tokens = tokenizer({"audio": audio})
    mel = torchaudio.transforms.MelSpectrogram(
        16000, n_fft=400, hop_length=160, n_mels=80, center=False, norm="slaney", mel_scale="slaney"
    )
    reference = torch.log(mel(torch.cat([torch.zeros(1, 240), audio], 1)) + 1e-6).transpose(1, 2)  # [1, 50, 80]
    inverted = tokenizer.invert(tokens.targets)["audio"]
    assert inverted.shape == (1, 48, 80)  # 12 tokens x 4 frames (the last partial token is dropped)
    assert torch.allclose(inverted, reference[:, :48], atol=1e-4)
    assert torch.allclose(tokens.targets.reshape(1, 48, 80), (reference[:, :48] + 9.0) / 4.0, atol=1e-4)


def test_tokens_do_not_see_the_future(tokenizer):
    audio = torch.randn(1, 6400) * 0.1
    changed = audio.clone()
    changed[:, 3200:] = torch.randn(1, 3200)  # everything from token 5 on
    a, b = tokenizer({"audio": audio}), tokenizer({"audio": changed})
    assert torch.equal(a.targets[:, :5], b.targets[:, :5])
    assert not torch.allclose(a.targets[:, 5], b.targets[:, 5])


def test_left_context_makes_a_window_match_the_longer_pass(tokenizer):
    audio = torch.randn(1, 16000) * 0.1
    whole = tokenizer({"audio": audio})
    window = tokenizer({"audio": audio[:, 6400:], "audio_context": audio[:, :6400], "start": 0.4})
    assert torch.allclose(window.targets, whole.targets[:, 10:], atol=1e-5)
    assert torch.allclose(window.timestamps, whole.timestamps[:, 10:])
    with pytest.raises(ValueError, match="needs 240"):
        tokenizer({"audio": audio, "audio_context": audio[:, :100]})


def test_silence_is_finite_and_rates_are_checked(tokenizer):
    tokens = tokenizer({"audio": torch.zeros(1, 3200)})
    assert torch.isfinite(tokens.targets).all() and tokens.targets.std() == 0
    with pytest.raises(ValueError, match="sample_rate=22050"):
        tokenizer({"audio": torch.zeros(1, 3200), "sample_rate": 22050})


def test_gradients_reach_the_embedding(tokenizer):
    tokens = tokenizer({"audio": torch.randn(2, 4000)})
    tokens.embeddings.square().mean().backward()
    assert tokenizer.proj.weight.grad is not None and tokenizer.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "setting", ["sample_rate", "win_length", "hop_length", "n_mels", "frames_per_token", "mel_std", "dim"]
)
def test_a_size_or_rate_that_is_not_positive_is_refused_by_name(setting):
    """(n_mels=0 trained on NaN targets; frames_per_token=0 divided by zero in the token rate)"""
    with pytest.raises(ValueError, match=f"^{setting} must be positive; got 0$"):
        AudioTokenizer(**{setting: 0})


@pytest.mark.parametrize(
    "setting,value,said",
    [
        ("n_mels", 80.0, "a whole number; got 80.0"),
        ("hop_length", "160", "a whole number; got '160'"),
        ("mel_std", "4", "a number; got '4'"),
        ("sample_rate", True, "a whole number; got True"),
    ],
)
def test_a_size_or_rate_of_the_wrong_type_is_refused_by_name(setting, value, said):
    """(a float size failed later as a tensor shape; a string in a comparison, with Python's TypeError)"""
    with pytest.raises(ValueError, match=f"^{setting} must be {said}$"):
        AudioTokenizer(**{setting: value})


def test_integer_samples_are_refused_not_read_as_loud_floats(tokenizer):
    with pytest.raises(ValueError, match=r"^audio must be float samples in \[-1, 1\], as decoded; got torch.int16$"):
        tokenizer({"audio": torch.zeros(1, 3200, dtype=torch.int16)})
