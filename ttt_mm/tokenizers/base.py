"""The tokenizer interface: a media batch in, one token sequence out, every token with its clock.

A tokenizer is an ``nn.Module`` built from typed arguments. It reads the batch dicts that
`ttt_mm.data` produces (``"audio"`` ``[B, n]`` float32, ``"video"`` ``[B, T, 3, S, S]`` uint8, their
``"*_lengths"``, ``"start"`` seconds, optional ``"audio_context"``) and returns `Tokens`. Each token
also gets a prediction target (what the model should reconstruct or predict for it) and the
tokenizer can map targets back to media (`invert`) and to the embeddings it would have produced
from that media (`embed_targets`, for rollouts).

`Tokenizer` is the whole interface its callers use; nothing outside ``ttt_mm.tokenizers`` names a
concrete tokenizer (but the upgrade of old checkpoints' configs, which reads their class names). Every
tokenizer sets, in ``__init__``:

- ``decoding``: what to decode for it (`Decoding`: streams, sample rate, fps, frame size, audio
  context);
- ``tokens_per_second``, ``seconds_per_step`` and ``tokens_per_step``: the sequence is a run of
  identical steps, each covering ``seconds_per_step`` of media with ``tokens_per_step`` tokens in a
  fixed layout, so the token at ``i + tokens_per_step`` is "the same slot, one step later"
  (next-frame prediction);
- ``slot_modality`` and ``slot_offsets``: that layout, the modality of each token of a step and its
  start in seconds after the step's start;
- ``media_per_step``: how many rows of each medium `invert` gives per step (video frames, log-mel
  frames);
- ``target_dim`` (width of ``Tokens.targets``) and ``target_dims`` (modality id -> how many leading
  target entries are meaningful for that modality; the rest are zero padding; see `target_widths`).

`token_loss`, the loss of a prediction against those padded targets, is defined here with them:
training and evaluation both score with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

AUDIO, VIDEO = 0, 1
"""Modality ids used in ``Tokens.modality``."""

SAMPLE_RATE, FPS, FRAME_SIZE = 16000, 8.0, 128
"""The default media clock: 16 kHz audio, 8 video frames per second of 128 x 128 px. The
tokenizers, `ttt_mm.data.ReadSpec` and the data module take their defaults from here."""


@dataclass(frozen=True)
class Decoding:
    """What a tokenizer reads: ``modalities`` (``"audio"``, ``"video"``, in that order), and for those
    it reads the sample rate, the frame rate and square frame size, and ``context_samples``, how many
    samples before each audio window it needs (see `ttt_mm.tokenizers.audio`)."""

    modalities: tuple[str, ...]
    sample_rate: int | None = None
    fps: float | None = None
    size: int | None = None
    context_samples: int = 0


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
    timestamps: Tensor  # [B, N] float64 seconds (float32 is 0.2 ms off an hour in: bin edges would move)
    modality: Tensor  # [B, N] long, AUDIO or VIDEO
    mask: Tensor  # [B, N] bool, True for real tokens
    target_stats: Tensor | None = None  # [B, N, 2, 3]
    scored: Tensor | None = None
    """``[B, N]`` bool: the real tokens that losses and metrics count (None: ``mask``). The audio of a
    video read with a silent track (``batch["audio_silent"]``) is input, not data: it is not scored."""

    def __post_init__(self) -> None:
        if self.scored is None:
            self.scored = self.mask


class Tokenizer(nn.Module):
    """Base class: subclasses set the attributes below in ``__init__`` and implement the three methods."""

    dim: int
    decoding: Decoding
    tokens_per_second: float
    tokens_per_step: int
    seconds_per_step: float
    slot_modality: tuple[int, ...]  # [tokens_per_step]
    slot_offsets: tuple[float, ...]  # [tokens_per_step] seconds after the step's start
    media_per_step: dict[str, int]
    target_dim: int
    target_dims: dict[int, int]

    def forward(self, batch: Mapping[str, Any]) -> Tokens:
        raise NotImplementedError

    def no_weight_decay(self) -> list[nn.Parameter]:
        """Learnt additive codes (positions, modalities): decay would shrink what tells tokens apart
        rather than regularise a map."""
        return []

    def invert(self, targets: Tensor, target_stats: Tensor | None = None) -> dict[str, Tensor]:
        """Targets ``[B, N, target_dim]`` back to media: ``{"audio": log-mel [B, F, n_mels], "video":
        uint8 frames [B, T, 3, S, S]}`` with ``media_per_step[name]`` rows of each per step."""
        raise NotImplementedError

    def embed_targets(self, targets: Tensor, target_stats: Tensor | None) -> Tensor:
        """Embeddings ``[B, N, dim]`` of tokens whose targets are ``targets [B, N, target_dim]``: what
        `forward` gives for the media those targets invert to (``N`` a whole number of steps;
        ``target_stats [B, N, 2, 3]`` as in `Tokens`, required when there is video)."""
        raise NotImplementedError

    def steps_in(self, targets: Tensor) -> int:
        """How many steps the tokens of ``targets [B, N, ...]`` make; ValueError unless whole ones."""
        n = targets.shape[1]
        if n % self.tokens_per_step:
            raise ValueError(f"{n} tokens is not a whole number of steps of {self.tokens_per_step}")
        return n // self.tokens_per_step

    def whole_steps(self, seconds: float) -> int | None:
        """How many steps ``seconds`` holds, or None unless that is a whole number, at least 1 (windows
        of media must be: a step's tokens are made together)."""
        steps = seconds / self.seconds_per_step
        return round(steps) if round(steps) >= 1 and abs(steps - round(steps)) <= 1e-6 else None

    def seconds_text(self, steps: int) -> str:
        """``steps`` steps in seconds as the shortest decimal `whole_steps` reads back as them: what an
        error suggests typing (``:g``'s six digits of a step of 1024/22050 s are not whole steps)."""
        seconds = steps * self.seconds_per_step
        return next(t for d in range(6, 18) if self.whole_steps(float(t := f"{seconds:.{d}g}")) == steps)

    def whole_window(self, seconds: float) -> float | None:
        """``seconds`` as whole steps (`whole_steps`), or None: the value itself where it is that many
        steps up to float rounding (1.4 stays 1.4), else exactly that many (0.40000001 -> 0.4), so
        that its windows start on every sample and frame."""
        steps = self.whole_steps(seconds)
        if steps is None:
            return None
        exact = steps * self.seconds_per_step
        return seconds if abs(seconds - exact) <= 1e-12 * exact else exact

    def target_widths(self, modality: Tensor) -> Tensor:
        """How many leading target entries are real for each token: ``target_dims[modality]`` ``[B, N]``."""
        table = [self.target_dims.get(m, self.target_dim) for m in range(max(self.target_dims) + 1)]
        return torch.tensor(table, device=modality.device)[modality]


TOKEN_LOSSES = ("mse", "l1")


def token_loss(pred: Tensor, target: Tensor, widths: Tensor, kind: str = "mse") -> Tensor:
    """Per-token loss ``[B, N]``, each averaged over its real target entries: the training loss.

    ``pred``, ``target``: ``[B, N, D]``; ``widths``: ``[B, N]``, how many leading entries of each
    token's target are real (`ttt_mm.tokenizers.Tokenizer.target_widths`: audio-visual targets are
    zero-padded to a common width ``D``). ``SequenceModel`` trains on its masked mean; evaluation
    scores with it too.
    """
    if kind not in TOKEN_LOSSES:
        raise ValueError(f"kind must be one of {TOKEN_LOSSES}; got {kind!r}")
    dims = widths.to(target.device)
    real = torch.arange(target.shape[-1], device=target.device) < dims.unsqueeze(-1)  # [B, N, D]
    diff = pred.float() - target.float()
    err = diff.square() if kind == "mse" else diff.abs()
    return (err * real).sum(-1) / dims


def batch_start(batch: Mapping[str, Any], size: int, device: torch.device) -> Tensor:
    """``batch["start"]`` as float64 ``[B]`` seconds (zeros when absent; a single value: every row's)."""
    start = batch.get("start")
    if start is None:
        return torch.zeros(size, dtype=torch.float64, device=device)
    return _per_row(torch.as_tensor(start, dtype=torch.float64, device=device), size)


def batch_lengths(batch: Mapping[str, Any], key: str, size: int, full: int, device: torch.device) -> Tensor:
    """Valid lengths ``[B]`` from ``batch[key]`` (all ``full`` when absent; a single value: every row's)."""
    lengths = batch.get(key)
    if lengths is None:
        return torch.full((size,), full, dtype=torch.long, device=device)
    return _per_row(torch.as_tensor(lengths, device=device).long(), size)


def _per_row(values: Tensor, size: int) -> Tensor:
    """``values`` as ``[size]``: one per row, or one for all (a hand-built batch's ``"start": 0.5``)."""
    return values.reshape(1).expand(size) if values.numel() == 1 else values.reshape(size)


def check_rate(batch: Mapping[str, Any], key: str, expected: float, name: str) -> None:
    """Fail loudly when the data was decoded at another rate than the tokenizer assumes."""
    value = batch.get(key)
    if value is not None and abs(float(value) - float(expected)) > 1e-6:
        raise ValueError(f"batch was decoded with {key}={value} but the {name} tokenizer expects {expected}")
