"""``python -m ttt_mm.tasks.evaluate ckpt=<path> [data=...] [output=<dir>]``: long-clip prediction.

Streams every clip of the data config whole, window by window with each model's state carried (so
a clip of any length is one context, however short the training windows were), and writes to
``output``:

- ``metrics.json``: per model the mean loss and the copy-last-step and running-mean baselines,
  loss versus context position in log-spaced bins of token index and of seconds, first versus last
  10% of each clip (length extrapolation), video PSNR/SSIM of the predicted next frame against the
  truth and against the copy-last-frame baseline, audio log-mel L1, multi-step rollouts per
  horizon, per-file numbers, per modality for audio-visual models, and the files skipped;
- ``summary.csv``, ``loss_vs_context.csv``, ``horizons.csv``, ``frames.csv``, ``files.csv``: the same as tables;
- ``loss_vs_context.png`` (all models and baselines on one chart; per modality for audio-visual),
  ``rollout_<i>.png`` (true vs predicted frames) and ``spectrogram_<i>.png`` for the first clips;
- ``skipped_media.tsv``: files that could not be read (each logged once and skipped).

Several checkpoints (``ckpt=[a.ckpt,b.ckpt]``) read the same decoded windows. Config errors end in
one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ttt_mm.data import ClipInfo, MediaError, ReadSpec, SkipList, iter_windows
from ttt_mm.data.settings import DECODING_KEYS, checkpoint_decoding
from ttt_mm.module import SequenceModel
from ttt_mm.report import ModelReport
from ttt_mm.rollout import audio_part, video_part
from ttt_mm.scoring import HORIZON_FIELDS, SERIES, ClipScorer
from ttt_mm.tasks.train import CONF_DIR, ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """What `evaluate` computes besides the losses (see ``conf/evaluate.yaml``)."""

    rollout_steps: int = 8
    ssim_window: int = 11
    edge_fraction: float = 0.1
    bins_per_octave: int = 2
    plots: bool = True
    plot_clips: int = 3


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_models(
    ckpts: list[str], names: list[str] | None, device: torch.device, weights_only: bool = True
) -> dict[str, tuple[str, SequenceModel]]:
    """``{name: (path, model)}`` in eval mode on ``device``. ``weights_only=False`` also unpickles
    arbitrary objects (checkpoints written before hyperparameters were plain types): trusted files only."""
    if names is not None and len(names) != len(ckpts):
        raise ConfigError(f"names has {len(names)} entries but ckpt has {len(ckpts)}")
    out: dict[str, tuple[str, SequenceModel]] = {}
    for i, path in enumerate(ckpts):
        if not Path(path).is_file():
            raise ConfigError(f"checkpoint {path} does not exist")
        try:
            model = SequenceModel.load_from_checkpoint(path, map_location=device, weights_only=weights_only).eval()
        except pickle.UnpicklingError as err:
            lines = str(err).strip().splitlines()
            first = next((line.strip() for line in lines if "Unsupported global" in line), lines[0])
            raise ConfigError(
                f"checkpoint {path} holds objects other than tensors and plain types ({first}); "
                "if you trust the file, pass weights_only=false"
            ) from None
        name = names[i] if names is not None else model.hparams.backbone.get("mixer", "model")
        if name in out and names is not None:
            raise ConfigError(f"names must be unique; {name!r} is repeated")
        base, number = name, 2
        while name in out:  # the same mixer twice: ttt_linear, ttt_linear_2, ...
            name, number = f"{base}_{number}", number + 1
        out[name] = (path, model)
    return out


def check_data(models: dict[str, tuple[str, SequenceModel]], spec: ReadSpec, window_seconds: float) -> None:
    """The decoded data must be what every model's tokenizer expects; fail with the numbers."""
    for name, (_, model) in models.items():
        tok = model.tokenizer
        audio, video = audio_part(tok), video_part(tok)
        wanted = tuple(m for m, part in (("audio", audio), ("video", video)) if part is not None)
        if set(wanted) != set(spec.modalities):
            raise ConfigError(f"model {name} reads {list(wanted)} but data.modalities={list(spec.modalities)}")
        if audio is not None and spec.sample_rate != audio.sample_rate:
            raise ConfigError(f"model {name} expects {audio.sample_rate} Hz audio; data.sample_rate={spec.sample_rate}")
        if video is not None and (abs(spec.fps - video.fps) > 1e-9 or spec.size != video.size):
            raise ConfigError(
                f"model {name} expects {video.fps} fps at {video.size} px; data has fps={spec.fps}, size={spec.size}"
            )
        steps = window_seconds / tok.seconds_per_step
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
            raise ConfigError(
                f"window_seconds={window_seconds} is {steps:g} steps of model {name} ({tok.seconds_per_step} s); "
                "use a whole number of steps"
            )


def decoding_of(model: SequenceModel) -> dict:
    """The streams, sample rate, fps and frame size the model's tokenizer reads (None: a stream it does not read)."""
    audio, video = audio_part(model.tokenizer), video_part(model.tokenizer)
    return {
        "modalities": [m for m, part in (("audio", audio), ("video", video)) if part is not None],
        "sample_rate": audio.sample_rate if audio is not None else None,
        "fps": video.fps if video is not None else None,
        "size": video.size if video is not None else None,
    }


def model_info(path: str, model: SequenceModel, rollout_steps: int) -> dict:
    tok, bb = model.tokenizer, model.hparams.backbone
    info = {
        "checkpoint": str(path),
        "mixer": bb.get("mixer"),
        "variant": bb.get("variant"),
        "dim": bb.get("dim"),
        "depth": bb.get("depth"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer": type(tok).__name__,
        "predict": model.hparams.predict,
        "offset": model.offset,
        "tokens_per_step": tok.tokens_per_step,
        "seconds_per_step": tok.seconds_per_step,
        "tokens_per_second": tok.tokens_per_second,
        "loss_kind": model.hparams.loss,
    }
    if rollout_steps and model.offset != tok.tokens_per_step:
        info["rollout_note"] = "no rollouts: they need next-step prediction (offset == tokens_per_step)"
    return info


def select_clips(datamodule, split: str, max_files: int | None) -> list[ClipInfo]:
    if split not in ("all", "train", "val", "test"):
        raise ConfigError(f"split must be all, train, val or test; got {split!r}")
    try:  # indexes the files (probed in subprocesses) and leaves out those that cannot be read
        datamodule.setup("validate" if split in ("all", "val") else split)
    except ValueError as err:
        raise ConfigError(f"data: {err}") from None
    clips = datamodule.clips if split == "all" else datamodule.splits[split]
    if not clips:
        raise ConfigError(f"no clips in split {split!r} of the data config")
    return clips if max_files is None else clips[: int(max_files)]


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def evaluate(
    models, clips, spec: ReadSpec, window_seconds: float, options: Options, skips: SkipList, output: Path
) -> dict:
    """Stream every clip through every model; returns reports, evaluated files and skipped files."""
    device = next(iter(models.values()))[1].device
    reports = {}
    for name, (path, model) in models.items():
        steps = options.rollout_steps if model.offset == model.tokenizer.tokens_per_step else 0
        modalities = tuple(sorted(model.tokenizer.target_dims))
        reports[name] = ModelReport(
            name,
            model_info(path, model, options.rollout_steps),
            modalities,
            float(model.tokenizer.seconds_per_step),
            steps,
            options.bins_per_octave,
            options.edge_fraction,
        )
    files, skipped, figures = [], [], []
    for number, clip in enumerate(clips, 1):
        if clip.name in skips:
            skipped.append({"path": clip.name, "reason": "in the skip list: " + skips.reasons.get(clip.name, "")})
            continue
        keep_plot = options.plots and len(files) < options.plot_clips
        scorers = {
            name: ClipScorer(model, clip.name, options.rollout_steps, keep_plot, options.ssim_window)
            for name, (_, model) in models.items()
        }
        try:
            for batch in iter_windows(clip.media, window_seconds, spec, clip.start, clip.end, clip.info):
                batch = _to_device(batch, device)
                for scorer in scorers.values():
                    scorer.push(batch)
        except MediaError as exc:  # the whole file is left out, also the windows already scored
            skips.add(exc.path, exc.reason)
            skipped.append({"path": exc.path, "reason": exc.reason})
            continue
        results = {name: s.finish() for name, s in scorers.items()}
        for name, result in results.items():
            reports[name].add(result)
        first = next(iter(results.values()))
        files.append({"path": clip.name, "start": clip.start, "seconds": first.duration})
        summary = ", ".join(
            f"{n} {_fmt(r.losses[:, 0].mean() if len(r.losses) else math.nan)} "
            f"(copy {_fmt(r.losses[:, 1].mean() if len(r.losses) else math.nan)}, "
            f"mean {_fmt(r.losses[:, 2].mean() if len(r.losses) else math.nan)})"
            for n, r in results.items()
        )
        log.info("[%d/%d] %s: %.1f s; loss %s", number, len(clips), clip.name, first.duration, summary)
        if keep_plot:
            figures += _clip_figures(results, len(files), clip.name, output)
    return {"reports": reports, "files": files, "skipped": skipped, "figures": figures}


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _clip_figures(results: dict, index: int, title: str, output: Path) -> list[str]:
    from ttt_mm import plots

    shown = {n: r.plot for n, r in results.items() if r.plot is not None}
    origins = {p["origin_seconds"] for p in shown.values()}
    if not shown or len(origins) > 1:
        if len(origins) > 1:
            log.warning("models rolled out from different times in %s (%s); no figures for it", title, sorted(origins))
        return []
    out = []
    some = next(iter(shown.values()))
    if "video" in some["last"]:
        out.append(str(output / f"rollout_{index}.png"))
        plots.frame_strip(shown, out[-1], title)
    if "audio" in some["last"]:
        out.append(str(output / f"spectrogram_{index}.png"))
        plots.spectrograms(shown, out[-1], title)
    return out


# ---------------------------------------------------------------------------------------- outputs


def _clean(value):
    """NaN and infinities to None (JSON has no NaN), numpy scalars to Python ones."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in _clean(row).items()})


def _prefixed(row: dict) -> dict:
    """A loss-versus-context row with its series renamed ``loss_<series>`` (a CSV column is already called model)."""
    return {f"loss_{k}" if k in SERIES else k: v for k, v in row.items()}


def write_outputs(output: Path, result: dict, settings: dict, options: Options) -> dict[str, str]:
    """metrics.json, the CSV tables and the loss-versus-context figures; returns their paths."""
    reports: dict[str, ModelReport] = result["reports"]
    dicts = {name: r.to_dict() for name, r in reports.items()}
    metrics = {"settings": settings, "files": result["files"], "skipped": result["skipped"], "models": dicts}
    paths = {"metrics": output / "metrics.json"}
    paths["metrics"].write_text(json.dumps(_clean(metrics), indent=2) + "\n")

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
            ["model", "path", "frame", "seconds", "psnr_model", "psnr_copy", "ssim_model", "ssim_copy"],
        ),
        "files": (
            files,
            ["model", "path", "start", "seconds", "tokens", "scored"]
            + [f"{p}_{s}" for p in ("loss", "first", "last") for s in SERIES],
        ),
    }
    for key, (rows, columns) in tables.items():
        paths[key] = output / f"{key}.csv"
        _write_csv(paths[key], rows, columns)
    if options.plots and any(r.groups["all"].count for r in reports.values()):
        from ttt_mm import plots

        groups = next(iter(dicts.values()))["loss_vs_context"].keys()
        for group in groups:
            if all(group in d["loss_vs_context"] for d in dicts.values()):
                key = "loss_vs_context_png" + ("" if group == "all" else f"_{group}")
                paths[key] = output / ("loss_vs_context.png" if group == "all" else f"loss_vs_context_{group}.png")
                plots.loss_vs_context({n: d["loss_vs_context"] for n, d in dicts.items()}, paths[key], group)
    return {k: str(v) for k, v in paths.items()}


# -------------------------------------------------------------------------------------------- run


def run(cfg: DictConfig) -> dict:
    """Evaluate the checkpoints in ``cfg.ckpt`` on the clips of ``cfg.data``; returns the metrics
    per model, the output paths and the skipped files."""
    if cfg.get("ckpt") in (None, "", "???"):
        raise ConfigError("ckpt is required: ckpt=<path> or ckpt=[a.ckpt,b.ckpt]")
    ckpts = [str(c) for c in cfg.ckpt] if isinstance(cfg.ckpt, (list, ListConfig)) else [str(cfg.ckpt)]
    names = None if cfg.get("names") is None else [str(n) for n in cfg.names]
    options = Options(
        int(cfg.rollout_steps),
        int(cfg.ssim_window),
        float(cfg.edge_fraction),
        int(cfg.bins_per_octave),
        bool(cfg.plots),
        int(cfg.plot_clips),
    )
    if options.rollout_steps < 0 or options.bins_per_octave < 1 or not 0 < options.edge_fraction <= 0.5:
        raise ConfigError("need rollout_steps >= 0, bins_per_octave >= 1 and 0 < edge_fraction <= 0.5")
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    models = load_models(ckpts, names, resolve_device(str(cfg.device)), bool(cfg.weights_only))
    try:  # decode as the checkpoints were trained, unless data.* says otherwise (then it must agree)
        decoding = checkpoint_decoding(
            {n: decoding_of(m) for n, (_, m) in models.items()}, {k: cfg.data.get(k) for k in DECODING_KEYS}
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    datamodule = instantiate(cfg.data, **decoding)
    window = cfg.get("window_seconds") or datamodule.eval_window_seconds
    check_data(models, datamodule.spec, float(window))
    clips = select_clips(datamodule, str(cfg.split), cfg.get("max_files"))
    skips = SkipList(datamodule.skip_list_path)
    log.info(
        "evaluating %d model(s) on %d clip(s) in windows of %g s; output %s", len(models), len(clips), window, output
    )
    result = evaluate(models, clips, datamodule.spec, float(window), options, skips, output)
    result["skipped"] = [{"path": p, "reason": r} for p, r in datamodule.rejected.items()] + result["skipped"]
    settings = {
        "split": str(cfg.split),
        "window_seconds": float(window),
        "clips": len(clips),
        "evaluated": len(result["files"]),
        "skipped": len(result["skipped"]),
        "device": str(next(iter(models.values()))[1].device),
        **{k: getattr(options, k) for k in ("rollout_steps", "edge_fraction", "bins_per_octave", "ssim_window")},
    }
    if not result["files"]:
        write_outputs(output, result, settings, Options(**{**options.__dict__, "plots": False}))
        raise ConfigError(f"none of the {len(clips)} clips could be evaluated; see {output / 'metrics.json'}")
    paths = write_outputs(output, result, settings, options)
    paths["figures"] = result["figures"]
    return {
        "output": str(output),
        "paths": paths,
        "models": {n: r.to_dict() for n, r in result["reports"].items()},
        "skipped": result["skipped"],
    }


def report(out: dict) -> None:
    lines = [f"output: {out['output']}"]
    for name, d in out["models"].items():
        loss, edge = d["loss"], d["length_extrapolation"]["all"]["model"]
        pct = f"{100 * d['length_extrapolation']['fraction']:g}%"
        lines.append(
            f"{name}: loss {_fmt(loss['model'])} | copy-last-step {_fmt(loss['copy_last_step'])} | "
            f"running-mean {_fmt(loss['running_mean'])} | "
            f"first {pct} {_fmt(edge['first'])} -> last {pct} {_fmt(edge['last'])}"
        )
        if "video" in d:
            v = d["video"]
            lines.append(
                f"  video PSNR {v['psnr_db']['model']:.2f} dB (copy {v['psnr_db']['copy_last_frame']:.2f}), "
                f"SSIM {v['ssim']['model']:.3f} (copy {v['ssim']['copy_last_frame']:.3f})"
            )
        if "audio" in d:
            a = d["audio"]["mel_l1"]
            lines.append(f"  audio log-mel L1 {a['model']:.3f} (copy {a['copy_last_step']:.3f})")
    if out["skipped"]:
        lines.append(
            f"skipped {len(out['skipped'])} file(s): "
            + "; ".join(f"{s['path']} ({s['reason']})" for s in out["skipped"])
        )
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        report(run(cfg))
    except (ConfigError, InstantiationException) as err:
        message = str(err).strip().splitlines()
        print("error: " + " | ".join(line for line in message if line), file=sys.stderr)
        sys.exit(2)
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))


if __name__ == "__main__":
    main()
