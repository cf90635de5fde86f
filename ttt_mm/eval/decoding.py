"""Decoding and split settings for a trained model: the checkpoint's own.

A model reads media the way it was trained to (its tokenizer's streams, sample rate, frame rate
and frame size). Evaluation takes those from the checkpoints (embedding from its one model, through
`Embedder.read_spec`), so no ``data.*`` value has to be repeated by hand; a value the user does set
must agree with the checkpoint, else it is a clear error rather than a model fed frames of a size it
never saw. Its validation and test files are those of its run: the split fractions it was trained
with (`checkpoint_split`), whatever ``data.*`` says.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

DECODING_KEYS = ("modalities", "sample_rate", "fps", "size")
"""The ``data.*`` keys a checkpoint decides."""


def _normal(key: str, value: Any) -> Any:
    """A value in a form that compares as the model reads it (stream order and 8 vs 8.0 do not matter)."""
    if key == "modalities":
        return tuple(sorted(value))
    if key == "fps":
        return round(float(value), 9)
    return int(value)


def _shown(key: str, value: Any) -> str:
    return "[" + ",".join(value) + "]" if key == "modalities" else f"{value:g}"


def checkpoint_decoding(models: Mapping[str, Mapping[str, Any]], requested: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data.*`` decoding values for reading media with these models.

    Args:
        models: checkpoint name -> its decoding settings, ``{"modalities": [...], "sample_rate": ...,
            "fps": ..., "size": ...}``, None for a setting of a stream the model does not read.
        requested: ``data.<key>`` -> the value the user set (None or absent: not set).

    Returns:
        ``{key: value}`` for every key of `DECODING_KEYS` that some model uses, from the checkpoints.

    Raises:
        ValueError: when the checkpoints disagree with each other, or a value the user set differs
            from theirs; the message names the key, the checkpoint and both values.
    """
    settings: dict[str, Any] = {}
    for key in DECODING_KEYS:
        values = {name: _normal(key, m[key]) for name, m in models.items() if m.get(key) is not None}
        if not values:
            continue
        if len(set(values.values())) > 1:
            listed = ", ".join(f"{name}: {_shown(key, v)}" for name, v in values.items())
            raise ValueError(f"the checkpoints read different {key} ({listed}); evaluate them in separate runs")
        name, value = next(iter(values.items()))
        user = requested.get(key)
        if key == "modalities" and isinstance(user, str):  # (sorted, its letters were compared: [a,d,i,o,u])
            raise ValueError(f"data.modalities must be a list (of a string each); got {user!r}")
        if user is not None and _normal(key, user) != value:
            raise ValueError(
                f"data.{key}={_shown(key, _normal(key, user))} conflicts with checkpoint {name}, which was trained "
                f"on {key}={_shown(key, value)}; leave data.{key} unset to use the checkpoint's"
            )
        settings[key] = list(value) if key == "modalities" else value
    return settings


def checkpoint_split(models: Mapping[str, Mapping[str, float] | None]) -> dict[str, float]:
    """``data.val_fraction`` and ``data.test_fraction`` that give the files of the checkpoints' own
    validation and test splits (``models``: checkpoint name -> what it recorded, `trained_split`, or
    None). Empty when none recorded them (``data.*`` then decides).

    Raises:
        ValueError: when the checkpoints were trained on different splits.
    """
    recorded = {name: dict(split) for name, split in models.items() if split}
    if len({tuple(sorted(split.items())) for split in recorded.values()}) > 1:
        listed = ", ".join(f"{name}: {_fractions(split)}" for name, split in recorded.items())
        raise ValueError(
            f"the checkpoints were trained on different splits ({listed}); evaluate their val or test split "
            "in separate runs, or all files (split=all)"
        )
    if recorded and (unknown := [name for name in models if name not in recorded]):
        log.warning(
            "%s record%s no split (saved by an older version): the split of %s (%s) is taken for %s too, "
            "whose own run may have trained on some of its files",
            ", ".join(unknown),
            "s" if len(unknown) == 1 else "",
            next(iter(recorded)),
            _fractions(next(iter(recorded.values()))),
            "it" if len(unknown) == 1 else "them",
        )
    return next(iter(recorded.values()), {})


def _fractions(split: Mapping[str, float]) -> str:
    return " ".join(f"{key}={value:g}" for key, value in split.items())
