"""Multi-step rollouts: feed a model's own predictions back as its next input, step by step.

The model reads media (log-mel frames, pixel tubelets) but predicts *targets* (normalized log-mel,
per-patch normalized pixels). Feeding a prediction back therefore means turning predicted targets
into the embeddings the tokenizer would have produced had the predicted media been real:

- audio: an audio token's embedding is a linear map of its normalized log-mel target, so the
  predicted target goes through that same map (exactly what the tokenizer does with real audio);
- video: predicted targets are normalized per patch and per channel; they are turned into uint8
  frames with the per-patch mean and std of the *last frames the model saw* (the true future
  statistics are unknown at prediction time), and those frames are tokenized again;
- audio-visual: both, interleaved as the tokenizer does, plus modality embeddings.

Each tokenizer does this in its ``embed_targets``; given real targets and their statistics it
reproduces the tokenizer's embeddings (tested) where the targets hold all the media: audio, and video
at ``target_pool=1``. Then a rollout differs from teacher forcing only through the predictions it
feeds back. Pooled video targets (``target_pool > 1``, the default) become frames of block means, an
input training never shows the model, so horizons from the second on also measure that loss of detail.
Rollouts need ``offset == tokens_per_step`` (next-step prediction; for audio also next-token):
one forward call on a predicted step then predicts the whole following step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ttt_mm.backbone import BackboneState


@torch.no_grad()
def rollout(model, state: BackboneState, first: Tensor, stats: Tensor | None, steps: int) -> Tensor:
    """Predicted targets ``[B, steps, P, D]`` for the ``steps`` steps after the context in ``state``.

    ``model`` is a `ttt_mm.module.SequenceModel` with ``offset == tokens_per_step = P``. ``first``
    ``[B, P, D]`` is what the model predicted for the next step from the last real step (horizon
    1); horizon ``h + 1`` is predicted after feeding horizon ``h``'s prediction back as input.
    ``stats [B, P, 2, 3]`` are the patch statistics of the last real step, used to turn every
    predicted step into frames. ``state`` is not modified.
    """
    if not model.predicts_next_step:
        raise ValueError(
            f"rollouts need next-step prediction (offset == tokens_per_step = {model.tokenizer.tokens_per_step}); "
            f"this model predicts {model.offset} token(s) ahead"
        )
    if steps < 1:
        raise ValueError(f"a rollout needs at least one step; got {steps}")
    preds = [first]
    for _ in range(steps - 1):
        emb = model.tokenizer.embed_targets(preds[-1], stats)
        hidden, state = model.backbone(emb, state)
        preds.append(model.head(hidden))
    return torch.stack(preds, dim=1)
