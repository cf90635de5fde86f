"""Waveform to log-mel frames to tokens, with framing that is causal and exact across windows.

Framing: with ``center=False`` and ``win_length - hop_length`` samples of left context, mel frame
``m`` covers samples ``[m * hop - (win - hop), (m + 1) * hop)``: it ends where its hop ends, so a
token (``frames_per_token`` consecutive frames) sees nothing after its own interval. The context
comes from ``batch["audio_context"]`` (the samples just before the window, zeros before the file
start, provided by `ttt_mm.data`); without it zeros are used. Because normalization is a fixed
affine map (no per-clip statistics), tokenizing consecutive windows gives exactly the tokens of
one pass over the whole file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

from ttt_mm.messages import check_count, check_positive
from ttt_mm.tokenizers.base import (
    AUDIO,
    SAMPLE_RATE,
    Decoding,
    Tokenizer,
    Tokens,
    batch_lengths,
    batch_start,
    check_rate,
)


class AudioTokenizer(Tokenizer):
    """Log-mel frames, ``frames_per_token`` of them stacked per token, linearly embedded.

    Targets are the token's normalized log-mel frames, ``[frames_per_token * n_mels]`` (frame-major).
    Defaults: 16 kHz, 25 ms window, 10 ms hop, 80 mels, 4 frames per token = 25 tokens/s.
    ``mel_mean``/``mel_std`` normalize ``ln(mel_power + 1e-6)`` with fixed numbers (per-clip
    statistics would break streaming and divide by zero on silence); the defaults are rounded from
    real music (mean -8.4, std 3.7) and speech (mean -9.6, std 4.4) and keep targets near unit scale.
    """

    def __init__(
        self,
        dim: int = 128,
        sample_rate: int = SAMPLE_RATE,
        win_length: int = 400,
        hop_length: int = 160,
        n_mels: int = 80,
        frames_per_token: int = 4,
        mel_mean: float = -9.0,
        mel_std: float = 4.0,
    ) -> None:
        super().__init__()
        check_count(
            dim=dim,
            sample_rate=sample_rate,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            frames_per_token=frames_per_token,
        )
        check_positive(mel_std=mel_std)
        if win_length < hop_length:
            raise ValueError(f"win_length ({win_length}) must be >= hop_length ({hop_length})")
        self.dim, self.sample_rate, self.n_mels = dim, sample_rate, n_mels
        self.hop_length, self.frames_per_token = hop_length, frames_per_token
        self.mel_mean, self.mel_std = mel_mean, mel_std
        self.context_samples = win_length - hop_length  # left context each window needs
        self.samples_per_token = hop_length * frames_per_token
        self.seconds_per_step = self.samples_per_token / sample_rate
        self.tokens_per_second = sample_rate / self.samples_per_token
        self.tokens_per_step = 1
        self.slot_modality, self.slot_offsets = (AUDIO,), (0.0,)
        self.media_per_step = {"audio": frames_per_token}
        self.decoding = Decoding(("audio",), sample_rate=sample_rate, context_samples=self.context_samples)
        self.target_dim = frames_per_token * n_mels
        self.target_dims = {AUDIO: self.target_dim}
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=win_length,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            center=False,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
        )
        self.proj = nn.Linear(self.target_dim, dim)

    def log_mel(self, audio: Tensor, context: Tensor | None = None) -> Tensor:
        """Normalized log-mel ``[B, F, n_mels]`` of ``audio [B, n]``; ``F = n // hop_length``."""
        batch, n = audio.shape
        n = n - n % self.hop_length
        if context is None:
            context = audio.new_zeros(batch, self.context_samples)
        elif context.shape[-1] < self.context_samples:
            raise ValueError(
                f"audio_context has {context.shape[-1]} samples but this tokenizer needs "
                f"{self.context_samples} (win_length - hop_length)"
            )
        context = context[:, context.shape[-1] - self.context_samples :]
        if n == 0:
            return audio.new_zeros(batch, 0, self.n_mels)
        x = torch.cat([context.to(audio), audio[:, :n]], dim=1).float()
        with torch.autocast(x.device.type, enabled=False):  # power spectra need fp32
            mel = self.mel(x)  # [B, n_mels, F]
        return ((torch.log(mel + 1e-6) - self.mel_mean) / self.mel_std).transpose(1, 2)

    def forward(self, batch: Mapping[str, Any]) -> Tokens:
        """Tokens ``[B, n // samples_per_token]``; a trailing partial token is dropped."""
        check_rate(batch, "sample_rate", self.sample_rate, "audio")
        audio = batch["audio"]
        if not audio.is_floating_point():  # (int16 samples read as floats 32768 times too loud, silently)
            raise ValueError(f"audio must be float samples in [-1, 1], as decoded; got {audio.dtype}")
        batch_size, n = audio.shape
        count = n // self.samples_per_token
        mel = self.log_mel(audio[:, : count * self.samples_per_token], batch.get("audio_context"))
        targets = mel.reshape(batch_size, count, self.target_dim)
        device = audio.device
        steps = torch.arange(count, device=device)
        start = batch_start(batch, batch_size, device)
        timestamps = start[:, None] + steps.double() * self.seconds_per_step  # float64 (int64 * float is float32)
        lengths = batch_lengths(batch, "audio_lengths", batch_size, n, device)
        mask = steps[None, :] < (lengths // self.samples_per_token)[:, None]
        targets = targets * mask[..., None]
        return Tokens(
            embeddings=self.proj(targets.to(self.proj.weight.dtype)) * mask[..., None],
            targets=targets,
            timestamps=timestamps,
            modality=torch.full_like(mask, AUDIO, dtype=torch.long),
            mask=mask,
        )

    def invert(self, targets: Tensor, target_stats: Tensor | None = None) -> dict[str, Tensor]:
        """Targets ``[B, N, target_dim]`` to natural-log mel power ``[B, N * frames_per_token, n_mels]``."""
        batch, count, _ = targets.shape
        mel = targets[..., : self.target_dim].reshape(batch, count * self.frames_per_token, self.n_mels)
        return {"audio": mel * self.mel_std + self.mel_mean}

    def embed_targets(self, targets: Tensor, target_stats: Tensor | None = None) -> Tensor:
        """The embedding is a linear map of the normalized log-mel target (``target_stats`` unused)."""
        return self.proj(targets[..., : self.target_dim].to(self.proj.weight.dtype))
