"""The one checkpoint loader: a ``SequenceModel`` checkpoint back to its parts."""

from __future__ import annotations

import os
import pickle
import zipfile

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ttt_mm.backbone import Backbone
from ttt_mm.tokenizers import Tokenizer


def load_parts(path: str | os.PathLike) -> tuple[Tokenizer, Backbone, dict]:
    """Tokenizer, backbone and hyperparameters of a ``SequenceModel`` checkpoint, without Lightning.

    They are built exactly as ``SequenceModel.__init__`` builds them (``instantiate`` of the saved
    ``tokenizer`` and ``backbone`` mappings) and their weights loaded strictly. Checkpoints are
    pickles (Lightning saves Hydra containers in them): load only files you trust.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint: {str(exc).splitlines()[0]}") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hparams or "tokenizer" not in hparams or "backbone" not in hparams or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a ttt_mm SequenceModel checkpoint (no tokenizer/backbone hyperparameters)")
    try:
        tokenizer, backbone = instantiate(hparams["tokenizer"]), instantiate(hparams["backbone"])
    except InstantiationException as exc:  # e.g. a checkpoint from a version with other classes
        raise ValueError(f"cannot rebuild the model of {path}: {str(exc).splitlines()[0]}") from None
    for name, module in (("tokenizer", tokenizer), ("backbone", backbone)):
        prefix = name + "."
        weights = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        module.load_state_dict(weights, strict=True)
    return tokenizer, backbone, dict(hparams)
