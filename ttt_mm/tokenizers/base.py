"""The tokenizer interface: a media batch in, one token sequence out, every token with its clock.

A tokenizer is an ``nn.Module`` built from typed arguments. It reads the batch dicts that
`ttt_mm.data` produces (``"audio"`` ``[B, n]`` float32, ``"video"`` ``[B, T, 3, S, S]`` uint8, their
``"*_lengths"``, ``"start"`` seconds, optional ``"audio_context"``) and returns `Tokens`. Each token
also gets a prediction target (what the model should reconstruct or predict for it) and the
tokenizer can map targets back to media (`invert`) for plots and metrics.

Clock attributes every tokenizer sets:

- ``tokens_per_second``: tokens per second of media;
- ``seconds_per_step`` and ``tokens_per_step``: the sequence is a run of identical steps, each
  covering ``seconds_per_step`` of media with ``tokens_per_step`` tokens in a fixed layout, so the
  token at ``i + tokens_per_step`` is "the same slot, one step later" (next-frame prediction);
- ``target_dim`` (width of ``Tokens.targets``) and ``target_dims`` (modality id -> how many leading
  target entries are meaningful for that modality; the rest are zero padding).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

AUDIO, VIDEO = 0, 1
"""Modality ids used in ``Tokens.modality``."""


@dataclass
class Tokens:
    """One token sequence per batch row; padding tokens have ``mask`` False, zero embeddings and targets.

    ``timestamps`` are seconds from the start of the file (``batch["start"]`` included) at which
    the media span of the token begins. ``target_stats`` holds, for video tokens, the per-channel
    mean and std of the patch pixels that normalized the target (``[B, N, 2, 3]``; audio tokens get
    mean 0 and std 1); `Tokenizer.invert` uses it to give back exact pixels.
    """

    embeddings: Tensor  # [B, N, dim]
    targets: Tensor  # [B, N, target_dim]
    timestamps: Tensor  # [B, N] float32 seconds
    modality: Tensor  # [B, N] long, AUDIO or VIDEO
    mask: Tensor  # [B, N] bool, True for real tokens
    target_stats: Tensor | None = None  # [B, N, 2, 3]

    @property
    def shape(self) -> tuple[int, int]:
        """(batch, tokens)."""
        return tuple(self.mask.shape)

    def to(self, device: torch.device | str) -> Tokens:
        """The same tokens on another device."""
        return self._map(lambda value: value.to(device))

    def __getitem__(self, index: slice | Tensor) -> Tokens:
        """Select tokens along the sequence axis, e.g. ``tokens[:, 10:20]`` is written ``tokens[10:20]``."""
        return self._map(lambda value: value[:, index])

    def _map(self, fn) -> Tokens:
        return Tokens(
            **{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name)) for f in fields(self)}
        )


def cat_tokens(parts: list[Tokens]) -> Tokens:
    """Join token sequences along time (e.g. the windows of a stream)."""
    out = {}
    for f in fields(Tokens):
        values = [getattr(p, f.name) for p in parts]
        out[f.name] = None if any(v is None for v in values) else torch.cat(values, dim=1)
    return Tokens(**out)


class Tokenizer(nn.Module):
    """Base class: subclasses set the clock attributes in ``__init__`` and implement both methods."""

    dim: int
    target_dim: int
    target_dims: dict[int, int]
    tokens_per_second: float
    tokens_per_step: int
    seconds_per_step: float

    def forward(self, batch: Mapping[str, Any]) -> Tokens:
        raise NotImplementedError

    def invert(self, targets: Tensor, target_stats: Tensor | None = None) -> dict[str, Tensor]:
        """Targets ``[B, N, target_dim]`` back to media: ``{"audio": log-mel, "video": uint8 frames}``."""
        raise NotImplementedError


def batch_start(batch: Mapping[str, Any], size: int, device: torch.device) -> Tensor:
    """``batch["start"]`` as float64 ``[B]`` seconds (zeros when absent)."""
    start = batch.get("start")
    if start is None:
        return torch.zeros(size, dtype=torch.float64, device=device)
    return torch.as_tensor(start, dtype=torch.float64, device=device).reshape(size)


def batch_lengths(batch: Mapping[str, Any], key: str, size: int, full: int, device: torch.device) -> Tensor:
    """Valid lengths ``[B]`` from ``batch[key]`` (all ``full`` when absent)."""
    lengths = batch.get(key)
    if lengths is None:
        return torch.full((size,), full, dtype=torch.long, device=device)
    return torch.as_tensor(lengths, device=device).long().reshape(size)


def check_rate(batch: Mapping[str, Any], key: str, expected: float, name: str) -> None:
    """Fail loudly when the data was decoded at another rate than the tokenizer assumes."""
    value = batch.get(key)
    if value is not None and abs(float(value) - float(expected)) > 1e-6:
        raise ValueError(f"batch was decoded with {key}={value} but the {name} tokenizer expects {expected}")
