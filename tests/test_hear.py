"""The HEAR common API over a tiny audio checkpoint."""

from __future__ import annotations

import re

import pytest
import torch
from embedhelpers import TOKENIZERS, one_pass, save_checkpoint

from ttt_mm.embed import Embedder, hear


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: threads only spin-wait on a busy CPU
    ckpt = save_checkpoint(tmp_path_factory.mktemp("hear") / "audio.ckpt", TOKENIZERS["audio"])
    assert isinstance(hear.load_model(ckpt, device="cpu"), hear.HearModel)
    # windows of 0.4 s: 2 s of audio spans several, so the carried state is exercised
    yield hear.HearModel(Embedder.from_checkpoint(ckpt, window_seconds=0.4, device="cpu"))
    torch.set_num_threads(threads)


def test_attributes(model):
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000 and model.timestamp_embedding_size == model.scene_embedding_size == 32


def test_timestamp_and_scene_embeddings(model):
    audio = 0.1 * torch.randn(3, 16000 * 2 + 100)  # 2 s and a bit: 50 whole tokens of 40 ms
    emb, ms = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (3, 50, 32) and ms.shape == (3, 50)
    torch.testing.assert_close(ms[1], 20.0 + 40.0 * torch.arange(50, dtype=torch.float32))  # centre of each token
    reference, _ = one_pass(model.embedder.tokenizer, model.embedder.backbone, {"audio": audio})
    assert (emb - reference).abs().max().item() < 1e-4
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, 32)
    torch.testing.assert_close(scene, emb.mean(1), atol=1e-5, rtol=0)
    single, _ = hear.get_timestamp_embeddings(audio[2:], model)
    assert (single[0] - emb[2]).abs().max().item() < 1e-5  # sounds in a batch do not mix


def test_clear_errors(model, tmp_path):
    with pytest.raises(ValueError, match=r"shorter than one token \(640 samples = 40 ms at 16000 Hz\)$"):
        hear.get_scene_embeddings(torch.zeros(2, 100), model)
    with pytest.raises(ValueError, match=r"^audio of 0 samples is shorter than one token .* Hz\)$"):  # not transposed
        hear.get_scene_embeddings(torch.zeros(2, 0), model)
    with pytest.raises(ValueError, match=r"2 samples .* \[n_samples, channels\] array .* audio.T.mean"):
        hear.get_scene_embeddings(torch.rand(16000, 2), model)  # stereo as soundfile reads it
    with pytest.raises(ValueError, match=r"\[n_sounds, n_samples\]"):
        hear.get_scene_embeddings(torch.zeros(100), model)
    with pytest.raises(ValueError, match="with at least one sound; got \\(0, 16000\\)"):
        hear.get_scene_embeddings(torch.zeros(0, 16000), model)
    with pytest.raises(TypeError, match="must be a torch.Tensor .* got ndarray .*torch.from_numpy") as said:
        hear.get_timestamp_embeddings(torch.zeros(1, 16000).numpy(), model)
    stereo = torch.rand(16000, 2).numpy()  # (the hint once made a file's two channels two sounds)
    hinted = eval(re.search(r"torch\.from_numpy\(.*\)\[None\]", str(said.value))[0], {"torch": torch, "x": stereo})
    assert hear.get_scene_embeddings(hinted, model).shape == (1, model.scene_embedding_size)
    broken = torch.zeros(3, 16000)
    broken[1, 5], broken[2, 7] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"NaN or infinite samples \(rows \[1, 2\]\)"):
        hear.get_timestamp_embeddings(broken, model)
    unscaled = torch.rand(3, 16000) * 2 - 1
    unscaled[2] *= 32767  # int16 samples turned to float but not divided by their full scale
    with pytest.raises(ValueError, match=r"audio peaks above 2 \(rows \[2\]\): .* e.g. 32768 for int16"):
        hear.get_scene_embeddings(unscaled, model)
    with pytest.raises(ValueError, match="needs the path"):
        hear.load_model("")
    with pytest.raises(ValueError, match="is a directory, not a checkpoint file"):
        hear.load_model(tmp_path)
    av = save_checkpoint(tmp_path / "av.ckpt", TOKENIZERS["av"])
    with pytest.raises(ValueError, match="reads audio only; this one reads audio and video"):
        hear.load_model(av)


def test_a_model_moved_to_bfloat16_is_refused_with_the_way_back(tmp_path):
    """Its float32 log-mel frames met bfloat16 weights: a matmul's "float != c10::BFloat16"."""
    ckpt = save_checkpoint(tmp_path / "audio.ckpt", TOKENIZERS["audio"])
    half = hear.load_model(ckpt, device="cpu").to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"^HEAR embeds with float32 weights; this model's are torch.bfloat16: model"):
        hear.get_scene_embeddings(torch.zeros(1, 16000), half)
    assert hear.get_scene_embeddings(torch.zeros(1, 16000), half.float()).shape == (1, half.scene_embedding_size)
    half.embedder.backbone.to(torch.bfloat16)  # (a part cast alone: its first weights, the tokenizer's, stay float32)
    with pytest.raises(ValueError, match=r"^HEAR embeds with float32 weights; this model's are torch.bfloat16: model"):
        hear.get_scene_embeddings(torch.zeros(1, 16000), half)


def test_integer_audio_is_an_error_not_embedded_unscaled(model):
    pcm = (0.1 * torch.randn(2, 16000) * 32768).to(torch.int16)
    for embed in (hear.get_timestamp_embeddings, hear.get_scene_embeddings):
        with pytest.raises(ValueError, match=r"floating point in \[-1, 1\]; got torch.int16 .*divide by 32768\)"):
            embed(pcm, model)
        with pytest.raises(
            ValueError, match=r"got torch.int64 \(integer samples: divide by the full scale of their bit"
        ):
            embed(pcm.long(), model)  # (torch.tensor of a list of 16-bit samples: 32768 still)
    assert hear.get_scene_embeddings(pcm / 32768, model).shape == (2, 32)
