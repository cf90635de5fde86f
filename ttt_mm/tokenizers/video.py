"""Video frames to tubelet tokens: a Conv3d with kernel = stride (one matrix product), time-major, then raster.

A step is ``tubelet`` frames (``tubelet / fps`` seconds) and yields one token per
``patch x patch`` square, in row-major order; steps follow each other in time. Targets are the
tubelet's pixels normalized per patch and per channel (mean 0, std 1, as VideoMAE does), so the
model predicts structure rather than brightness; ``Tokens.target_stats`` keeps the mean and std
so `VideoTokenizer.invert` can give back exact pixels. With ``target_pool = k`` the targets are the
tubelet's ``k x k`` block means instead of its pixels (and `invert` gives back those blocks): a
compact target, which a small model learns in-context rules on far sooner than on 1536 pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ttt_mm.messages import check_count, check_positive
from ttt_mm.tokenizers.base import (
    FPS,
    FRAME_SIZE,
    VIDEO,
    Decoding,
    Tokenizer,
    Tokens,
    batch_lengths,
    batch_start,
    check_rate,
)

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, for the embedding input only


def sincos_2d(grid: int, dim: int) -> Tensor:
    """Fixed 2D sine-cosine position codes ``[grid * grid, dim]`` (row-major), as in MAE."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / max(quarter, 1))
    ys, xs = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        angle = coord[:, None] * omega[None, :]
        parts += [angle.sin(), angle.cos()]
    codes = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(codes, (0, dim - codes.shape[1])).float()


class VideoTokenizer(Tokenizer):
    """uint8 frames ``[B, T, 3, size, size]`` at ``fps`` to ``(T // tubelet) * (size // patch)**2`` tokens.

    Defaults: 8 fps, 128 px, 16 px patches, tubelets of 2 frames: 64 tokens per 0.25 s step,
    256 tokens/s. ``target_pool = k`` predicts ``k x k`` block means, ``tubelet * (patch / k)**2 * 3``
    values laid out as ``(frame, row, column, channel)``: 96 at the default ``k = 4``, every pixel
    (1536) at ``k = 1``. Position embeddings are learned, initialized to 2D sin-cos.
    """

    def __init__(
        self,
        dim: int = 128,
        fps: float = FPS,
        size: int = FRAME_SIZE,
        patch: int = 16,
        tubelet: int = 2,
        target_pool: int = 4,
    ) -> None:
        super().__init__()
        check_count(dim=dim, size=size, patch=patch, tubelet=tubelet, target_pool=target_pool)
        check_positive(fps=fps)
        if size % patch:
            raise ValueError(f"frame size {size} is not a multiple of patch {patch}")
        if patch % target_pool:  # (check_count: 1 or more)
            raise ValueError(f"target_pool {target_pool} does not divide patch {patch}")
        self.dim, self.fps, self.size, self.patch, self.tubelet = dim, fps, size, patch, tubelet
        self.target_pool = target_pool
        self.grid = size // patch
        self.tokens_per_step = self.grid**2
        self.seconds_per_step = tubelet / fps
        self.tokens_per_second = self.tokens_per_step / self.seconds_per_step
        self.slot_modality, self.slot_offsets = (VIDEO,) * self.tokens_per_step, (0.0,) * self.tokens_per_step
        self.media_per_step = {"video": tubelet}
        self.decoding = Decoding(("video",), fps=fps, size=size)
        self.target_dim = tubelet * (patch // target_pool) ** 2 * 3
        self.target_dims = {VIDEO: self.target_dim}
        self.proj = nn.Conv3d(3, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))
        self.pos = nn.Parameter(sincos_2d(self.grid, dim))  # [P, dim]
        self.register_buffer("mean", torch.tensor(_MEAN), persistent=False)  # [3]: channels last, as patches are
        self.register_buffer("std", torch.tensor(_STD), persistent=False)

    def no_weight_decay(self) -> list[nn.Parameter]:
        return [self.pos]

    def patchify(self, pixels: Tensor) -> Tensor:
        """``[B, K * tubelet, 3, S, S]`` to ``[B, K * P, tubelet * patch * patch, 3]`` (token order)."""
        b, t, c, _, _ = pixels.shape
        g, p, k = self.grid, self.patch, t // self.tubelet
        x = pixels.reshape(b, k, self.tubelet, c, g, p, g, p)
        x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)  # [B, K, gy, gx, tubelet, py, px, C]
        return x.reshape(b, k * g * g, self.tubelet * p * p, c)

    def embed_patches(self, patches: Tensor) -> Tensor:
        """``self.proj`` (the Conv3d with kernel = stride) applied to patchified pixels as one matrix
        product: the same numbers, and on the CPU its backward costs a few percent of mkldnn's Conv3d
        weight gradient, which was 13% of a default training step."""
        weight = self.proj.weight.permute(0, 2, 3, 4, 1).flatten(1)  # [dim, tubelet * p * p * 3]
        normed = (patches - self.mean) / self.std
        return F.linear(normed.to(weight.dtype).flatten(2), weight, self.proj.bias)

    def pool_targets(self, patches: Tensor) -> Tensor:
        """``[B, N, tubelet * p * p, 3]`` pixels to their ``k x k`` block means (``k = target_pool``)."""
        k = self.target_pool
        if k == 1:
            return patches
        q = self.patch // k  # blocks per side
        return patches.unflatten(2, (self.tubelet, q, k, q, k)).mean(dim=(4, 6)).flatten(2, 4)

    def unpool_targets(self, patches: Tensor) -> Tensor:
        """Inverse of `pool_targets` up to the pooling: every block mean repeated over its block."""
        k = self.target_pool
        if k == 1:
            return patches
        q = self.patch // k  # blocks per side
        return patches.unflatten(2, (self.tubelet, q, 1, q, 1)).expand(-1, -1, -1, -1, k, -1, k, -1).flatten(2, 6)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """Inverse of `patchify`."""
        b, n, _, c = patches.shape
        g, p = self.grid, self.patch
        k = n // (g * g)
        x = patches.reshape(b, k, g, g, self.tubelet, p, p, c).permute(0, 1, 4, 7, 2, 5, 3, 6)
        return x.reshape(b, k * self.tubelet, c, g * p, g * p)

    def forward(self, batch: Mapping[str, Any]) -> Tokens:
        """Tokens ``[B, (T // tubelet) * P]``; trailing frames that do not fill a tubelet are dropped."""
        check_rate(batch, "fps", self.fps, "video")
        video = batch["video"]
        if video.dtype != torch.uint8:  # (floats in [0, 1] were divided by 255 again: a black video, silently)
            raise ValueError(f"video must be uint8 frames [B, T, 3, S, S] of 0-255, as decoded; got {video.dtype}")
        b, t = video.shape[:2]
        if tuple(video.shape[2:]) != (3, self.size, self.size):
            raise ValueError(
                f"video frames are {tuple(video.shape[2:])}, the tokenizer expects (3, {self.size}, {self.size})"
            )
        steps = t // self.tubelet
        pixels = video[:, : steps * self.tubelet].float() / 255.0  # [B, T, 3, S, S] in [0, 1]
        if steps == 0:  # shorter than one tubelet: no tokens, and no per-patch statistics to take
            empty = pixels.new_zeros(b, 0)
            return Tokens(
                embeddings=pixels.new_zeros(b, 0, self.dim),
                targets=pixels.new_zeros(b, 0, self.target_dim),
                timestamps=empty.double(),
                modality=empty.long(),
                mask=empty.bool(),
                target_stats=pixels.new_zeros(b, 0, 2, 3),
            )
        pixel_patches = self.patchify(pixels)  # [B, K * P, tubelet * p * p, 3]
        emb = self.embed_patches(pixel_patches) + self.pos.repeat(steps, 1)  # [B, K * P, dim]

        patches = self.pool_targets(pixel_patches)  # [B, N, tubelet * (p / k)**2, 3]
        mean = patches.mean(dim=2, keepdim=True)
        std = (patches.var(dim=2, unbiased=False, keepdim=True) + 1e-6).sqrt()
        targets = ((patches - mean) / std).flatten(2)  # [B, N, target_dim]
        stats = torch.cat([mean, std], dim=2)  # [B, N, 2, 3]

        device = video.device
        step_of = torch.arange(steps, device=device).repeat_interleave(self.tokens_per_step)
        start = batch_start(batch, b, device)
        timestamps = start[:, None] + step_of.double() * self.seconds_per_step  # float64 (int64 * float is float32)
        lengths = batch_lengths(batch, "video_lengths", b, t, device)
        mask = step_of[None, :] < (lengths // self.tubelet)[:, None]
        return Tokens(
            embeddings=emb * mask[..., None],
            targets=targets * mask[..., None],
            timestamps=timestamps,
            modality=torch.full_like(mask, VIDEO, dtype=torch.long),
            mask=mask,
            target_stats=stats,
        )

    def invert(self, targets: Tensor, target_stats: Tensor | None = None) -> dict[str, Tensor]:
        """Targets ``[B, N, target_dim]`` to uint8 frames ``[B, (N / P) * tubelet, 3, S, S]``.

        With ``target_stats`` (from `Tokens`) pixels are exact; without, each patch is shown with
        mean 0.5 and std 0.25, which is enough to look at predicted structure.
        """
        b, n, _ = targets.shape
        self.steps_in(targets)
        patches = targets[..., : self.target_dim].reshape(b, n, self.target_dim // 3, 3).float()  # (n may be 0)
        if target_stats is None:
            patches = patches * 0.25 + 0.5
        else:
            patches = patches * target_stats[:, :, 1:2].float() + target_stats[:, :, 0:1].float()
        frames = self.unpatchify(self.unpool_targets(patches))
        return {"video": (frames.clamp(0, 1) * 255).round().to(torch.uint8)}

    def embed_targets(self, targets: Tensor, target_stats: Tensor | None) -> Tensor:
        """Targets become frames with their patch statistics, and the frames are tokenized again."""
        if target_stats is None:
            raise ValueError("video targets need their patch statistics (target_stats) to become pixels")
        frames = self.invert(targets[..., : self.target_dim], target_stats)["video"]  # [B, T, 3, S, S] uint8
        return self({"video": frames}).embeddings
