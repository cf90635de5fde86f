"""Audio and video in one sequence, interleaved step by step, with modality embeddings.

Step ``k`` covers ``[k, k + 1) * seconds_per_step`` (one video tubelet): first the audio tokens of
that interval, then the step's video patches. Every step has the same layout, so the token
``tokens_per_step`` positions later is the same slot one step later. That needs a whole number of
audio tokens per step: with 8 fps and tubelets of 2 frames a step is 0.25 s, and 4 mel frames per
token (0.04 s) would give 6.25, so the default audio tokenizer here uses 5 frames per token
(20 tokens/s, 5 per step); any other mismatch raises with the numbers.

Targets of the two modalities differ in size (audio ``frames_per_token * n_mels``, video
``tubelet * (patch / target_pool)**2 * 3``); both are zero-padded to ``target_dim`` = the larger, and
``target_dims[modality]`` says how many leading entries are real: compute losses on those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ttt_mm.tokenizers.audio import AudioTokenizer
from ttt_mm.tokenizers.base import AUDIO, VIDEO, Decoding, Tokenizer, Tokens, batch_start
from ttt_mm.tokenizers.video import VideoTokenizer


class AVTokenizer(Tokenizer):
    """Interleaves an `AudioTokenizer` and a `VideoTokenizer` of the same width ``dim``.

    Defaults: audio 16 kHz / 80 mels / 5 frames per token, video 8 fps / 128 px / patch 16 /
    tubelet 2 / 4 x 4 block-mean targets: 5 audio + 64 video = 69 tokens per 0.25 s step, 276 tokens/s,
    ``target_dim`` 400 (the audio's 5 x 80; video targets are 96 wide).
    """

    def __init__(
        self, dim: int = 128, audio: AudioTokenizer | None = None, video: VideoTokenizer | None = None
    ) -> None:
        super().__init__()
        audio = AudioTokenizer(dim=dim, frames_per_token=5) if audio is None else audio
        video = VideoTokenizer(dim=dim) if video is None else video
        if audio.dim != dim or video.dim != dim:
            raise ValueError(f"audio dim {audio.dim} and video dim {video.dim} must both equal dim {dim}")
        per_step = video.seconds_per_step / audio.seconds_per_step
        if abs(per_step - round(per_step)) > 1e-9 or round(per_step) < 1:
            step_samples = video.seconds_per_step * audio.sample_rate
            raise ValueError(
                f"a video step lasts {video.seconds_per_step:g} s ({step_samples:g} samples at "
                f"{audio.sample_rate} Hz) and an audio token {audio.samples_per_token} samples (frames_per_token "
                f"{audio.frames_per_token} x hop_length {audio.hop_length}), giving {per_step:g} audio tokens per "
                "step; choose the sample rate, frames_per_token, hop_length, fps or tubelet so that this is a "
                "whole number (e.g. 16 kHz, frames_per_token=5, hop_length=160 at 8 fps, tubelet 2)"
            )
        self.audio, self.video, self.dim = audio, video, dim
        self.audio_per_step = round(per_step)
        self.tokens_per_step = self.audio_per_step + video.tokens_per_step
        self.seconds_per_step = video.seconds_per_step
        self.tokens_per_second = self.tokens_per_step / self.seconds_per_step
        audio_offsets = tuple(round(j * audio.seconds_per_step, 9) for j in range(self.audio_per_step))
        self.slot_modality = (AUDIO,) * self.audio_per_step + video.slot_modality
        self.slot_offsets = audio_offsets + video.slot_offsets
        self.media_per_step = {"audio": self.audio_per_step * audio.media_per_step["audio"]} | video.media_per_step
        a, v = audio.decoding, video.decoding
        self.decoding = Decoding(("audio", "video"), a.sample_rate, v.fps, v.size, a.context_samples)
        self.target_dims = {AUDIO: audio.target_dim, VIDEO: video.target_dim}
        self.target_dim = max(self.target_dims.values())
        self.modality_embed = nn.Embedding(2, dim)
        nn.init.normal_(self.modality_embed.weight, std=0.02)

    def no_weight_decay(self) -> list[nn.Parameter]:
        return [self.modality_embed.weight, *self.audio.no_weight_decay(), *self.video.no_weight_decay()]

    def _steps(self, tokens: Tokens, per_step: int, steps: int) -> dict[str, Tensor]:
        """Tokens cut to ``steps`` steps, zero-padded (masked) to fill them, shaped ``[B, steps, per_step, ...]``:
        a stream that ends inside a step keeps its tokens there (cut to whole steps, it lost them where the
        tensor itself ended, not where a length said so)."""
        b, n = tokens.mask.shape
        keep = min(n, steps * per_step)
        stats = tokens.target_stats
        if stats is None:  # audio targets are not normalized per token: mean 0, std 1
            stats = torch.stack([torch.zeros(b, n, 3), torch.ones(b, n, 3)], dim=2).to(tokens.targets)
        out = {}
        for name, value in (
            ("embeddings", tokens.embeddings),
            ("targets", F.pad(tokens.targets, (0, self.target_dim - tokens.targets.shape[-1]))),
            ("mask", tokens.mask),
            ("stats", stats),
        ):
            value = value[:, :keep]
            fill = value.new_zeros((b, steps * per_step - keep) + value.shape[2:])
            value = torch.cat([value, fill], dim=1)
            out[name] = value.reshape((b, steps, per_step) + value.shape[2:])
        return out

    def forward(self, batch: Mapping[str, Any]) -> Tokens:
        """``[B, steps * tokens_per_step]`` tokens; a step missing one modality is masked for it."""
        audio, video = self.audio(batch), self.video(batch)
        steps = max(audio.mask.shape[1] // self.audio_per_step, video.mask.shape[1] // self.video.tokens_per_step)
        a = self._steps(audio, self.audio_per_step, steps)
        v = self._steps(video, self.video.tokens_per_step, steps)
        merged = {name: torch.cat([a[name], v[name]], dim=2).flatten(1, 2) for name in a}

        device = merged["mask"].device
        modality = torch.tensor(self.slot_modality, device=device)  # the step's layout, as embed_targets reads it
        offset = torch.tensor(self.slot_offsets, device=device, dtype=torch.float64)
        step = torch.arange(steps, device=device, dtype=torch.float64)
        clock = step[:, None] * self.seconds_per_step + offset  # [steps, per_step] seconds, float64
        start = batch_start(batch, merged["mask"].shape[0], device)
        mask = merged["mask"]
        scored = mask
        if (silent := batch.get("audio_silent")) is not None:  # substituted silence: nothing to score
            silent = torch.as_tensor(silent, dtype=torch.bool, device=device).reshape(-1, 1)  # (a lone item: a bool)
            scored = mask & ~(silent & (modality == AUDIO).repeat(steps))
        return Tokens(
            embeddings=merged["embeddings"] + self.modality_embed(modality).repeat(steps, 1) * mask[..., None],
            targets=merged["targets"],
            timestamps=start[:, None] + clock.reshape(1, -1),
            modality=modality.repeat(steps).expand_as(mask).clone(),
            mask=mask,
            target_stats=merged["stats"],
            scored=scored,
        )

    def invert(self, targets: Tensor, target_stats: Tensor | None = None) -> dict[str, Tensor]:
        """``{"audio": log-mel [B, F, n_mels], "video": uint8 [B, T, 3, S, S]}`` from AV targets."""
        b, k = targets.shape[0], self.steps_in(targets)
        steps = targets.reshape(b, k, self.tokens_per_step, targets.shape[-1])  # (sizes given: k may be 0)
        audio = steps[:, :, : self.audio_per_step, : self.audio.target_dim].flatten(1, 2)
        video = steps[:, :, self.audio_per_step :, : self.video.target_dim].flatten(1, 2)
        stats = None
        if target_stats is not None:
            stats = target_stats.reshape(b, k, self.tokens_per_step, 2, 3)[:, :, self.audio_per_step :].flatten(1, 2)
        return self.audio.invert(audio) | self.video.invert(video, stats)

    def embed_targets(self, targets: Tensor, target_stats: Tensor | None) -> Tensor:
        """Each step's audio and video parts embedded by their tokenizers, plus the modality embeddings."""
        if target_stats is None:
            raise ValueError("video targets need their patch statistics (target_stats) to become pixels")
        b, k = targets.shape[0], self.steps_in(targets)
        per_step, a = self.tokens_per_step, self.audio_per_step
        steps = targets.reshape(b, k, per_step, targets.shape[-1])  # [B, K, per_step, D] (sizes given: K may be 0)
        audio = self.audio.embed_targets(steps[:, :, :a].flatten(1, 2))  # [B, K * a, dim]
        video_stats = target_stats.reshape(b, k, per_step, 2, 3)[:, :, a:].flatten(1, 2)
        video = self.video.embed_targets(steps[:, :, a:].flatten(1, 2), video_stats)  # [B, K * v, dim]
        emb = torch.cat([audio.reshape(b, k, a, self.dim), video.reshape(b, k, per_step - a, self.dim)], dim=2)
        modality = torch.tensor(self.slot_modality, device=targets.device)
        return (emb + self.modality_embed(modality)).flatten(1, 2)
