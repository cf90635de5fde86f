"""PNG figures of an evaluation: loss versus context, rollout frame strips, spectrograms.

matplotlib is imported on first use (Agg backend, no display needed) and is only needed here.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ttt_mm.storage.atomic import replaced

log = logging.getLogger(__name__)

SERIES_STYLE = {"model": "-", "copy_last_step": "--", "running_mean": ":"}


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the evaluation figures need matplotlib: pip install matplotlib (or set plots=false)"
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    """The figure as a PNG at ``path``, written whole (`ttt_mm.storage.atomic`)."""
    with replaced(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def loss_vs_context(curves: dict[str, dict], path: str | Path, group: str = "all") -> None:
    """One figure, two panels (token index, seconds), log x axis: every model's loss and its baselines.

    ``curves[name]`` is a model report's ``loss_vs_context``. Baselines that are the same for
    several models (same tokenizer and targets) are drawn once.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, axis, label in zip(axes, ("tokens", "seconds"), ("token index in the clip", "seconds into the clip")):
        lines = {}
        for name, curve in curves.items():
            rows = [r for r in curve[group][axis] if r["x_mean"] > 0]
            lines[name] = {
                s: (np.array([r["x_mean"] for r in rows]), np.array([r[s] for r in rows], dtype=float))
                for s in SERIES_STYLE
            }
        for k, (name, series) in enumerate(lines.items()):
            color = colors[k % len(colors)]
            x, y = series["model"]
            ax.plot(x, y, "-", marker="o", markersize=3, color=color, label=name)
            for s in ("copy_last_step", "running_mean"):
                same = [n for n, other in lines.items() if _same(other[s], series[s])]
                if same[0] != name:
                    continue  # drawn with the first model that has the same baseline
                shared = len(same) == len(lines)
                x, y = series[s]
                ax.plot(
                    x,
                    y,
                    SERIES_STYLE[s],
                    color="gray" if shared else color,
                    alpha=0.8,
                    label=s if shared else f"{s} ({name})",
                )
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("prediction loss")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"loss versus context position ({group} tokens; log-spaced bins)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return a[0].shape == b[0].shape and np.allclose(a[0], b[0]) and np.allclose(a[1], b[1], equal_nan=True)


def _short(title: str, width: int = 60) -> str:
    """A clip's name as a figure title: its end, and any byte that is not UTF-8 shown as a replacement
    character (a font has no glyph for the surrogate Python holds it as)."""
    title = title.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return title if len(title) <= width else "..." + title[-width:]


def _image(frame: np.ndarray) -> np.ndarray:
    """uint8 ``[3, H, W]`` -> ``[H, W, 3]``."""
    return np.asarray(frame).transpose(1, 2, 0)


def frame_strip(plots: dict[str, dict], path: str | Path, title: str) -> None:
    """Rows: the true frames (first column: the last frame seen), then each model's rollout and
    one-step (teacher-forced) prediction; columns: horizons 1..k (first frame of each step)."""
    plt = _pyplot()
    first = next(iter(plots.values()))
    k = len(first["truth"])
    rows = [("truth", first["last"]["video"][-1], [s["video"][0] for s in first["truth"]])]
    for name, plot in plots.items():
        rows.append((f"{name}\nrollout", None, [s["video"][0] for s in plot["rollout"]]))
        rows.append((f"{name}\none-step", None, [s["video"][0] for s in plot["onestep"]]))
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(max(6.0, 1.3 * (k + 1)), 1.4 * len(rows)), squeeze=False)
    for r, (label, start, frames) in enumerate(rows):
        for c in range(k + 1):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = start if c == 0 else frames[c - 1]
            if image is not None:
                ax.imshow(_image(image.numpy() if hasattr(image, "numpy") else image), interpolation="nearest")
            else:
                ax.axis("off")
            if r == 0:
                ax.set_title("last seen" if c == 0 else f"+{c}", fontsize=8)
        axes[r][0].set_ylabel(label, fontsize=7)
        if start is None:
            axes[r][0].text(0.5, 0.5, label, ha="center", va="center", fontsize=7, transform=axes[r][0].transAxes)
    fig.suptitle(f"{_short(title)}: rollout from {first['origin_seconds']:.2f} s", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def spectrograms(plots: dict[str, dict], path: str | Path, title: str) -> None:
    """Log-mel spectrograms over the rollout span: truth, then each model's rollout and one-step
    prediction (the first columns of every panel are the last step seen)."""
    plt = _pyplot()
    first = next(iter(plots.values()))

    def joined(plot: dict, key: str) -> np.ndarray:
        seen = np.asarray(first["last"]["audio"])
        return np.concatenate([seen] + [np.asarray(s["audio"]) for s in plot[key]]).T  # [n_mels, F]

    panels = [("truth", joined(first, "truth"))]
    for name, plot in plots.items():
        panels += [(f"{name} rollout", joined(plot, "rollout")), (f"{name} one-step", joined(plot, "onestep"))]
    # one colour scale that holds every panel: taken from the truth alone, predictions louder than a
    # near-silent truth (a fade-out) all saturated into stripes
    lo = min(np.percentile(mel, 1) for _, mel in panels)
    hi = max(np.percentile(mel, 99.5) for _, mel in panels)
    seen = len(first["last"]["audio"])
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.6 * len(panels)), squeeze=False)
    for ax, (label, mel) in zip(axes[:, 0], panels):
        ax.imshow(mel, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma", interpolation="nearest")
        ax.axvline(seen - 0.5, color="white", linewidth=1)
        ax.set_ylabel(label, fontsize=7)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("mel frame (left of the line: last step seen)")
    fig.suptitle(f"{_short(title)}: rollout from {first['origin_seconds']:.2f} s", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def clip_figures(results: dict, index: int, title: str, output: Path, kinds: set[str]) -> dict[str, str]:
    """``rollout_<index>.png`` (kind ``"video"``) and ``spectrogram_<index>.png`` (``"audio"``) of one
    clip's `ClipResult` per model, of the ``kinds`` asked for that its rollouts have (when the models
    rolled out from the same time); returns the paths written by kind."""
    shown = {n: r.plot for n, r in results.items() if r.plot is not None}
    origins = {p["origin_seconds"] for p in shown.values()}
    if not shown or len(origins) > 1:
        if len(origins) > 1:
            log.warning("models rolled out from different times in %s (%s); no figures for it", title, sorted(origins))
        return {}
    out = {}
    some = next(iter(shown.values()))
    with warnings.catch_warnings():  # (a title of a name in a script the font lacks: boxes, not a warning a glyph)
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
        if "video" in some["last"] and "video" in kinds:
            out["video"] = str(output / f"rollout_{index}.png")
            frame_strip(shown, out["video"], title)
        if "audio" in some["last"] and "audio" in kinds:
            out["audio"] = str(output / f"spectrogram_{index}.png")
            spectrograms(shown, out["audio"], title)
    return out
