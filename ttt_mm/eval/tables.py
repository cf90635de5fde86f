"""The outputs of an evaluation: ``metrics.json`` and the CSV tables (summary, loss versus context,
rollout horizons, frames, files), plus the loss-versus-context figures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ttt_mm.eval.report import ModelReport
from ttt_mm.eval.scoring import HORIZON_FIELDS, SERIES
from ttt_mm.storage.atomic import temporary_path, write_csv, write_json

# What an evaluation may write besides the tables (which are always rewritten): which figures depends on
# its clips and models, and the skip list is appended to, so a new evaluation into the same folder
# removes an earlier one's, once its own clips are known (a rerun stopped by a config mistake leaves
# the earlier results whole).
FIGURES = ("loss_vs_context*.png", "rollout_*.png", "spectrogram_*.png")
SKIP_LIST = "skipped_media.tsv"


@contextmanager
def skip_list_set_aside(output: Path) -> Iterator[bool]:
    """Moves an earlier evaluation's skip list out of the way for the block (the new one is opened and
    appended to there) and puts it back if the block raises; yields whether there was one."""
    path = output / SKIP_LIST
    for left in output.glob(f".{SKIP_LIST}.*.tmp"):  # set aside by an evaluation that was killed: put back
        if path.exists():
            left.unlink()
        else:
            os.replace(left, path)
    aside = temporary_path(path)
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        aside = None
    if aside is None:  # (outside the except: an error in the block is not chained to this one)
        yield False
        return
    try:
        yield True
    except BaseException:
        os.replace(aside, path)
        raise
    aside.unlink()


def remove_figures(output: Path) -> int:
    """Deletes the evaluation figures in ``output``; returns how many there were."""
    figures = [p for pattern in FIGURES for p in output.glob(pattern)]
    for path in figures:
        path.unlink()
    return len(figures)


def remove_earlier_figures(output: Path, had_skip_list: bool) -> str | None:
    """Deletes an earlier evaluation's figures from ``output``; returns what it held, for the log (None:
    no earlier evaluation there)."""
    figures = remove_figures(output)
    if not figures and not had_skip_list and not (output / "metrics.json").exists():
        return None
    return f"{figures} figure(s) removed; its tables and skip list are replaced by this evaluation's as it ends"


def _prefixed(row: dict) -> dict:
    """A loss-versus-context row with its series renamed ``loss_<series>`` (a CSV column is already called model)."""
    return {f"loss_{k}" if k in SERIES else k: v for k, v in row.items()}


def write_outputs(output: Path, result: dict, settings: dict, with_plots: bool) -> dict[str, str]:
    """metrics.json, the CSV tables and the loss-versus-context figures; returns their paths."""
    reports: dict[str, ModelReport] = result["reports"]
    dicts = {name: r.to_dict() for name, r in reports.items()}
    metrics = {"settings": settings, "files": result["files"], "skipped": result["skipped"], "models": dicts}
    paths = {"metrics": output / "metrics.json"}
    write_json(paths["metrics"], metrics)

    summary, curves, horizons, files = [], [], [], []
    for name, d in dicts.items():
        for group, edges in d["length_extrapolation"].items():
            if not isinstance(edges, dict):
                continue
            tokens = d["tokens_scored"] if group == "all" else d["by_modality"][group]["tokens"]
            loss = d["loss"] if group == "all" else d["by_modality"][group]["loss"]
            for s in SERIES:
                summary.append(
                    {"model": name, "group": group, "series": s, "tokens": tokens, "loss": loss[s], **edges[s]}
                )
        for group, axes in d["loss_vs_context"].items():
            for axis, rows in axes.items():
                curves += [{"model": name, "group": group, "axis": axis, **_prefixed(r)} for r in rows]
        horizons += [{"model": name, **h} for h in d["rollout"]["horizons"]]
        for f in d["per_file"]:
            row = {
                "model": name,
                "path": f["path"],
                "start": f["start"],
                "seconds": f["seconds"],
                "tokens": f["tokens"],
                "scored": f["scored"],
            }
            for part in ("loss", "first", "last"):
                row |= {f"{part}_{s}": f[part][s] for s in SERIES}
            files.append(row)
    tables = {
        "summary": (summary, ["model", "group", "series", "tokens", "loss", "first", "last", "last_over_first"]),
        "loss_vs_context": (
            curves,
            ["model", "group", "axis", "lo", "hi", "x_mean", "count", *(f"loss_{s}" for s in SERIES)],
        ),
        "horizons": (horizons, ["model", "horizon", "seconds", "count", *HORIZON_FIELDS]),
        "frames": (
            [row for r in reports.values() for row in r.frame_rows()],
            ["model", "path", "start", "frame", "seconds", "psnr_model", "psnr_copy", "ssim_model", "ssim_copy"],
        ),
        "files": (
            files,
            ["model", "path", "start", "seconds", "tokens", "scored"]
            + [f"{p}_{s}" for p in ("loss", "first", "last") for s in SERIES],
        ),
    }
    for key, (rows, columns) in tables.items():
        paths[key] = output / f"{key}.csv"
        write_csv(paths[key], rows, columns)
    if with_plots and any(r.groups["all"].count for r in reports.values()):
        from ttt_mm.eval import plots

        groups = next(iter(dicts.values()))["loss_vs_context"].keys()
        for group in groups:
            if all(group in d["loss_vs_context"] for d in dicts.values()):
                key = "loss_vs_context_png" + ("" if group == "all" else f"_{group}")
                paths[key] = output / ("loss_vs_context.png" if group == "all" else f"loss_vs_context_{group}.png")
                plots.loss_vs_context({n: d["loss_vs_context"] for n, d in dicts.items()}, paths[key], group)
    return {k: str(v) for k, v in paths.items()}
