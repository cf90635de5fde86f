"""The one checkpoint loader: the weights_only rule, and checkpoints of the string-mixer era."""

from __future__ import annotations

import pathlib
import zipfile
from functools import partial

import lightning
import pytest
import torch

from ttt_mm.backbone import Backbone
from ttt_mm.checkpoint import load_model, load_parts
from ttt_mm.data import ReadSpec, SyntheticClip, iter_windows
from ttt_mm.embed import Embedder
from ttt_mm.layers import AttentionLayer, TTTLayer
from ttt_mm.tokenizers import AudioTokenizer, AVTokenizer, VideoTokenizer

OLD_TOKENIZER = {  # as the 0.1 configs saved it: no target_pool (then 1 by default)
    "_target_": "ttt_mm.tokenizers.AVTokenizer",
    "dim": 32,
    "audio": {"_target_": "ttt_mm.tokenizers.AudioTokenizer", "dim": 32, "n_mels": 16, "frames_per_token": 5},
    "video": {"_target_": "ttt_mm.tokenizers.VideoTokenizer", "dim": 32, "fps": 8.0, "size": 32, "patch": 16},
}


def old_backbone(mixer: str, variant: str) -> dict:
    return {
        "_target_": "ttt_mm.backbone.Backbone",
        "dim": 32,
        "depth": 2,
        "num_heads": 2,
        "mixer": mixer,
        "mini_batch_size": 8,
        "base_lr": None,
        "variant": variant,
        "mlp_ratio": 4.0,
        "checkpoint_activations": False,
    }


def the_model_it_meant(mixer: str, variant: str) -> tuple[AVTokenizer, Backbone]:
    tokenizer = AVTokenizer(
        32, audio=AudioTokenizer(32, n_mels=16, frames_per_token=5), video=VideoTokenizer(32, size=32, target_pool=1)
    )
    mamba = variant == "mamba"
    if mixer == "attention":
        factory = partial(AttentionLayer, num_heads=2)
    else:
        inner = mixer.removeprefix("ttt_")
        factory = partial(TTTLayer, num_heads=2, inner=inner, mini_batch_size=8, use_gate=mamba, share_qk=mamba)
    return tokenizer, Backbone(32, 2, factory, variant=variant)


def save_old(path: pathlib.Path, mixer: str, variant: str) -> tuple[pathlib.Path, AVTokenizer, Backbone]:
    """A checkpoint as the code before the injected mixer wrote it (the weights' names are unchanged)."""
    torch.manual_seed(0)
    tokenizer, backbone = the_model_it_meant(mixer, variant)
    head = torch.nn.Linear(32, tokenizer.target_dim)
    state = {f"tokenizer.{k}": v for k, v in tokenizer.state_dict().items()}
    state |= {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state |= {f"head.{k}": v for k, v in head.state_dict().items()}
    hparams = {"tokenizer": OLD_TOKENIZER, "backbone": old_backbone(mixer, variant), "predict": "next_step"}
    hparams |= {"loss": "mse", "lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.05, "warmup_steps": 100}
    payload = {"state_dict": state, "hyper_parameters": hparams, "pytorch-lightning_version": lightning.__version__}
    torch.save(payload, path)
    return path, tokenizer, backbone


@pytest.fixture(scope="module")
def window():
    return next(iter_windows(SyntheticClip(0, 1, 2.0), 2.0, ReadSpec(("audio", "video"), size=32)))


@pytest.mark.parametrize("mixer,variant", [("ttt_linear", "mamba"), ("ttt_mlp", "transformer"), ("attention", "mamba")])
def test_a_checkpoint_naming_its_mixer_loads_as_the_model_it_was(tmp_path, window, mixer, variant):
    path, tokenizer, backbone = save_old(tmp_path / "old.ckpt", mixer, variant)
    parts = load_parts(path)
    assert parts.hparams["backbone"]["mixer"]["_partial_"] is True
    assert parts.tokenizer.video.target_pool == 1 and parts.tokenizer.decoding.size == 32
    with torch.no_grad():
        expected = backbone(tokenizer(window).embeddings)[0]
        torch.testing.assert_close(parts.backbone(parts.tokenizer(window).embeddings)[0], expected)

    model = load_model(path)  # what evaluate loads
    assert not model.training and model.hparams.lr == 1e-3
    with torch.no_grad():
        tokens, pred, _ = model(window)
        loss, _, n, _ = model.losses(tokens, pred)
    assert torch.isfinite(loss) and n > 0
    embedded = Embedder.from_checkpoint(path, device="cpu").embed_tensor(
        audio=window["audio"][0], video=window["video"][0]
    )
    assert embedded.embeddings.shape == (8 * 9, 32)  # 8 steps of 5 audio tokens and 4 patches


class NotPlain:
    """Anything but tensors and plain types: unpickling it could run code."""


def test_checkpoints_load_weights_only_unless_the_caller_trusts_the_file(tmp_path):
    path, _, _ = save_old(tmp_path / "plain.ckpt", "ttt_linear", "transformer")
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["note"] = NotPlain()
    torch.save(ckpt, tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match="holds objects other than tensors and plain types.*weights_only=false"):
        load_parts(tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match="weights_only=false"):
        load_model(tmp_path / "pickled.ckpt")
    assert load_parts(tmp_path / "pickled.ckpt", weights_only=False).hparams["note"].__class__ is NotPlain
    model = load_model(tmp_path / "pickled.ckpt", weights_only=False)  # the unknown key is left out
    assert model.backbone.depth == 2


def test_a_model_loaded_onto_a_gpu_this_machine_lacks_is_one_line_not_a_driver_error(tmp_path, monkeypatch):
    path, _, _ = save_old(tmp_path / "old.ckpt", "ttt_linear", "transformer")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ValueError, match="^device=cuda, but this machine has no usable CUDA GPU; use device=cpu or auto$"
    ):
        load_model(path, device="cuda")
    assert next(load_model(path, device="auto").parameters()).device == torch.device("cpu")
    with pytest.warns(DeprecationWarning, match="map_location is deprecated; pass device"):
        assert next(load_model(path, map_location="cpu").parameters()).device == torch.device("cpu")
    with pytest.raises(ValueError, match="pass device='cuda' or map_location='cpu', not both"):  # (cpu won, unsaid)
        load_model(path, device="cuda", map_location="cpu")
    with pytest.raises(ValueError, match="pass device='cpu' or map_location='cuda', not both"):  # not cuda, unsaid
        load_model(path, device="cpu", map_location="cuda")
    monkeypatch.setattr(torch.mps, "is_available", lambda: False)
    with pytest.raises(
        ValueError, match="^device=mps, but this PyTorch cannot run on mps here; use device=cpu or auto$"
    ):
        load_model(path, device="mps")


def test_not_a_checkpoint_is_one_clear_error(tmp_path):
    (tmp_path / "notes.ckpt").write_text("hello")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint"):
        load_parts(tmp_path / "notes.ckpt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.ckpt")


@pytest.mark.parametrize(
    "ckpt,why",
    [
        ({"hyper_parameters": {"tokenizer": {}, "backbone": None}, "state_dict": {}}, "no tokenizer/backbone"),
        ({"hyper_parameters": {"tokenizer": {}, "backbone": "resnet50"}, "state_dict": {}}, "no tokenizer/backbone"),
        ({"hyper_parameters": [1], "state_dict": {}}, "no tokenizer/backbone"),
        ({"hyper_parameters": {"tokenizer": {}, "backbone": {}}, "state_dict": [1]}, "state_dict is no tensors"),
        ({"hyper_parameters": {"tokenizer": {}, "backbone": {}}, "state_dict": {"x": 3}}, "state_dict is no tensors"),
    ],
    ids=["backbone-none", "backbone-name", "hparams-list", "weights-list", "weight-int"],
)
def test_another_projects_checkpoint_is_one_clear_error(tmp_path, ckpt, why):
    """(another Lightning project's checkpoint: an AttributeError from deep inside the loader)"""
    torch.save(ckpt, tmp_path / "other.ckpt")
    for load in (load_parts, load_model):
        with pytest.raises(ValueError, match=f"other.ckpt is not a ttt_mm SequenceModel checkpoint .*{why}"):
            load(tmp_path / "other.ckpt")


def test_a_checkpoint_with_damaged_weights_is_one_clear_error(tmp_path):
    """torch.load does not check the archive's checksums: one changed byte in the weights loaded
    without a word and gave wrong embeddings (or NaN ones, blamed on the media)."""
    path, _, _ = save_old(tmp_path / "plain.ckpt", "ttt_linear", "transformer")
    with zipfile.ZipFile(path) as archive:
        weights = max(archive.infolist(), key=lambda member: member.file_size)  # a tensor's bytes, stored as they are
        start = weights.header_offset + 30 + len(weights.filename.encode()) + len(weights.extra)
    data = bytearray(path.read_bytes())
    data[start + weights.file_size // 2] ^= 0x40
    (tmp_path / "damaged.ckpt").write_bytes(data)
    for load in (load_parts, load_model):
        part = weights.filename.partition("/")[2]  # (data/0: the archive's top folder is the name it was saved under)
        assert part.startswith("data/") and "plain" in weights.filename
        with pytest.raises(ValueError, match=f"damaged.ckpt is damaged: its part {part} fails its checksum$"):
            load(tmp_path / "damaged.ckpt")
    with zipfile.ZipFile(tmp_path / "flat.ckpt", "w") as archive:  # (a zip of no folder: its part named whole)
        archive.writestr("weights.bin", bytes(range(200)))
    data = bytearray((tmp_path / "flat.ckpt").read_bytes())
    data[30 + len("weights.bin") + 100] ^= 0x40
    (tmp_path / "flat.ckpt").write_bytes(data)
    with pytest.raises(ValueError, match=r"flat.ckpt is damaged: its part weights.bin fails its checksum$"):
        load_parts(tmp_path / "flat.ckpt")


def _edited(tmp_path: pathlib.Path, name: str, edit) -> pathlib.Path:
    """A plain TTT checkpoint saved again as ``name`` after ``edit(ckpt)`` changed its dict."""
    path, _, _ = save_old(tmp_path / "plain.ckpt", "ttt_linear", "transformer")
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


def test_weights_that_disagree_with_the_settings_are_one_clear_error(tmp_path):
    deeper = _edited(tmp_path, "deeper.ckpt", lambda c: c["hyper_parameters"]["backbone"].update(depth=3))
    with pytest.raises(ValueError, match=r"deeper.ckpt \(backbone\) do not fit the model .*Missing key.*blocks\.2\."):
        load_parts(deeper)  # (one block more than the weights hold)
    with pytest.raises(ValueError, match=r"deeper.ckpt do not fit the model .*Missing key.*blocks\.2\."):
        load_model(deeper)


def test_settings_a_constructor_refuses_are_said_in_its_words(tmp_path):
    """(the message was Hydra's first line alone: "Error in call to target 'ttt_mm.backbone.Backbone':")"""
    refused = _edited(tmp_path, "refused.ckpt", lambda c: c["hyper_parameters"]["backbone"].update(depth=0))
    for load in (load_parts, load_model):
        with pytest.raises(
            ValueError, match=r"cannot rebuild the model of .*refused.ckpt: depth must be positive; got 0$"
        ):
            load(refused)


def test_weights_that_are_not_finite_are_one_clear_error_naming_them(tmp_path):
    """(a diverged run's checkpoint: evaluate scored it nan with exit 0)"""
    name = "backbone.blocks.0.mixer_norm.weight"
    diverged = _edited(tmp_path, "diverged.ckpt", lambda c: c["state_dict"][name].fill_(float("nan")))
    for load in (load_parts, load_model):
        with pytest.raises(
            ValueError, match=r"diverged.ckpt.* are not finite \((backbone\.)?blocks.0.mixer_norm.weight\)"
        ):
            load(diverged)
    load_model(tmp_path / "plain.ckpt")  # (finite: it loads)


@pytest.mark.parametrize("message", ["", "\n", "\nPytorchStreamReader failed reading file data/3"])
def test_a_load_error_is_said_by_its_first_line_whatever_its_message(tmp_path, monkeypatch, message):
    """An error whose message had no first line raised an IndexError instead of the ValueError."""
    path, _, _ = save_old(tmp_path / "old.ckpt", "ttt_linear", "transformer")

    def fails(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(torch, "load", fails)
    said = message.strip() or "RuntimeError"
    with pytest.raises(ValueError, match=f"cannot be read as a PyTorch checkpoint: {said}$"):
        load_parts(path)
