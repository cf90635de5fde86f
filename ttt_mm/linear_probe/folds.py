"""Cross-validation folds that keep each class's share and never split a group.

`assign_folds` gives every sample a fold in ``0 .. k-1``. Samples of one group (a conversation, a
recording session) always share a fold, so no group is both in a fold's training and test data.
Groups are placed one by one, largest first (a seeded shuffle breaks ties), each in the fold where
the classes' shares across folds stay most even; without groups every sample is its own group,
which gives ordinary stratified folds. `fold_groups` says which clips form a group (the spans of
one file, the clips of one value of a manifest's group column), and `drop_one_group` leaves out the
classes that lie in one group, since no fold could train on them while testing them.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from ttt_mm.data.groups import joined_names

if TYPE_CHECKING:
    from ttt_mm.data import ClipInfo

log = logging.getLogger(__name__)


def assign_folds(labels: np.ndarray, groups: np.ndarray | None, k: int, seed: int = 0) -> np.ndarray:
    """Fold index of every sample ``[n]`` (int64) for integer ``labels [n]`` and optional ``groups [n]``.

    Raises ValueError when there are fewer groups (or samples) than folds.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if k < 2:
        raise ValueError(f"need at least 2 folds; got {k}")
    group_ids = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    num_groups = int(group_ids.max()) + 1 if n else 0
    if num_groups < k:
        what = "groups" if groups is not None else "samples"
        raise ValueError(f"{num_groups} {what} cannot fill {k} folds; use at most {num_groups} folds")
    classes, y = np.unique(labels, return_inverse=True)
    counts = np.zeros((num_groups, len(classes)))  # [G, C] samples of each class in each group
    np.add.at(counts, (group_ids, y), 1)
    totals = counts.sum(0)  # [C]

    rng = np.random.default_rng(seed)
    order = rng.permutation(num_groups)
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]  # largest first, shuffled within a size
    per_fold = np.zeros((k, len(classes)))  # [k, C]
    fold_of_group = np.empty(num_groups, dtype=np.int64)
    for placed, g in enumerate(order):
        empty = np.flatnonzero(per_fold.sum(1) == 0)
        # the remaining groups are just enough to give every fold one: only empty folds may take this one
        candidates = empty if num_groups - placed <= len(empty) else np.arange(k)
        trial = np.repeat(per_fold[None], len(candidates), axis=0)  # [c, k, C]: the folds if g went to c
        trial[np.arange(len(candidates)), candidates] += counts[g]
        spread = (trial / totals).std(axis=1).mean(axis=1)  # [c] how unevenly each class is spread
        sizes = per_fold[candidates].sum(1)
        best = candidates[np.lexsort((sizes, spread))[0]]  # the most even; ties to the smaller fold
        per_fold[best] += counts[g]
        fold_of_group[g] = best
    return fold_of_group[group_ids]


def warn_of_classes_some_folds_miss(
    fold_of: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str], unit: str = "groups"
) -> None:
    """Warn of the classes that some test folds hold none of (their clips lie in fewer groups than there
    are folds): such a fold's macro-F1 leaves the class out, or counts it as F1 0 where the probe predicts
    it there (as scikit-learn's does).
    ``unit`` names a group in the warning ("clips" where every clip is its own)."""
    k = int(fold_of.max()) + 1
    short = []
    for c, name in enumerate(names):
        tested, held = len(set(fold_of[y == c].tolist())), len(set(groups[y == c].tolist()))
        if tested < k:
            short.append((name, tested, held))
    if short:
        log.warning(
            "%s: a test fold without a class leaves it out of its macro-F1, or scores it 0 if predicted "
            "(folds=%d or fewer, or more %s, tests every class in every fold)",
            "; ".join(
                f"class {name!r} ({held} {unit}) is in {tested} of the {k} test folds" for name, tested, held in short
            ),
            max(2, min(held for _, _, held in short)),
            unit,
        )


def fold_groups(clips: list[ClipInfo], group: bool) -> np.ndarray:
    """The group of every clip ``[n]``, which a fold never splits: with ``group``, the spans of one file
    (whatever names lead to it) and the clips of one value of the manifest's group column, joined
    where they overlap; without, every clip alone. Groups are numbered in the order of their names
    (a group value of theirs, else their file), so unjoined groups get the folds they always had."""
    if not group:
        return np.arange(len(clips))
    names = joined_names([os.path.realpath(c.name) for c in clips], [c.group for c in clips])
    keys = [name if kind == 0 else f"file:{name}" for kind, name in names]  # (numbered as they always were)
    return np.unique(keys, return_inverse=True)[1].astype(np.int64)


def drop_one_group(clips: list[ClipInfo], names: list[str], group: bool) -> tuple[list[ClipInfo], dict[str, dict]]:
    """The clips of classes spread over at least two groups (`fold_groups`), and the others with their
    counts and why: a class held in one group is tested only in the fold that never trains on it.
    Classes in one group by their own clips go first, and the groups are drawn again without them
    (their files may have joined another class's groups), until every class left spans two."""
    held = "in one group (the spans of one file, or one value of the group column)" if group else "a single clip"
    why = f"{held}: no fold can train on it while testing it"
    dropped: dict[str, dict] = {}
    while lonely := _in_one_group(clips, group):
        alone = [label for label in lonely if _in_one_group([c for c in clips if c.label == label], group)]
        for label in sorted(alone or lonely, key=names.__getitem__):
            n = sum(c.label == label for c in clips)
            log.warning("class %r (%d clip(s)) is %s; left out of the probe", names[label], n, why)
            dropped[names[label]] = {"files": n, "reason": why}
        clips = [c for c in clips if names[c.label] not in dropped]
    return clips, dropped


def _in_one_group(clips: list[ClipInfo], group: bool) -> set[int]:
    """The labels whose clips all lie in one group (`fold_groups`)."""
    spread: dict[int, set[int]] = {}
    for clip, g in zip(clips, fold_groups(clips, group).tolist()):
        spread.setdefault(clip.label, set()).add(g)
    return {label for label, groups in spread.items() if len(groups) < 2}
