"""Clips that go together: the spans of one file, and the clips of one value of a manifest's ``group``
column (a conversation, a recording session), joined where they share a file. A split (train,
validation, test: `split_units`) never parts them, nor does a cross-validation fold
(`ttt_mm.linear_probe.folds`): a model validated on half a conversation it trained on measures fit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ttt_mm.data.sources import ClipInfo


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


def joined(files: Sequence[str], groups: Sequence[str | None]) -> list[int]:
    """The joined group of each clip (`joined_groups`), keyed by its file and its group value (None: none)."""
    return joined_groups([(f"file:{f}", *((f"group:{g}",) if g else ())) for f, g in zip(files, groups)]).tolist()


def joined_names(files: Sequence[str], groups: Sequence[str | None]) -> list[tuple[int, str]]:
    """The name of each clip's joined group (`joined`): ``(0, v)``, the least group value among the
    clips it joins, else ``(1, file)``, its file's."""
    joined_of = joined(files, groups)
    least: dict[int, tuple[int, str]] = {}
    for j, f, g in zip(joined_of, files, groups):
        least[j] = min(least.get(j, (2, "")), (0, g) if g else (1, f))
    return [least[j] for j in joined_of]


GROUP = "group:"
"""How a split unit named by a group value starts (`split_units`; a file key written so would share
its unit with that group's)."""


def split_units(clips: Sequence[ClipInfo]) -> dict[str, str]:
    """The unit each file's split is drawn from (`ClipInfo.split_of`), by its `ClipInfo.file_key`: the
    file's own key where its clips carry no group value, else ``group:<v>``, the least value of the
    group its clips join (`joined_names`). Without group values every file is its own unit, as it
    always was."""
    files = [c.file_key for c in clips]
    names = joined_names(files, [c.group for c in clips])
    return {f: GROUP + name if kind == 0 else name for f, (kind, name) in zip(files, names)}
