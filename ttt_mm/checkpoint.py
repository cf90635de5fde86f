"""The one checkpoint loader: embed, evaluate, the linear probe, HEAR and training's resume checks read
``SequenceModel`` checkpoints through it (what Lightning saved, read back as a model or its parts).

The rule: checkpoints are read with ``torch.load(weights_only=True)``, which unpickles only tensors
and plain types, so a file cannot run code when it is opened. ``SequenceModel`` saves its
hyperparameters as plain types, so what training writes loads this way. ``weights_only=False``
also unpickles arbitrary objects (e.g. checkpoints whose hyperparameters hold other objects): pass it
only for files you trust.

Checkpoints written before the mixer was injected (``backbone: {mixer: "ttt_linear", ...}``) are
translated to today's hyperparameters on load (`translate`), weights unchanged.
"""

from __future__ import annotations

import copy
import inspect
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ttt_mm.backbone import Backbone
from ttt_mm.data.clip_record import recorded_files
from ttt_mm.messages import first_line, first_of, missing, root_cause
from ttt_mm.tokenizers import Tokenizer

if TYPE_CHECKING:
    from ttt_mm.module import SequenceModel


class Parts(NamedTuple):
    """What embedding needs from a checkpoint: the trained tokenizer (which says what to decode for it:
    ``tokenizer.decoding``), the backbone and the (translated) hyperparameters."""

    tokenizer: Tokenizer
    backbone: Backbone
    hparams: dict


def resolve_device(name: str | torch.device | None) -> torch.device:
    """Where a loaded model runs: ``None`` or ``"auto"`` picks CUDA when there is a GPU, else the CPU.
    Raises ValueError for a name that is not a device, or CUDA on a machine without a usable GPU."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name}, but this machine has no usable CUDA GPU; use device=cpu or auto")
    available = getattr(getattr(torch, device.type, None), "is_available", None)  # torch.mps, torch.xpu, ...
    if device.type not in ("cpu", "cuda") and available is not None and not available():
        raise ValueError(f"device={name}, but this PyTorch cannot run on {device.type} here; use device=cpu or auto")
    return device


def _checkpoints_in(folder: str) -> str:
    """A hint for a folder given as a checkpoint: one of the checkpoints it or its ``checkpoints/`` (a
    run's folder) holds, ``last.ckpt`` where there is one."""
    found = sorted(Path(folder).glob("*.ckpt")) + sorted(Path(folder).glob("checkpoints/*.ckpt"))
    if not found:
        return ""
    chosen = next((p for p in found if p.name == "last.ckpt"), found[0])
    return f"; it holds {len(found)} checkpoint(s), e.g. {chosen}"


def read_checkpoint(path: str | os.PathLike, weights_only: bool = True) -> dict:
    """The checkpoint dict with its hyperparameters translated to today's form (see the module docstring).

    Raises FileNotFoundError, or ValueError with one line saying what is wrong with the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path} is a directory, not a checkpoint file{_checkpoints_in(path)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(missing(f"checkpoint {path}", path))
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a PyTorch checkpoint (a zip archive): truncated, damaged or another file")
    try:  # torch.load does not check the archive's checksums: damaged weights would load as they are
        with zipfile.ZipFile(path) as archive:  # (saved without checksums, every one is 0: nothing to check)
            damaged = archive.testzip() if any(m.CRC for m in archive.infolist()) else None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint: {exc}") from None
    if damaged is not None:  # (named without the archive's top folder: the file's name when saved, a temporary one)
        raise ValueError(
            f"checkpoint {path} is damaged: its part {damaged.partition('/')[2] or damaged} fails its checksum"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except pickle.UnpicklingError as exc:
        lines = str(exc).strip().splitlines()
        first = next((line.strip() for line in lines if "Unsupported global" in line), lines[0])
        if weights_only:
            raise ValueError(
                f"checkpoint {path} holds objects other than tensors and plain types ({first}); "
                "if you trust the file, pass weights_only=false"
            ) from None
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint: {first}") from None
    except (RuntimeError, EOFError) as exc:
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint: {first_line(exc)}") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, Mapping) or not all(
        isinstance(hparams.get(k), Mapping) for k in ("tokenizer", "backbone")
    ):
        raise ValueError(f"{path} is not a ttt_mm SequenceModel checkpoint (no tokenizer/backbone hyperparameters)")
    weights = ckpt.get("state_dict")
    if not isinstance(weights, Mapping) or not all(isinstance(w, torch.Tensor) for w in weights.values()):
        raise ValueError(f"{path} is not a ttt_mm SequenceModel checkpoint (its state_dict is no tensors by name)")
    return {**ckpt, "hyper_parameters": translate(dict(hparams))}


def load_parts(path: str | os.PathLike, weights_only: bool = True) -> Parts:
    """Tokenizer, backbone and hyperparameters of a checkpoint, without Lightning.

    They are built exactly as ``SequenceModel.__init__`` builds them (``instantiate`` of the saved
    ``tokenizer`` and ``backbone`` mappings) and their weights loaded strictly.
    """
    ckpt = read_checkpoint(path, weights_only)
    hparams = ckpt["hyper_parameters"]
    tokenizer, backbone = build_parts(hparams, os.fspath(path))
    for name, module in (("tokenizer", tokenizer), ("backbone", backbone)):
        prefix = name + "."
        weights = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        _load_weights(module, weights, f"{os.fspath(path)} ({name})")
    return Parts(tokenizer, backbone, hparams)


def _load_weights(module: torch.nn.Module, weights: dict, source: str) -> None:
    """``load_state_dict(strict=True)``, with a mismatch (missing, unexpected or reshaped weights: a
    checkpoint whose weights disagree with its own settings) raised as a ValueError naming ``source``,
    and weights that are not finite too (of a run that diverged: every output would be NaN)."""
    broken = [k for k, w in weights.items() if w.is_floating_point() and not torch.isfinite(w).all()]
    if broken:
        raise ValueError(
            f"the weights of {source} are not finite ({first_of(broken, 3)}): the run that saved it had diverged; "
            "use a checkpoint it saved before"
        )
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        details = " ".join(line.strip() for line in str(exc).splitlines()[1:])
        raise ValueError(f"the weights of {source} do not fit the model its settings describe: {details}") from None


def build_parts(hparams: dict, source: str) -> tuple[Tokenizer, Backbone]:
    """The tokenizer and backbone that a checkpoint's ``tokenizer`` and ``backbone`` hyperparameters
    describe, freshly initialised from torch's current seed (the random-weights baseline of a
    probe); ``source`` names where they came from in the error. Raises ValueError."""
    try:
        return instantiate(hparams["tokenizer"]), instantiate(hparams["backbone"])
    except InstantiationException as exc:  # e.g. a checkpoint from a version with other classes
        raise ValueError(f"cannot rebuild the model of {source}: {first_line(root_cause(exc))}") from None


def load_model(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    weights_only: bool = True,
    *,
    map_location: str | torch.device | None = None,
) -> SequenceModel:
    """The whole ``SequenceModel`` (prediction head included) in eval mode on ``device`` (as
    `resolve_device` reads it: ``"auto"`` picks a GPU where there is one; None: the CPU), weights
    loaded strictly. ``map_location``: the old name of ``device``, deprecated."""
    if map_location is not None:
        if device is not None:
            raise ValueError(
                f"pass device={device!r} or map_location={map_location!r}, not both (map_location is device's old name)"
            )
        warnings.warn("load_model's map_location is deprecated; pass device", DeprecationWarning, stacklevel=2)
        device = map_location
    # before reading: a GPU this machine lacks is one line, not a driver error
    on = resolve_device("cpu" if device is None else device)
    return model_of(read_checkpoint(path, weights_only), path).to(on).eval()


def model_of(ckpt: dict, path: str | os.PathLike) -> SequenceModel:
    """The ``SequenceModel`` of a checkpoint dict (`read_checkpoint`) read from ``path``."""
    from ttt_mm.module import SequenceModel  # Lightning is imported only when the whole model is wanted

    accepted = inspect.signature(SequenceModel).parameters  # hyperparameters of older versions are left out
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k in accepted}
    try:
        model = SequenceModel(**hparams)
    except InstantiationException as exc:
        raise ValueError(f"cannot rebuild the model of {os.fspath(path)}: {first_line(root_cause(exc))}") from None
    _load_weights(model, ckpt["state_dict"], os.fspath(path))
    return model


def trained_split(ckpt: dict) -> dict[str, float] | None:
    """``{"val_fraction": ..., "test_fraction": ...}`` of the run that saved a checkpoint dict (its data
    module's state); None when it records none (a run of an older version)."""
    split = (ckpt.get("MediaDataModule") or {}).get("split")
    return None if not split else {k: float(split[k]) for k in ("val_fraction", "test_fraction")}


def trained_eval_window(ckpt: dict) -> float | None:
    """The seconds of the windows the run that saved a checkpoint dict validated and tested in (None: not
    recorded, a run of an older version)."""
    window = (ckpt.get("MediaDataModule") or {}).get("eval window")
    return None if window is None else float(window)


RECORDS = {"train": "training clips", "val": "validation clips"}
"""The data module's records of a split's clips in a checkpoint (`MediaDataModule.state_dict`)."""


def trained_files(ckpt: dict, split: str = "train", spans: bool = False) -> set[str] | None:
    """The files the run that saved a checkpoint dict trained on (``split="val"``: validated on), as its
    data config named them, or with ``spans`` its clips' segment names (a span of a file ends
    ``@start-end``); None when it records none (a run of an older version, or one whose record cannot
    be read)."""
    record = (ckpt.get("MediaDataModule") or {}).get(RECORDS[split])
    return recorded_files(record, spans) if isinstance(record, bytes) else None


# ------------------------------------------------------------------------------------ old checkpoints

_TOKENIZERS = "ttt_mm.tokenizers."


def translate(hparams: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters saved before the mixer was injected, in today's form (others unchanged).

    Then ``backbone`` named its mixer (``"ttt_linear"``, ``"ttt_mlp"``, ``"attention"``) and held the
    mixer's ``num_heads``, ``mini_batch_size`` and ``base_lr``; tokenizer dims defaulted to 256, the
    backbone's to 256 and VideoTokenizer's ``target_pool`` to 1. Those defaults are written out, so
    the rebuilt model is the one that was trained.
    """
    backbone = hparams["backbone"]
    if not isinstance(backbone.get("mixer", "ttt_linear"), str):
        return hparams
    old = copy.deepcopy(dict(backbone))
    name = old.pop("mixer", "ttt_linear")
    heads, mini_batch, base_lr = old.pop("num_heads", 4), old.pop("mini_batch_size", 16), old.pop("base_lr", None)
    mamba = old.get("variant", "transformer") == "mamba"
    if name == "attention":
        mixer = {"_target_": "ttt_mm.layers.AttentionLayer", "_partial_": True, "num_heads": heads}
    elif name in ("ttt_linear", "ttt_mlp"):
        mixer = {
            "_target_": "ttt_mm.layers.TTTLayer",
            "_partial_": True,
            "num_heads": heads,
            "inner": name.removeprefix("ttt_"),
            "mini_batch_size": mini_batch,
            "base_lr": base_lr,
            "use_gate": mamba,
            "share_qk": mamba,
        }
    else:
        raise ValueError(f"a checkpoint with the unknown mixer {name!r}")
    new_backbone = {"dim": 256, "depth": 4, **old, "mixer": mixer}
    return {**hparams, "backbone": new_backbone, "tokenizer": _old_tokenizer(hparams["tokenizer"])}


def _old_tokenizer(node: dict[str, Any]) -> dict[str, Any]:
    node = copy.deepcopy(dict(node))
    target = node.get("_target_", "")
    if target.startswith(_TOKENIZERS):
        node.setdefault("dim", 256)
    if target == _TOKENIZERS + "VideoTokenizer":
        node.setdefault("target_pool", 1)
    if target == _TOKENIZERS + "AVTokenizer":  # its parts were built from the old defaults when absent
        dim = node["dim"]
        node["audio"] = _old_tokenizer(
            node.get("audio") or {"_target_": _TOKENIZERS + "AudioTokenizer", "dim": dim, "frames_per_token": 5}
        )
        node["video"] = _old_tokenizer(node.get("video") or {"_target_": _TOKENIZERS + "VideoTokenizer", "dim": dim})
    return node
