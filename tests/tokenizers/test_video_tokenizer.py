"""VideoTokenizer: counts, time-major raster order, per-patch targets, exact inverse, clock."""

from __future__ import annotations

import pytest
import torch

from ttt_mm.tokenizers import VIDEO, VideoTokenizer


@pytest.fixture
def tokenizer() -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(dim=32, size=64, patch=16, tubelet=2, target_pool=1)  # every pixel: an exact inverse


@pytest.mark.parametrize("frames", [2, 7, 16], ids=lambda t: f"T{t}")
def test_token_count_and_clock(tokenizer, frames):
    video = torch.randint(0, 256, (2, frames, 3, 64, 64), dtype=torch.uint8)
    lengths = torch.tensor([frames, min(frames, 3)])  # row 1: one tubelet and half of one (padding: masked)
    tokens = tokenizer({"video": video, "start": torch.tensor([1.0, 2.0]), "video_lengths": lengths})
    steps = frames // 2
    assert tokens.embeddings.shape == (2, steps * 16, 32) and tokens.targets.shape == (2, steps * 16, 1536)
    seconds = frames / 8  # tokens per second times the whole steps in the clip
    assert (
        steps * 16 == tokenizer.tokens_per_second * (seconds // tokenizer.seconds_per_step) * tokenizer.seconds_per_step
    )
    expected = 1.0 + torch.arange(steps, dtype=torch.float64).repeat_interleave(16) * 0.25
    torch.testing.assert_close(tokens.timestamps[0], expected)
    assert tokens.mask.sum(1).tolist() == [steps * 16, 16] and (tokens.modality == VIDEO).all()


def test_order_is_time_major_then_raster(tokenizer):
    video = torch.zeros(1, 6, 3, 64, 64, dtype=torch.uint8)
    step, row, col = 2, 1, 3
    patch = video[0, 2 * step + 1, :, 16 * row : 16 * row + 16, 16 * col : 16 * col + 16]
    patch[:, ::2] = 255  # stripes: the only patch whose normalized target is not zero
    tokens = tokenizer({"video": video})
    busy = tokens.targets.abs().sum(-1)[0].nonzero().flatten().tolist()
    assert busy == [step * 16 + row * 4 + col]


def test_embeddings_are_the_tubelet_convolution_of_the_normalized_frames(tokenizer):
    video = torch.randint(0, 256, (2, 4, 3, 64, 64), dtype=torch.uint8)
    x = (video.float().div(255) - tokenizer.mean[:, None, None]) / tokenizer.std[:, None, None]
    x = x.transpose(1, 2)  # [B, 3, T, S, S]
    conv = tokenizer.proj(x).flatten(2).transpose(1, 2) + tokenizer.pos.repeat(2, 1)
    assert torch.allclose(tokenizer({"video": video}).embeddings, conv, atol=1e-5)


def test_targets_are_per_patch_normalized_and_invert_exactly(tokenizer):
    video = torch.randint(0, 256, (2, 4, 3, 64, 64), dtype=torch.uint8)
    tokens = tokenizer({"video": video})
    per_channel = tokens.targets.reshape(2, 32, 2 * 16 * 16, 3)
    assert torch.allclose(per_channel.mean(2), torch.zeros(2, 32, 3), atol=1e-4)
    assert torch.allclose(per_channel.std(2, unbiased=False), torch.ones(2, 32, 3), atol=1e-3)
    assert torch.equal(tokenizer.invert(tokens.targets, tokens.target_stats)["video"], video)
    assert tokenizer.invert(tokens.targets)["video"].shape == video.shape  # display without stats


def test_pooled_targets_are_block_means_and_invert_to_the_blocks():
    tokenizer = VideoTokenizer(dim=32, size=64, patch=16, tubelet=2, target_pool=4)
    assert tokenizer.target_dim == 2 * 4 * 4 * 3
    video = torch.randint(0, 256, (2, 4, 3, 64, 64), dtype=torch.uint8)
    tokens = tokenizer({"video": video})
    assert tokens.targets.shape == (2, 32, 96)
    blocks = torch.nn.functional.avg_pool2d(video.flatten(0, 1).float() / 255, 4).unflatten(
        0, (2, 4)
    )  # [2, 4, 3, 16, 16]
    token = blocks[1, 2:4, :, 4:8, 8:12].permute(0, 2, 3, 1).reshape(-1, 3)  # step 1, patch row 1, column 2
    expected = (token - token.mean(0)) / (token.var(0, unbiased=False) + 1e-6).sqrt()
    assert torch.allclose(tokens.targets[1, 16 + 4 + 2].reshape(-1, 3), expected, atol=1e-4)
    shown = tokenizer.invert(tokens.targets, tokens.target_stats)["video"].float()
    upsampled = blocks.flatten(0, 1).repeat_interleave(4, -1).repeat_interleave(4, -2).unflatten(0, (2, 4)) * 255
    assert (shown - upsampled).abs().max() <= 0.5 + 1e-3  # the block means, rounded to uint8
    with pytest.raises(ValueError, match="does not divide patch"):
        VideoTokenizer(patch=16, target_pool=3)


def test_fewer_frames_than_a_tubelet_give_no_tokens(tokenizer):
    tokens = tokenizer({"video": torch.zeros(2, 1, 3, 64, 64, dtype=torch.uint8)})
    assert (
        tokens.embeddings.shape == (2, 0, 32) and tokens.targets.shape == (2, 0, 1536) and tokens.mask.shape == (2, 0)
    )


def test_flat_frames_are_finite_and_sizes_are_checked(tokenizer):
    tokens = tokenizer({"video": torch.full((1, 2, 3, 64, 64), 77, dtype=torch.uint8)})
    assert torch.isfinite(tokens.targets).all() and tokens.targets.abs().max() == 0
    with pytest.raises(ValueError, match=r"expects \(3, 64, 64\)"):
        tokenizer({"video": torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8)})
    with pytest.raises(ValueError, match="not a multiple of patch"):
        VideoTokenizer(size=60, patch=16)


def test_gradients_reach_the_embedding(tokenizer):
    tokens = tokenizer({"video": torch.randint(0, 256, (1, 4, 3, 64, 64), dtype=torch.uint8)})
    tokens.embeddings.square().mean().backward()
    assert tokenizer.proj.weight.grad.abs().sum() > 0 and tokenizer.pos.grad.abs().sum() > 0


@pytest.mark.parametrize("setting", ["fps", "size", "patch", "tubelet", "target_pool", "dim"])
def test_a_size_or_rate_that_is_not_positive_is_refused_by_name(setting):
    """(patch=0 and tubelet=0 divided by zero; a negative tubelet failed in a convolution's shape)"""
    with pytest.raises(ValueError, match=f"^{setting} must be positive; got -2$"):
        VideoTokenizer(**{setting: -2})


@pytest.mark.parametrize(
    "setting,value,said", [("size", 64.0, "a whole number; got 64.0"), ("fps", "8", "a number; got '8'")]
)
def test_a_size_or_rate_of_the_wrong_type_is_refused_by_name(setting, value, said):
    with pytest.raises(ValueError, match=f"^{setting} must be {said}$"):
        VideoTokenizer(**{setting: value})


def test_float_frames_are_refused_not_divided_by_255_again(tokenizer):
    with pytest.raises(ValueError, match=r"^video must be uint8 frames .* of 0-255, as decoded; got torch.float32$"):
        tokenizer({"video": torch.rand(1, 2, 3, 64, 64)})
