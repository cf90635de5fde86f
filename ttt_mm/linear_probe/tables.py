"""The linear probe's output files, each written whole under a temporary name and renamed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttt_mm.linear_probe.classifier import FOLD_COLUMNS
from ttt_mm.storage.atomic import write_csv, write_json


def write_outputs(output: Path, metrics: dict, scores: dict, clips, y, names, fold_of) -> dict[str, str]:
    """``metrics.json``, ``folds.csv`` (one row per feature set and fold) and ``files.csv`` (each file's
    label, fold and prediction by every feature set) in ``output``; returns their paths."""
    paths = {"metrics": output / "metrics.json", "folds": output / "folds.csv", "files": output / "files.csv"}
    write_json(paths["metrics"], metrics)
    fold_rows = [
        {"features": name, **s.row()} | {"l2": "" if s.l2 is None else s.l2}
        for name, fold_scores in scores.items()
        for s in fold_scores
    ]
    write_csv(paths["folds"], fold_rows, ["features", *FOLD_COLUMNS])
    predicted = {name: np.empty(len(clips), dtype=np.int64) for name in scores}
    for name, fold_scores in scores.items():
        for s in fold_scores:
            predicted[name][fold_of == s.fold] = s.predictions
    file_rows = [
        {
            "path": c.name,
            "start": c.start,
            "end": "" if c.end is None else c.end,
            "label": names[y[i]],
            "group": c.group or "",
            "fold": int(fold_of[i]),
        }
        | {f"predicted_{name}": names[p[i]] for name, p in predicted.items()}
        for i, c in enumerate(clips)
    ]
    columns = ["path", "start", "end", "label", "group", "fold", *(f"predicted_{n}" for n in scores)]
    write_csv(paths["files"], file_rows, columns)
    return {k: str(v) for k, v in paths.items()}
