"""Pools the `ttt_mm.eval.scoring.ClipResult` of every clip into one model's report (dict, CSV rows).

Means are pooled over tokens (or frames) of all clips, so a long clip weighs more than a short
one, as in a one-pass loss. "First" and "last" are the first and last ``edge_fraction`` of each
clip's scored steps (from the first scored to the last: `edge_masks`), pooled the same way.
"""

from __future__ import annotations

import math

import numpy as np

from ttt_mm.eval.metrics import LogBins, edge_masks, safe_mean
from ttt_mm.eval.scoring import FRAME_COLUMNS, HORIZON_FIELDS, SERIES, ClipResult
from ttt_mm.tokenizers import AUDIO, VIDEO

MODALITY_NAMES = {AUDIO: "audio", VIDEO: "video"}


def _below(a: float, b: float) -> bool | None:
    """``a < b``; None (null in JSON) where either is NaN: nothing was scored to compare."""
    return None if math.isnan(a) or math.isnan(b) else bool(a < b)


class _Group:
    """Sums for one set of tokens (all, or one modality)."""

    def __init__(self, token_start: float, seconds_start: float, per_octave: int) -> None:
        self.sums, self.count = np.zeros(len(SERIES)), 0
        self.first, self.first_count = np.zeros(len(SERIES)), 0
        self.last, self.last_count = np.zeros(len(SERIES)), 0
        self.by_token = LogBins(len(SERIES), token_start, per_octave)
        self.by_second = LogBins(len(SERIES), seconds_start, per_octave)

    def add(self, position, seconds, losses, first, last) -> None:
        self.sums += losses.sum(0)
        self.count += len(losses)
        self.first += losses[first].sum(0)
        self.first_count += int(first.sum())
        self.last += losses[last].sum(0)
        self.last_count += int(last.sum())
        self.by_token.add(position, losses)
        self.by_second.add(seconds, losses)

    def means(self) -> dict[str, float]:
        return {s: safe_mean(self.sums[i], self.count) for i, s in enumerate(SERIES)}

    def edges(self) -> dict[str, dict[str, float]]:
        out = {}
        for i, s in enumerate(SERIES):
            first, last = safe_mean(self.first[i], self.first_count), safe_mean(self.last[i], self.last_count)
            out[s] = {"first": first, "last": last, "last_over_first": last / first if first else math.nan}
        return out

    def curve(self, bins: LogBins) -> list[dict]:
        return [
            {"lo": r["lo"], "hi": r["hi"], "x_mean": r["x_mean"], "count": r["count"], **dict(zip(SERIES, r["means"]))}
            for r in bins.rows()
        ]


class ModelReport:
    """Everything reported for one checkpoint, filled clip by clip with `add`."""

    def __init__(
        self,
        name: str,
        info: dict,
        modalities: tuple[int, ...],
        seconds_per_step: float,
        rollout_steps: int,
        per_octave: int = 2,
        edge_fraction: float = 0.1,
    ) -> None:
        self.name, self.info, self.edge_fraction = name, info, edge_fraction
        self.seconds_per_step, self.rollout_steps = seconds_per_step, rollout_steps
        # modality groups only when there is more than one modality (else "all" says it)
        names = ["all"] + ([MODALITY_NAMES[m] for m in modalities] if len(modalities) > 1 else [])
        self.ids = {"all": None} | {MODALITY_NAMES[m]: m for m in modalities}
        self.groups = {g: _Group(1.0, seconds_per_step, per_octave) for g in names}
        self.frames: list[np.ndarray] = []
        self.frame_clips: list[tuple[str, float]] = []  # (path, start) of each frame row: a file's spans differ
        self.mel: list[np.ndarray] = []
        self.horizon_sums = np.zeros((rollout_steps, len(HORIZON_FIELDS)))
        self.horizon_counts = np.zeros((rollout_steps, len(HORIZON_FIELDS)))
        self.rollouts = 0
        self.files: list[dict] = []

    def add(self, r: ClipResult) -> None:
        # edges of whole steps: a step's video tokens are timed at its start, its audio tokens across it
        steps = np.floor(r.seconds / self.seconds_per_step + 1e-9)
        first, last = edge_masks(steps, self.edge_fraction)
        for g, group in self.groups.items():
            sel = np.ones(len(r.losses), bool) if self.ids[g] is None else r.modality == self.ids[g]
            group.add(r.position[sel], r.seconds[sel], r.losses[sel], first[sel], last[sel])
        self.frames.append(r.frames)
        self.frame_clips += [(r.path, r.start)] * len(r.frames)
        self.mel.append(r.mel)
        self.horizon_sums += r.horizon_sums
        self.horizon_counts += r.horizon_counts
        self.rollouts += r.rollouts

        def mean(m):
            return [safe_mean(float(x), int(m.sum())) for x in r.losses[m].sum(0)]

        self.files.append(
            {
                "path": r.path,
                "start": r.start,
                "seconds": r.duration,
                "tokens": r.tokens,
                "scored": len(r.losses),
                "loss": dict(zip(SERIES, mean(np.ones(len(r.losses), bool)))),
                "first": dict(zip(SERIES, mean(first))),
                "last": dict(zip(SERIES, mean(last))),
            }
        )

    # ----------------------------------------------------------------------------------- outputs

    def horizons(self) -> list[dict]:
        out = []
        for h in range(self.rollout_steps):
            row = {
                "horizon": h + 1,
                "seconds": round((h + 1) * self.seconds_per_step, 9),
                "count": int(self.horizon_counts[h, 0]),
            }
            for j, name in enumerate(HORIZON_FIELDS):
                row[name] = safe_mean(self.horizon_sums[h, j], int(self.horizon_counts[h, j]))
            out.append(row)
        return out

    def to_dict(self) -> dict:
        overall = self.groups["all"]
        loss = overall.means()
        edges = {g: group.edges() for g, group in self.groups.items()}
        out = {
            **self.info,
            "files": len(self.files),
            "tokens_scored": overall.count,
            "loss": loss,
            "ratio_to_copy_last_step": loss["model"] / loss["copy_last_step"] if loss["copy_last_step"] else math.nan,
            "ratio_to_running_mean": loss["model"] / loss["running_mean"] if loss["running_mean"] else math.nan,
            "beats_both_baselines": _below(loss["model"], min(loss["copy_last_step"], loss["running_mean"])),
            "by_modality": {
                g: {"tokens": grp.count, "loss": grp.means()} for g, grp in self.groups.items() if g != "all"
            },
            "length_extrapolation": {
                "fraction": self.edge_fraction,
                "model_last_below_first": _below(edges["all"]["model"]["last"], edges["all"]["model"]["first"]),
                **edges,
            },
            "loss_vs_context": {
                g: {"tokens": grp.curve(grp.by_token), "seconds": grp.curve(grp.by_second)}
                for g, grp in self.groups.items()
            },
        }
        frames = self._frames()
        if len(frames):
            col = {c: frames[:, i] for i, c in enumerate(FRAME_COLUMNS)}
            out["video"] = {
                "frames": len(frames),
                "psnr_db": {"model": col["psnr_model"].mean(), "copy_last_frame": col["psnr_copy"].mean()},
                "ssim": {"model": col["ssim_model"].mean(), "copy_last_frame": col["ssim_copy"].mean()},
            }
        mel = np.concatenate(self.mel) if self.mel else np.zeros((0, 2))
        if len(mel):
            out["audio"] = {
                "tokens": len(mel),
                "mel_l1": {"model": mel[:, 0].mean(), "copy_last_step": mel[:, 1].mean()},
            }
        out["rollout"] = {"steps": self.rollout_steps, "started": self.rollouts, "horizons": self.horizons()}
        out["per_file"] = self.files
        return out

    def _frames(self) -> np.ndarray:
        """Every clip's frame rows, ``[frames, len(FRAME_COLUMNS)]``."""
        return np.concatenate(self.frames) if self.frames else np.zeros((0, len(FRAME_COLUMNS)))

    def frame_rows(self) -> list[dict]:
        rows = []
        for (path, start), values in zip(self.frame_clips, self._frames()):
            row = dict(zip(FRAME_COLUMNS, values.tolist()))
            row["frame"] = int(row["frame"])
            rows.append({"model": self.name, "path": path, "start": start, **row})
        return rows
