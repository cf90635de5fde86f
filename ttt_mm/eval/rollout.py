"""Multi-step rollouts: feed a model's own predictions back as its next input, step by step.

The model reads media (log-mel frames, pixel tubelets) but predicts *targets* (normalized log-mel,
per-patch normalized pixels). Feeding a prediction back therefore means turning predicted targets
into the embeddings the tokenizer would have produced had the predicted media been real:

- audio: an audio token's embedding is a linear map of its normalized log-mel target, so the
  predicted target goes through that same map (exactly what the tokenizer does with real audio);
- video: predicted targets are normalized per patch and per channel; they are turned into uint8
  frames with the per-patch mean and std of the *last frames the model saw* (the true future
  statistics are unknown at prediction time), and those frames are tokenized again;
- audio-visual: both, interleaved as `ttt_mm.tokenizers.AVTokenizer` does, plus modality embeddings.

Given real targets and their statistics, `embed_targets` reproduces the tokenizer's embeddings
(tested), so a rollout differs from teacher forcing only through the predictions it feeds back.
Rollouts need ``offset == tokens_per_step`` (next-step prediction; for audio also next-token):
one forward call on a predicted step then predicts the whole following step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ttt_mm.backbone import BackboneState
from ttt_mm.tokenizers import AudioTokenizer, AVTokenizer, Tokenizer, VideoTokenizer


def audio_part(tokenizer: Tokenizer) -> AudioTokenizer | None:
    """The audio tokenizer inside ``tokenizer`` (itself, or an AV tokenizer's), else None."""
    if isinstance(tokenizer, AVTokenizer):
        return tokenizer.audio
    return tokenizer if isinstance(tokenizer, AudioTokenizer) else None


def video_part(tokenizer: Tokenizer) -> VideoTokenizer | None:
    """The video tokenizer inside ``tokenizer`` (itself, or an AV tokenizer's), else None."""
    if isinstance(tokenizer, AVTokenizer):
        return tokenizer.video
    return tokenizer if isinstance(tokenizer, VideoTokenizer) else None


def _embed_video(video: VideoTokenizer, targets: Tensor, stats: Tensor) -> Tensor:
    """Video targets ``[B, N, >= video.target_dim]`` + stats ``[B, N, 2, 3]`` -> embeddings ``[B, N, dim]``."""
    frames = video.invert(targets[..., : video.target_dim], stats)["video"]  # [B, T, 3, S, S] uint8
    return video({"video": frames}).embeddings


def embed_targets(tokenizer: Tokenizer, targets: Tensor, stats: Tensor | None) -> Tensor:
    """Embeddings ``[B, N, dim]`` of tokens whose targets are ``targets [B, N, target_dim]``.

    ``N`` is a whole number of steps. ``stats [B, N, 2, 3]`` are the per-patch pixel statistics that
    turn video targets into pixels (ignored for audio; required with video).
    """
    b, n, _ = targets.shape
    per_step = tokenizer.tokens_per_step
    if n % per_step:
        raise ValueError(f"{n} tokens is not a whole number of steps of {per_step}")
    if isinstance(tokenizer, AudioTokenizer):
        return tokenizer.proj(targets[..., : tokenizer.target_dim].to(tokenizer.proj.weight.dtype))
    if stats is None:
        raise ValueError("video targets need their patch statistics (target_stats) to become pixels")
    if isinstance(tokenizer, VideoTokenizer):
        return _embed_video(tokenizer, targets, stats)
    if not isinstance(tokenizer, AVTokenizer):
        raise TypeError(f"no feedback embedding for {type(tokenizer).__name__}")
    a = tokenizer.audio_per_step
    steps = targets.reshape(b, n // per_step, per_step, -1)  # [B, K, per_step, D]
    audio = steps[:, :, :a, : tokenizer.audio.target_dim].flatten(1, 2)
    audio_emb = tokenizer.audio.proj(audio.to(tokenizer.audio.proj.weight.dtype))  # [B, K * a, dim]
    video_stats = stats.reshape(b, n // per_step, per_step, 2, 3)[:, :, a:].flatten(1, 2)
    video_emb = _embed_video(tokenizer.video, steps[:, :, a:].flatten(1, 2), video_stats)  # [B, K * v, dim]
    k = n // per_step
    emb = torch.cat([audio_emb.reshape(b, k, a, -1), video_emb.reshape(b, k, per_step - a, -1)], dim=2)
    modality = (torch.arange(per_step, device=targets.device) >= a).long()  # AUDIO = 0, VIDEO = 1
    return (emb + tokenizer.modality_embed(modality)).flatten(1, 2)


@torch.no_grad()
def rollout(model, state: BackboneState, first: Tensor, stats: Tensor | None, steps: int) -> Tensor:
    """Predicted targets ``[B, steps, P, D]`` for the ``steps`` steps after the context in ``state``.

    ``model`` is a `ttt_mm.module.SequenceModel` with ``offset == tokens_per_step = P``. ``first``
    ``[B, P, D]`` is what the model predicted for the next step from the last real step (horizon
    1); horizon ``h + 1`` is predicted after feeding horizon ``h``'s prediction back as input.
    ``stats [B, P, 2, 3]`` are the patch statistics of the last real step, used to turn every
    predicted step into frames. ``state`` is not modified.
    """
    per_step = model.tokenizer.tokens_per_step
    if model.offset != per_step:
        raise ValueError(
            f"rollouts need next-step prediction (offset == tokens_per_step = {per_step}); this model "
            f"predicts {model.offset} token(s) ahead"
        )
    preds = [first]
    for _ in range(steps - 1):
        emb = embed_targets(model.tokenizer, preds[-1], stats)
        hidden, state = model.backbone(emb, state)
        preds.append(model.head(hidden))
    return torch.stack(preds, dim=1)
