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

import math
import os
from collections.abc import Mapping
from typing import NamedTuple

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ttt_mm.checkpoint import model_of, read_checkpoint, resolve_device, trained_files, trained_split
from ttt_mm.data import ClipInfo
from ttt_mm.data.clip_record import files_of
from ttt_mm.data.sources import SPLITS
from ttt_mm.data.synthetic import NAME_PREFIX
from ttt_mm.embed.files import weights_hash
from ttt_mm.eval.decoding import DECODING_KEYS, checkpoint_decoding, checkpoint_split
from ttt_mm.eval.loop import Options, evaluate
from ttt_mm.eval.report import MODALITY_NAMES
from ttt_mm.eval.tables import SKIP_LIST, remove_earlier_figures, remove_figures, skip_list_set_aside, write_outputs
from ttt_mm.messages import skips_named
from ttt_mm.module import SequenceModel
from ttt_mm.processes.termination import sigterm_as_ctrl_c
from ttt_mm.tasks.command_keys import names_of, positive_count, positive_seconds, results_folder, set_threads
from ttt_mm.tasks.command_lines import shell_override
from ttt_mm.tasks.common import ConfigError, Interrupted, config_errors_end_the_command
from ttt_mm.tasks.composing import hydra_command
from ttt_mm.tasks.config_types import check_command_keys, check_types
from ttt_mm.tasks.held_out import from_anywhere, held_out, of_training_files
from ttt_mm.tasks.job_logs import module_logger
from ttt_mm.tasks.run_folders import SYNTHETIC_SOURCE, results_dir, trained_on_files
from ttt_mm.tasks.train_checks import TOKENIZER_OF

log = module_logger(__name__, __spec__)


class Trained(NamedTuple):
    """What a checkpoint recorded of its run's data: the split fractions (`trained_split`), the files it
    trained and validated on (`trained_files`) and the segments it trained on (a span of a file ends
    ``@start-end``: the file's other spans are held out); None where it recorded none."""

    split: dict[str, float] | None
    files: set[str] | None
    validated: set[str] | None = None
    spans: set[str] | None = None


def load_models(
    ckpts: list[str], names: list[str] | None, device: str, weights_only: bool = True
) -> tuple[dict[str, tuple[str, SequenceModel]], dict[str, Trained]]:
    """``{name: (path, model)}`` in eval mode on ``device`` (a name, or ``auto``), through the one
    checkpoint loader, and ``{name: what its run recorded of its data}`` (`Trained`). Unnamed models
    are called after their mixer (`Backbone.mixer_name`: ``ttt_linear``, ``ttt_mlp``, ``attention``, ``lact``),
    numbered if repeated."""
    if names is not None and len(names) != len(ckpts):
        raise ConfigError(f"names has {len(names)} entries but ckpt has {len(ckpts)}")
    real = [os.path.realpath(p) for p in ckpts]
    if twice := next((p for p, r in zip(ckpts, real, strict=True) if real.count(r) > 1), None):
        raise ConfigError(f"ckpt lists {twice} twice (by this or another name): each checkpoint once")
    try:
        on = resolve_device(device)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    out: dict[str, tuple[str, SequenceModel]] = {}
    trained: dict[str, Trained] = {}
    for i, path in enumerate(ckpts):
        try:
            ckpt = read_checkpoint(path, weights_only)
            model = model_of(ckpt, path).to(on).eval()
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(str(err)) from None
        name = names[i] if names is not None else model.backbone.mixer_name
        if name in out and names is not None:
            raise ConfigError(f"names must be unique; {name!r} is repeated")
        base, number = name, 2
        while name in out:  # the same mixer twice: ttt_linear, ttt_linear_2, ...
            name, number = f"{base}_{number}", number + 1
        out[name] = (path, model)
        spans = from_anywhere(trained_files(ckpt, spans=True), path)  # (the record read once: its files from it)
        validated = from_anywhere(trained_files(ckpt, "val"), path)
        trained[name] = Trained(trained_split(ckpt), files_of(spans), validated, spans)
    return out, trained


def check_window(models: dict[str, tuple[str, SequenceModel]], window_seconds: float) -> float:
    """The window as whole tokenizer steps of every model (`Tokenizer.whole_window`: one off whole
    steps by float rounding is snapped to them); the decoding itself comes from the checkpoints
    (`checkpoint_decoding`)."""
    for name, (_, model) in models.items():
        tok = model.tokenizer
        window = tok.whole_window(window_seconds)
        if window is None:
            raise ConfigError(
                f"window_seconds={window_seconds} is {window_seconds / tok.seconds_per_step:.10g} steps of model "
                f"{name} ({tok.seconds_per_step} s); use a whole number of steps"
            )
        window_seconds = window
    return window_seconds


def warn_if_incomparable(models: dict[str, tuple[str, SequenceModel]]) -> None:
    """Models that make different tokens (rates, target sizes) or losses score on different scales:
    one table holds them all, so a warning says to read each against its own baselines. Checkpoints of
    the same weights (a run's last.ckpt and the one saved at the same step) are said to be so."""
    scales = {}
    for name, (_, model) in models.items():
        tok = model.tokenizer
        targets = ", ".join(f"{MODALITY_NAMES[m]} {d}" for m, d in sorted(tok.target_dims.items()))
        scales[name] = f"{tok.tokens_per_second:g} tokens/s, targets of {targets}, {model.hparams.loss} loss"
    if len(set(scales.values())) > 1:
        log.warning(
            "the models score different tokens (%s): their losses are not on one scale; compare each with its "
            "own copy-last-step and running-mean baselines",
            "; ".join(f"{n}: {s}" for n, s in scales.items()),
        )
    same: dict[str, list[str]] = {}
    for name, (_, model) in models.items() if len(models) > 1 else ():  # (each model's every weight read once)
        same.setdefault(weights_hash(model), []).append(name)
    for names in (n for n in same.values() if len(n) > 1):  # (last.ckpt and the step's own, saved together)
        log.warning("%s hold the same weights: their numbers will be the same", " and ".join(names))


def warn_if_files_model_on_synthetic_clips(
    data: DictConfig,
    models: dict[str, tuple[str, SequenceModel]],
    split: str = "all",
    files: Mapping[str, set[str] | None] | None = None,
) -> None:
    """Evaluate reads the synthetic clips (``data=synthetic``) unless told otherwise, so a model trained
    on files, evaluated with only ``ckpt=``, is scored on clips unlike its data: say how its run chose
    its data (from its run folder's record), which is what to pass to score files. A checkpoint kept
    elsewhere is known to be of files from the names it trained on (``files``: `Trained.files`). Its
    held-out files (``split=val|test``) are not among synthetic clips at all: a ConfigError, not a split
    of the clips passed for them."""
    if OmegaConf.select(data, "source._target_") != SYNTHETIC_SOURCE:
        return
    for name, (path, _) in models.items():
        trained = trained_on_files(path)
        read = (files or {}).get(name) or ()
        if trained is None and not any(not f.startswith(NAME_PREFIX) for f in read):
            continue
        given = " ".join(shell_override(key, value) for key, value in (trained or {}).items())
        if split in ("val", "test"):
            raise ConfigError(
                f"split={split} means the files {name}'s run held out, but evaluate reads its default synthetic "
                "clips unless told otherwise: pass the run's data, "
                + (given or "as it trained on them (data=<group> data.root=<its folder>)")
            )
        log.warning(
            "%s was trained on files (its run: %s) and is evaluated on synthetic clips, evaluate's default "
            "data; to score such files, pass those",
            name,
            given
            or ("see its .hydra/config.yaml" if trained is not None else "not known: kept outside its run folder"),
        )


def read_otherwise(choices: Mapping[str, str], decoding: Mapping, missing_audio: str | None = None) -> str | None:
    """What says that the streams the data group reads in training (those of the tokenizer group it sets)
    are not the ones read here, the checkpoint's; None where they are the same. ``missing_audio``: how
    an audio-visual checkpoint's data reads videos without usable sound (``silence``: they are taken)."""
    group, tokenizer = choices.get("data"), choices.get("tokenizer")
    reads = next((list(streams) for streams, name in TOKENIZER_OF.items() if name == tokenizer), None)
    if not group or group == "synthetic" or reads is None or set(reads) == set(decoding["modalities"]):
        return None  # (synthetic clips have both streams: a model of either is evaluated on its own)
    streams = " and ".join(decoding["modalities"])
    silent = {"audio", "video"} <= set(decoding["modalities"]) and missing_audio == "silence"
    taken = "video (those without sound with a silent track: data.missing_audio=silence)" if silent else streams
    return (
        f"data={group} reads {' and '.join(reads)} in training; here its files with {taken} are taken and read "
        f"for the {streams} the checkpoint reads (as data.modalities=[{','.join(decoding['modalities'])}] takes them)"
    )


def decoding_of(model: SequenceModel) -> dict:
    """The streams, sample rate, fps and frame size the model's tokenizer reads (None: a stream it does not read)."""
    d = model.tokenizer.decoding
    return {"modalities": list(d.modalities), "sample_rate": d.sample_rate, "fps": d.fps, "size": d.size}


def select_clips(datamodule, split: str) -> list[ClipInfo]:
    if split not in ("all", *SPLITS):
        raise ConfigError(f"split must be all, train, val or test; got {split!r}")
    try:  # indexes the files (probed in subprocesses) and leaves out those that cannot be read
        datamodule.setup({"all": "predict", "val": "validate"}.get(split, split))  # (Lightning's stage names)
    except (FileNotFoundError, ValueError) as err:  # (a wrong path, an empty folder: as in training)
        raise ConfigError(f"data: {err}") from None
    clips = datamodule.clips if split == "all" else datamodule.splits[split]
    if not clips:
        why = datamodule.why_empty(split) if split != "all" else ""
        why += "; split=all scores them" if "too few to hold one out" in why else ""
        raise ConfigError(f"no clips in split {split!r} of the data config" + (f" ({why})" if why else ""))
    return clips


# -------------------------------------------------------------------------------------------- run


@torch.no_grad()
def run(cfg: DictConfig) -> dict:
    """Evaluate the checkpoints in ``cfg.ckpt`` on the clips of ``cfg.data``; returns the metrics
    per model, the output paths and the skipped files."""
    check_command_keys(cfg, "evaluate")  # (the data keys once the checkpoints fill in their decoding)
    if cfg.get("ckpt") in (None, "") or cfg.ckpt == []:  # (``???``, unset, reads as None)
        raise ConfigError("ckpt is required: ckpt=<path> or ckpt=[a.ckpt,b.ckpt]")
    ckpts = [str(c) for c in cfg.ckpt] if isinstance(cfg.ckpt, (list, ListConfig)) else [str(cfg.ckpt)]
    names = names_of(cfg.get("names"))
    set_threads(cfg.get("threads"), "threads")
    options = Options(
        int(cfg.rollout_steps),
        int(cfg.ssim_window),
        float(cfg.edge_fraction),
        int(cfg.bins_per_octave),
        bool(cfg.plots),
        int(cfg.plot_clips),
    )
    for key, value, least, meaning in (
        ("rollout_steps", options.rollout_steps, 0, " (0: no rollout)"),
        ("bins_per_octave", options.bins_per_octave, 1, ""),
        ("plot_clips", options.plot_clips, 0, " (0: no figures of single clips)"),
    ):
        if value < least:
            raise ConfigError(f"{key} must be a whole number >= {least}{meaning}; got {value}")
    if not 0 < options.edge_fraction <= 0.5:
        raise ConfigError(
            f"edge_fraction must lie in (0, 0.5], the share of each clip scored as its start and as its end; "
            f"got {options.edge_fraction:g}"
        )
    max_files = positive_count(cfg.get("max_files"), "max_files")  # (before the files are listed and probed)
    window = positive_seconds(cfg.get("window_seconds"), "window_seconds", "the data's validation window")
    results_dir(cfg.output, "")  # (a folder it refuses: said before Hydra writes there on the command line)
    output = results_folder(cfg.output)
    models, trained = load_models(ckpts, names, str(cfg.device), bool(cfg.weights_only))
    split = str(cfg.split)
    try:  # decode as the checkpoints were trained, unless data.* says otherwise (then it must agree)
        decoding = checkpoint_decoding(
            {n: decoding_of(m) for n, (_, m) in models.items()}, {k: cfg.data.get(k) for k in DECODING_KEYS}
        )
        fractions = checkpoint_split({n: t.split for n, t in trained.items()}) if split in ("val", "test") else {}
    except ValueError as err:
        raise ConfigError(str(err)) from None
    warn_if_incomparable(models)  # (models that read different streams were refused above: no warning first)
    warn_if_files_model_on_synthetic_clips(cfg.data, models, split, {n: t.files for n, t in trained.items()})
    if HydraConfig.initialized() and (
        line := read_otherwise(HydraConfig.get().runtime.choices, decoding, cfg.data.get("missing_audio"))
    ):
        log.info(line)
    if changed := [f"data.{k}={cfg.data.get(k)} -> {v:g}" for k, v in fractions.items() if cfg.data.get(k) != v]:
        log.info("split=%s: the checkpoint's %s files, as its run split them (%s)", split, split, ", ".join(changed))
    decoding |= fractions
    check_types(OmegaConf.merge(cfg.data, decoding), "data")
    size = decoding.get("size")
    video = "video" in decoding["modalities"] and size
    if options.ssim_window < 1 or (video and options.ssim_window > size):
        allowed = f"from 1 to the frame size ({size} px)" if video else ">= 1"
        raise ConfigError(f"ssim_window must be a whole number {allowed}; got {options.ssim_window}")
    # a skip list is a training run's memory across restarts: an evaluation reads every file afresh, and
    # lists the files it skipped beside its results (not in the run folder, where output= is elsewhere)
    datamodule = instantiate(cfg.data, **decoding, earlier_skips=False, skip_list=str(output / SKIP_LIST))
    if "modalities" in decoding:  # (the files are read as the checkpoints were trained)
        datamodule.modalities_from = "the checkpoint" if len(models) == 1 else "each checkpoint"
    # said below of the clips evaluated, not of those held out or past max_files
    datamodule.says_how_read_on_setup = False
    datamodule.skip_list_split = None if split == "all" else split  # (the other splits' files are not its to list)
    datamodule.trained_on = set().union(*(t.files for t in trained.values() if t.files))  # (split=val: its file)
    datamodule.validated_on = set().union(*(t.validated for t in trained.values() if t.validated))
    datamodule.cover_context(*(model.tokenizer for _, model in models.values()))
    window = window or datamodule.eval_window_seconds
    window = check_window(models, window)
    began = False  # (figures in the output are this evaluation's from then on)
    try:
        # (the new list is opened and appended to in the block; a config error in it puts the earlier one back)
        with skip_list_set_aside(output) as had_skip_list:
            clips = select_clips(datamodule, str(cfg.split))
            spans = set().union(*(t.spans for t in trained.values() if t.spans))  # (the training clips)
            held = spans if split in ("val", "test") else set()
            clips, trained_on = held_out(clips, split, held, "evaluate with the data config the run trained on")
            clips = clips[:max_files]
            scored_trained = sum(of_training_files(clips, spans)) if split == "all" else 0
            if scored_trained:
                log.warning(
                    "split=all: %d of the %d clips overlap what %s trained on, scored with the rest "
                    "(split=val or split=test scores only what it held out)",
                    scored_trained,
                    len(clips),
                    "the checkpoint's run" if len(models) == 1 else "a checkpoint's run",
                )
            datamodule.say_how_read(clips)
            if earlier := remove_earlier_figures(output, had_skip_list):
                log.info("output %s held an earlier evaluation: %s", output, earlier)
        began = True
        skips = datamodule.skips
        rolled = options.rollout_steps and any(model.predicts_next_step for _, model in models.values())
        log.info(
            "evaluating %d model(s) on %d clip(s) in windows of %g s%s; output %s",
            len(models),
            len(clips),
            window,
            # (what a short window costs: a rollout each, several times the scoring of a 1 s window)
            f", a rollout of {options.rollout_steps} steps after each (rollout_steps=0: none)" if rolled else "",
            output,
        )
        result = evaluate(models, clips, datamodule.spec, window, options, skips, output)
    except KeyboardInterrupt:
        earlier = "; the metrics.json there is an earlier evaluation's" if (output / "metrics.json").exists() else ""
        made = remove_figures(output) if began else 0  # (figures of some clips: they would pass for a whole run's)
        removed = f"; the {made} figure(s) made so far were removed" if made else ""
        raise Interrupted(
            f"no metrics were written to {output} (they are written once every clip is evaluated{earlier}; max_files=N "
            f"evaluates the first N){removed}",
            before_it_began=not began,
        ) from None
    rejected = datamodule.rejected_in(str(cfg.split))  # (not another split's: they were never to be scored)
    result["skipped"] = [{"path": p, "reason": r} for p, r in rejected.items()] + result["skipped"]
    settings = {
        "split": str(cfg.split),
        "window_seconds": window,
        "clips": len(clips),
        "left_out_as_trained_on": trained_on,
        **({"trained_on_scored": scored_trained} if str(cfg.split) == "all" else {}),
        "evaluated": len(result["files"]),
        "skipped": len(result["skipped"]),
        "device": str(next(iter(models.values()))[1].device),
        "means": "pooled over the tokens (or frames) of all clips: a longer clip weighs more",
        **{k: getattr(options, k) for k in ("rollout_steps", "edge_fraction", "bins_per_octave", "ssim_window")},
    }
    if not result["files"]:
        write_outputs(output, result, settings, with_plots=False)
        raise ConfigError(f"none of the {len(clips)} clips could be evaluated; see {output / 'metrics.json'}")
    try:
        paths = write_outputs(output, result, settings, options.plots)
    except KeyboardInterrupt:  # (each file is whole, written through a temporary name; not all may be there)
        raise Interrupted(f"the results were being written to {output}: some of its files may be missing") from None
    paths["figures"] = result["figures"]
    return {
        "output": str(output),
        "paths": paths,
        "models": {n: r.to_dict() for n, r in result["reports"].items()},
        "skipped": result["skipped"],
        "split": str(cfg.split),
    }


def report(out: dict) -> None:
    lines = [f"output: {out['output']}"]
    for name, d in out["models"].items():
        loss, edges = d["loss"], d["length_extrapolation"]["all"]
        edge, copy = edges["model"], edges["copy_last_step"]
        pct = f"{100 * d['length_extrapolation']['fraction']:g}%"
        lines.append(  # (the baseline's edges beside the model's: copying gains with context too)
            f"{name}: loss {loss['model']:.4f} | copy-last-step {loss['copy_last_step']:.4f} | "
            f"running-mean {loss['running_mean']:.4f} | "
            f"first {pct} {edge['first']:.4f} -> last {pct} {edge['last']:.4f} "
            f"(copy-last-step {copy['first']:.4f} -> {copy['last']:.4f})"
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
        rollout = d["rollout"]
        if rollout["steps"] and not any(h["count"] for h in rollout["horizons"]):  # (horizons.csv: blank rows)
            lines.append(
                f"  rollouts: none scored (each starts at a window's end and needs the next {rollout['steps']} "
                "steps of its clip: shorter window_seconds, or rollout_steps=0)"
            )
    if out["skipped"]:
        split = out.get("split", "all")
        lines.append(
            f"skipped {len(out['skipped'])} file(s){'' if split == 'all' else f' of the {split} split'}: "
            + skips_named(out["skipped"], all_in=SKIP_LIST)
        )
    print("\n".join(lines), flush=True)


def scores(models: dict[str, dict]) -> dict[str, float]:
    """The evaluation's main numbers, flat (``eval/loss``; ``eval/loss_start`` and ``eval/loss_end``, of
    the first and last ``edge_fraction`` of each clip; ``eval/psnr_db``...; ``eval/<model>/...`` where it
    scored several): what a sweep's results table sets side by side (`ttt_mm.tasks.sweep_report`)."""
    out = {}
    for name, d in models.items():
        at = "eval/" if len(models) == 1 else f"eval/{name}/"
        edges = d["length_extrapolation"]["all"]["model"]
        out |= {f"{at}loss": d["loss"]["model"], f"{at}loss_copy": d["loss"]["copy_last_step"]}
        out |= {f"{at}loss_start": edges["first"], f"{at}loss_end": edges["last"]}
        if "video" in d:
            out |= {f"{at}psnr_db": d["video"]["psnr_db"]["model"], f"{at}ssim": d["video"]["ssim"]["model"]}
        if "audio" in d:
            out[f"{at}mel_l1"] = d["audio"]["mel_l1"]["model"]
    return {k: float(v) for k, v in out.items() if not math.isnan(v)}  # (NaN, nothing scored: "-" in the table)


@hydra_command("evaluate")
def main(cfg: DictConfig) -> dict:
    """Evaluates as configured; returns its scores and output folder (a sweep's results table)."""
    with config_errors_end_the_command(cfg=cfg), sigterm_as_ctrl_c():
        out = run(cfg)
        report(out)
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    mixers = ",".join(dict.fromkeys(d["mixer_name"] for d in out["models"].values()))
    return {"metrics": scores(out["models"]), "run_dir": out["output"], "mixer": mixers}


if __name__ == "__main__":
    main()
