"""Cross-validation folds that keep each class's share and never split a group.

`assign_folds` gives every sample a fold in ``0 .. k-1``. Samples of one group (a conversation, a
recording session) always share a fold, so no group is both in a fold's training and test data.
Groups are placed one by one, largest first (a seeded shuffle breaks ties), each in the fold where
the classes' shares across folds stay most even; without groups every sample is its own group,
which gives ordinary stratified folds.
"""

from __future__ import annotations

import numpy as np


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


def joined_groups(keys: list[tuple[str, ...]]) -> np.ndarray:
    """Group index of every sample ``[n]`` (int64, ``0 .. G-1``), where samples that share any key, or
    are linked through a chain of others that do, form one group: a clip keyed by its file and by
    its manifest group joins every span of that file and every clip of that group."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, sample_keys in enumerate(keys):
        for key in sample_keys:
            parent[root(i)] = root(first.setdefault(key, i))
    return np.unique([root(i) for i in range(len(keys))], return_inverse=True)[1].astype(np.int64)
