"""The linear probe: multinomial logistic regression on frozen features, scored by cross-validation.

A probe fits, on the training folds, ``softmax(W z + b)`` to the labels, where ``z`` are the
features standardised with the training folds' mean and standard deviation, minimising the mean
cross-entropy plus ``l2 / 2 * ||W||^2`` with full-batch L-BFGS (a convex problem: one solution,
whatever the start). ``l2`` is chosen per fold from a grid by the cross-entropy on one inner
validation fold of the training data (grouped like the outer folds), then the probe is refit on
all of the training folds and scored on the test fold: accuracy and macro-F1.

Features are either one vector per file or rows (e.g. one per 0.5 s) that each carry their file's
label; a row probe weights every file equally in the loss and predicts a file by the mean of its
rows' log-probabilities.

Why a few lines of torch rather than scikit-learn: no extra dependency, per-row weights, warm
starts along the ``l2`` grid, and the problem sizes here (thousands of files, up to a few hundred
thousand rows, D up to a few thousand) take L-BFGS (float64, gradients written out) about a
second per fit on a CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from ttt_mm.linear_probe.folds import assign_folds

log = logging.getLogger(__name__)

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)

ONE_THREAD_BELOW = 2**22
"""Fits with fewer feature values than this run on one CPU thread: their matrix products are too
small to share, and waking other threads costs more than the work (5-10x on a busy 2-core machine)."""


@dataclass
class Features:
    """One feature set: ``x [R, D]`` float32 rows and ``owner [R]`` the file (0 .. n-1) of each row.
    With one row per file, ``owner`` is ``arange(n)``."""

    x: Tensor
    owner: Tensor

    @classmethod
    def per_file(cls, x: Tensor) -> Features:
        return cls(x, torch.arange(len(x)))

    def files(self, index: np.ndarray) -> Features:
        """The rows of the files ``index``, renumbered ``0 .. len(index) - 1`` in that order."""
        new = torch.full((int(self.owner.max()) + 1,), -1, dtype=torch.long)
        new[torch.as_tensor(index, dtype=torch.long)] = torch.arange(len(index))
        keep = new[self.owner] >= 0
        return Features(self.x[keep], new[self.owner[keep]])


@dataclass
class Classifier:
    """A fitted probe: the standardisation and the linear map (``weight [D, C]``, ``bias [C]``)."""

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def file_log_probs(self, features: Features, num_files: int) -> Tensor:
        """``[num_files, C]``: each file's rows' mean log-probabilities, renormalised."""
        rows = F.log_softmax(((features.x - self.mean) / self.std) @ self.weight + self.bias, dim=-1)
        sums = rows.new_zeros(num_files, rows.shape[1]).index_add_(0, features.owner, rows)
        counts = torch.bincount(features.owner, minlength=num_files).clamp_min(1)
        return F.log_softmax(sums / counts[:, None], dim=-1)


def fit(
    features: Features, y: Tensor, num_classes: int, l2: float, start: Classifier | None = None, max_iter: int = 300
) -> Classifier:
    """Fit a probe to files labelled ``y [n]`` (each row takes its file's label and weight ``1 / rows``).

    ``start``: a probe on the same features whose weights to start from (a neighbouring ``l2``).
    """
    x = features.x.double()
    if not torch.isfinite(x).all():
        raise ValueError(
            "features that are not finite (NaN or inf) cannot be probed: every prediction would be one class"
        )
    mean, std = x.mean(0), x.std(0, unbiased=False)
    std = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))  # constant: leave as is
    z = (x - mean) / std  # [R, D]
    counts = torch.bincount(features.owner).clamp_min(1)
    weight = 1.0 / counts[features.owner].double()
    weight = (weight / weight.sum())[:, None]  # [R, 1]
    onehot = F.one_hot(y[features.owner], num_classes).double()  # [R, C]
    W = torch.zeros(x.shape[1], num_classes, dtype=torch.float64) if start is None else start.weight.double().clone()
    b = torch.zeros(num_classes, dtype=torch.float64) if start is None else start.bias.double().clone()
    opt = torch.optim.LBFGS(
        [W, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:  # loss and gradients written out: no autograd graph per step
        logp = F.log_softmax(z @ W + b, dim=-1)
        loss = -(weight * onehot * logp).sum() + 0.5 * l2 * W.square().sum()
        residual = weight * (logp.exp() - onehot)  # [R, C] d loss / d logits
        W.grad, b.grad = z.T @ residual + l2 * W, residual.sum(0)
        return loss

    with _threads(1 if z.numel() < ONE_THREAD_BELOW else torch.get_num_threads()):
        opt.step(closure)
    return Classifier(mean.float(), std.float(), W.float(), b.float())


@contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def choose_l2(
    features: Features, y: np.ndarray, groups: np.ndarray | None, num_classes: int, grid: tuple[float, ...], seed: int
) -> tuple[float, Classifier | None]:
    """The ``l2`` of ``grid`` with the lowest cross-entropy on one inner validation fold (a quarter of
    the files, grouped; the middle of the grid when the files cannot be split), and the probe fitted
    with it on the rest (a good start for the refit on all files)."""
    if len(grid) == 1:
        return grid[0], None
    try:
        inner = assign_folds(y, groups, 4, seed)
    except ValueError:
        middle = sorted(grid)[len(grid) // 2]  # (by value: a grid may be given in any order)
        log.debug("too few files or groups to choose l2; using %g", middle)
        return middle, None
    train, val = np.flatnonzero(inner != 0), np.flatnonzero(inner == 0)
    train_x, val_x = features.files(train), features.files(val)
    val_y = torch.as_tensor(y[val])
    fitted, losses, probe = {}, {}, None
    for l2 in sorted(grid, reverse=True):  # strong to weak, each fit starting from the last
        probe = fitted[l2] = fit(train_x, torch.as_tensor(y[train]), num_classes, l2, start=probe)
        losses[l2] = float(F.nll_loss(probe.file_log_probs(val_x, len(val)), val_y))
    best = min(grid, key=lambda l2: losses[l2])
    return best, fitted[best]


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(y == pred))


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the classes that occur in ``y`` or ``pred`` (``2 TP / (2 TP + FP + FN)`` each)."""
    scores = []
    for c in np.union1d(y, pred):
        tp = np.sum((pred == c) & (y == c))
        scores.append(2 * tp / (2 * tp + np.sum((pred == c) & (y != c)) + np.sum((pred != c) & (y == c))))
    return float(np.mean(scores))


FOLD_COLUMNS = ("fold", "train_files", "test_files", "accuracy", "macro_f1", "l2")


@dataclass
class FoldScore:
    fold: int
    train_files: int
    test_files: int
    accuracy: float
    macro_f1: float
    l2: float | None
    predictions: np.ndarray  # [test_files] predicted class of each test file, in file order

    def row(self) -> dict:
        """The fold's numbers as ``metrics.json`` and ``folds.csv`` list them (not its predictions)."""
        return {k: getattr(self, k) for k in FOLD_COLUMNS}


def cross_validate(
    features: Features,
    y: np.ndarray,
    folds: np.ndarray,
    num_classes: int,
    groups: np.ndarray | None = None,
    grid: tuple[float, ...] = L2_GRID,
    seed: int = 0,
) -> list[FoldScore]:
    """Score a probe on every fold of ``folds [n]`` (the fold of each file), trained on the others."""
    scores = []
    for k in range(int(folds.max()) + 1):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        train_groups = None if groups is None else groups[train]
        train_x = features.files(train)
        l2, start = choose_l2(train_x, y[train], train_groups, num_classes, grid, seed)
        probe = fit(train_x, torch.as_tensor(y[train]), num_classes, l2, start=start)
        pred = probe.file_log_probs(features.files(test), len(test)).argmax(-1).numpy()
        scores.append(FoldScore(k, len(train), len(test), accuracy(y[test], pred), macro_f1(y[test], pred), l2, pred))
    return scores


def majority_class(y: np.ndarray, folds: np.ndarray) -> list[FoldScore]:
    """The chance level on the same folds: every test file gets the training folds' most frequent class."""
    scores = []
    for k in range(int(folds.max()) + 1):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        pred = np.full(len(test), np.bincount(y[train]).argmax())
        scores.append(FoldScore(k, len(train), len(test), accuracy(y[test], pred), macro_f1(y[test], pred), None, pred))
    return scores


def summarize(scores: list[FoldScore]) -> dict:
    """Mean and spread (sample std) of accuracy and macro-F1 over the folds, and every fold's scores."""
    acc, f1 = np.array([s.accuracy for s in scores]), np.array([s.macro_f1 for s in scores])
    std = {"ddof": 1} if len(scores) > 1 else {}
    return {
        "accuracy": {"mean": float(acc.mean()), "std": float(acc.std(**std))},
        "macro_f1": {"mean": float(f1.mean()), "std": float(f1.std(**std))},
        "folds": [s.row() for s in scores],
    }
