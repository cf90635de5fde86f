"""Tiny checkpoints saved by a real Lightning Trainer, and the one-pass reference embedding."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from ttt_mm.backbone import Backbone
from ttt_mm.tokenizers import Tokenizer

DIM = 32
AUDIO = {"_target_": "ttt_mm.tokenizers.AudioTokenizer", "dim": DIM, "n_mels": 16}
VIDEO = {"_target_": "ttt_mm.tokenizers.VideoTokenizer", "dim": DIM, "fps": 8.0, "size": 32, "patch": 16, "tubelet": 2}
AV = {  # 5 audio tokens + 4 patches per 0.25 s step
    "_target_": "ttt_mm.tokenizers.AVTokenizer",
    "dim": DIM,
    "audio": AUDIO | {"frames_per_token": 5},
    "video": VIDEO,
}
TOKENIZERS = {"audio": AUDIO, "video": VIDEO, "av": AV}
MIXERS = {  # the mixer factories as conf/model/<name>.yaml gives them
    "ttt_linear": {"_target_": "ttt_mm.layers.TTTLayer", "_partial_": True, "num_heads": 2, "mini_batch_size": 8},
    "attention": {"_target_": "ttt_mm.layers.AttentionLayer", "_partial_": True, "num_heads": 2},
    "lact": {"_target_": "ttt_mm.layers.LaCTLayer", "_partial_": True, "num_heads": 2, "chunk_size": 8, "window": 6},
}


def save_checkpoint(
    path: Path, tokenizer: dict, mixer: str = "ttt_linear", depth: int = 2, variant: str = "transformer"
) -> Path:
    """A randomly initialised ``SequenceModel`` saved the way training saves it (Hydra list included).
    The mamba variant gives a TTT mixer its shared q/k convs and gate, as ``conf/model`` does."""
    import lightning as L

    from ttt_mm.module import SequenceModel

    factory = MIXERS[mixer]
    if variant == "mamba" and mixer == "ttt_linear":
        factory = factory | {"use_gate": True, "share_qk": True}
    backbone = {"_target_": "ttt_mm.backbone.Backbone", "dim": DIM, "depth": depth, "mixer": factory}
    backbone["variant"] = variant
    model = SequenceModel(tokenizer, backbone, betas=OmegaConf.create([0.9, 0.95]))
    quiet = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    trainer = L.Trainer(accelerator="cpu", max_steps=0, **quiet)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path, weights_only=False)
    return path


@torch.inference_mode()
def one_pass(tokenizer: Tokenizer, backbone: Backbone, batch: dict, layer: int = -1, norm: bool = True):
    """The whole input tokenized and run in one call: (rows [B, N, D], Tokens)."""
    tokens = tokenizer(batch)
    _, hidden, _ = backbone.forward_intermediates(tokens.embeddings, None, layers=(layer,))
    return (backbone.norm(hidden[0]) if norm else hidden[0]), tokens
