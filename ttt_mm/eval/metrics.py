"""Metric functions for long-clip evaluation: pure, no config, each checkable by hand.

- `psnr` and `ssim` compare frames ``[..., C, H, W]`` (uint8 or float on a ``max_value`` scale) and
  return one number per frame;
- `log_bin_index` / `log_bin_edges` / `LogBins` bin a loss by context position (token index or
  seconds) in log-spaced bins, as in the loss-versus-position figure of Sun et al. 2024;
- `mel_l1` is the mean absolute difference of two log-mel spectrograms;
- `edge_masks` picks the first and last fraction of a clip (length extrapolation).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

# ------------------------------------------------------------------------------------------ frames


def psnr(pred: Tensor, target: Tensor, max_value: float = 255.0, max_db: float = 100.0) -> Tensor:
    """Peak signal-to-noise ratio per image: ``10 log10(max_value**2 / MSE)`` over the last three dims.

    ``pred``, ``target``: ``[..., C, H, W]`` -> ``[...]`` float64 dB. Identical images would give
    infinity, which would make every mean infinite; the MSE is floored so they give ``max_db``.
    Example: all pixels 10 against all 12 gives MSE 4 and ``10 log10(65025 / 4) = 42.11`` dB.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    mse = (pred.double() - target.double()).square().mean(dim=(-3, -2, -1))
    floor = max_value**2 / 10 ** (max_db / 10)
    return 10 * torch.log10(max_value**2 / mse.clamp_min(floor))


def _window_1d(size: int, sigma: float | None) -> Tensor:
    """Normalized 1D weights: Gaussian of ``sigma`` pixels, or uniform when ``sigma`` is None."""
    if sigma is None:
        return torch.full((size,), 1.0 / size, dtype=torch.float64)
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    pred: Tensor,
    target: Tensor,
    max_value: float = 255.0,
    window: int = 11,
    sigma: float | None = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), averaged over channels and positions.

    ``pred``, ``target``: ``[..., C, H, W]`` -> ``[...]`` float64. Local means, variances and the
    covariance are weighted by a ``window x window`` Gaussian of ``sigma`` (uniform if None) over
    every position where it fits (no padding); variances are population (weighted) ones. With
    ``L = max_value``, ``c1 = (k1 L)**2``, ``c2 = (k2 L)**2``::

        SSIM = (2 mu_x mu_y + c1) (2 cov_xy + c2) / ((mu_x**2 + mu_y**2 + c1) (var_x + var_y + c2))

    Two flat images ``a`` and ``b`` give ``(2ab + c1) / (a**2 + b**2 + c1)``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    *lead, c, h, w = pred.shape
    if h < window or w < window:
        raise ValueError(
            f"images of {h}x{w} px are smaller than the {window}x{window} SSIM window; pass a smaller window"
        )
    x = pred.double().reshape(-1, 1, h, w)  # every channel of every image on its own
    y = target.double().reshape(-1, 1, h, w)
    g = _window_1d(window, sigma).to(x.device)

    def blur(z: Tensor) -> Tensor:  # separable weighted mean over each window position
        return F.conv2d(F.conv2d(z, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * max_value) ** 2, (k2 * max_value) ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.mean(dim=(-3, -2, -1)).reshape(*lead, c).mean(-1)


# ------------------------------------------------------------------------------------------ tokens


def mel_l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference over the last two dims (frames, mels) of log-mel spectrograms
    ``[..., F, n_mels]`` -> ``[...]``, in the spectrograms' own units (natural-log mel power)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return (pred.double() - target.double()).abs().mean(dim=(-2, -1))


# ----------------------------------------------------------------------------------------- binning


def log_bin_index(x: np.ndarray, start: float = 1.0, per_octave: int = 2) -> np.ndarray:
    """Bin of each position ``x >= 0``: 0 for ``[0, start)``, then ``per_octave`` bins per doubling.

    Bin ``k >= 1`` is ``[start * 2**((k-1)/per_octave), start * 2**(k/per_octave))`` (see
    `log_bin_edges`). With ``start=1, per_octave=1``: 0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, 8 -> 4.
    The bins need no known maximum, so they can be filled while streaming.
    """
    if start <= 0 or per_octave < 1:
        raise ValueError(f"start must be > 0 and per_octave >= 1; got {start}, {per_octave}")
    x = np.asarray(x, dtype=np.float64)
    if x.size and x.min() < 0:
        raise ValueError(f"positions must be >= 0; got {x.min()}")
    index = np.zeros(x.shape, dtype=np.int64)
    above = x >= start
    # the 1e-9 keeps positions on an edge (2**k up to rounding) in the bin that starts there
    index[above] = np.floor(per_octave * np.log2(x[above] / start) + 1e-9).astype(np.int64) + 1
    return index


def log_bin_edges(index: int, start: float = 1.0, per_octave: int = 2) -> tuple[float, float]:
    """``[lo, hi)`` of bin ``index`` of `log_bin_index`."""
    lo = 0.0 if index == 0 else start * 2 ** ((index - 1) / per_octave)
    return lo, start * 2 ** (index / per_octave)


class LogBins:
    """Running sums of several series of values per log-spaced bin of position.

    ``add(x [n], values [n, S])`` accumulates; `rows` gives, for every non-empty bin, its edges,
    the mean position of what fell in it, the count and the mean of each of the ``S`` series.
    """

    def __init__(self, num_series: int, start: float = 1.0, per_octave: int = 2) -> None:
        self.start, self.per_octave, self.num_series = start, per_octave, num_series
        self.counts = np.zeros(0, dtype=np.int64)
        self.x_sums = np.zeros(0)
        self.sums = np.zeros((0, num_series))

    def _grow(self, size: int) -> None:
        if size > len(self.counts):
            extra = size - len(self.counts)
            self.counts = np.concatenate([self.counts, np.zeros(extra, dtype=np.int64)])
            self.x_sums = np.concatenate([self.x_sums, np.zeros(extra)])
            self.sums = np.concatenate([self.sums, np.zeros((extra, self.num_series))])

    def add(self, x: np.ndarray, values: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(len(x), -1 if len(x) else self.num_series)
        if values.shape[1] != self.num_series:
            raise ValueError(f"expected {self.num_series} series, got {values.shape[1]}")
        if len(x) == 0:
            return
        index = log_bin_index(x, self.start, self.per_octave)
        self._grow(int(index.max()) + 1)
        size = len(self.counts)
        self.counts += np.bincount(index, minlength=size)
        self.x_sums += np.bincount(index, weights=x, minlength=size)
        for s in range(self.num_series):
            self.sums[:, s] += np.bincount(index, weights=values[:, s], minlength=size)

    def rows(self) -> list[dict]:
        """``[{"bin", "lo", "hi", "x_mean", "count", "means": [S]}]`` for non-empty bins, in order."""
        out = []
        for k in np.flatnonzero(self.counts):
            lo, hi = log_bin_edges(int(k), self.start, self.per_octave)
            n = int(self.counts[k])
            out.append(
                {
                    "bin": int(k),
                    "lo": lo,
                    "hi": hi,
                    "x_mean": self.x_sums[k] / n,
                    "count": n,
                    "means": list(self.sums[k] / n),
                }
            )
        return out


def edge_masks(x: np.ndarray, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the positions ``x`` in the first and in the last ``fraction`` of the span they cover,
    ``[min(x), max(x)]``: ``x <= min + fraction * span`` and ``x >= max - fraction * span``. Each holds
    at least the first (last) position, so neither is empty where ``x`` is not, and the two are
    measured alike (a clip's scoring starts a step after its start, and its last step starts a step
    before its end)."""
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5]; got {fraction}")
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return np.zeros(0, bool), np.zeros(0, bool)
    begin, end = x.min(), x.max()
    edge = fraction * (end - begin) + 1e-9 * max(1.0, abs(end))  # (a step on the edge counts on both sides alike)
    return x <= begin + edge, x >= end - edge


def safe_mean(total: float, count: int) -> float:
    """``total / count``, NaN for an empty count (written as null in JSON)."""
    return total / count if count else math.nan
