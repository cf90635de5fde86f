"""Depthwise causal 1D convolution that streams: it carries its last ``kernel - 1`` inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ttt_mm.messages.arguments import check_count


class CausalDepthwiseConv(nn.Module):
    """``y_t = sum_i w_{k-1-i} * x_{t-i} (+ bias)`` per channel, on ``[B, T, C]`` inputs (``k`` the kernel
    size: the last weight takes the newest input, as ``nn.Conv1d`` over left-padded inputs does).

    ``forward(x, cache)`` returns ``(y, cache)`` where ``cache [B, kernel-1, C]`` holds the inputs
    the next call needs; ``None`` means the sequence starts here (zeros before it).
    """

    def __init__(self, dim: int, kernel_size: int = 4, bias: bool = True):
        super().__init__()
        check_count(kernel_size=kernel_size)
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=bias)

    def forward(self, x: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if cache is None:
            cache = x.new_zeros(x.shape[0], self.kernel_size - 1, x.shape[2])
        if x.shape[1] == 0:  # (shorter than the kernel: conv1d would refuse it)
            return x, cache.to(x.dtype)
        padded = torch.cat([cache.to(x.dtype), x], dim=1)  # [B, kernel-1+T, C]
        y = F.conv1d(padded.transpose(1, 2), self.conv.weight, self.conv.bias, groups=x.shape[2])
        return y.transpose(1, 2), padded[:, padded.shape[1] - (self.kernel_size - 1) :]
