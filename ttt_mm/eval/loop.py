"""Every clip streamed whole through every model: the evaluation loop behind ``ttt_mm.tasks.evaluate``."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ttt_mm.data import ClipInfo, MediaError, ReadSpec, SkipList, iter_windows
from ttt_mm.data.datasets import clip_span, to_device
from ttt_mm.eval import plots
from ttt_mm.eval.report import MODALITY_NAMES, ModelReport
from ttt_mm.eval.scoring import ClipScorer
from ttt_mm.messages import one_line
from ttt_mm.tokenizers import AUDIO

if TYPE_CHECKING:
    from ttt_mm.module import SequenceModel

log = logging.getLogger(__name__)


UNPLOTTED_AT_MOST = 10
"""Clips too short to roll out (or rolled out from different times) after which no more are looked at
for figures: each one looked at keeps its rollouts until it is scored."""


@dataclass(frozen=True)
class Options:
    """What `evaluate` computes besides the losses (see ``conf/evaluate.yaml``)."""

    rollout_steps: int
    ssim_window: int
    edge_fraction: float
    bins_per_octave: int
    plots: bool
    plot_clips: int


def model_info(path: str, model: SequenceModel, rollout_steps: int) -> dict:
    tok, bb = model.tokenizer, model.hparams.backbone
    info = {
        "checkpoint": os.path.abspath(path),  # (as embed and linear_probe record it)
        "mixer_name": model.backbone.mixer_name,
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
    if rollout_steps and not model.predicts_next_step:
        info["rollout_note"] = "no rollouts: they need next-step prediction (offset == tokens_per_step)"
    return info


TOO_SHORT_TO_SCORE = (
    "too short to score: none of its tokens has a prediction (a clip's first step, or first token, has none)"
)


def time_left(seconds: float, done: int, total: int) -> str:
    """The progress line's estimate of the time the other clips take, at the pace so far (from a minute
    on: the metrics are written only at the end, and a long evaluation is better cut with max_files)."""
    left = seconds / done * (total - done)
    if left < 60:
        return ""
    return f"; about {left / 60:.0f} min left" if left < 5400 else f"; about {left / 3600:.1f} h left"


def evaluate(
    models, clips, spec: ReadSpec, window_seconds: float, options: Options, skips: SkipList, output: Path
) -> dict:
    """Stream every clip through every model; returns reports, evaluated files and skipped files."""
    device = next(iter(models.values()))[1].device
    reports = {}
    for name, (path, model) in models.items():
        steps = options.rollout_steps if model.predicts_next_step else 0
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
    files, skipped, figures, unplotted = [], [], [], 0  # unplotted: clips looked at for figures that got none
    listed: set[str] = set()  # the files `skipped` names whole
    # (a figure shows a rollout: the kinds of the models that roll out; with none, no clip is looked at for one)
    rolled = {MODALITY_NAMES[m] for r in reports.values() if r.rollout_steps for m in r.ids.values() if m is not None}
    left = dict.fromkeys(rolled, options.plot_clips if options.plots else 0)  # figures of each kind to draw
    started = time.monotonic()
    for number, clip in enumerate(clips, 1):
        if skips.holds(clip):
            if clip.name not in listed:  # (a file's every span after it failed: said once)
                listed.add(clip.name)
                reason = skips.reason(clip)
                skipped.append({"path": clip.name, "reason": "in the skip list: " + reason})
            continue
        # the first clips that have figures of each kind, looked for among `UNPLOTTED_AT_MOST` more (each
        # keeps its rollouts): a clip read with a silent track has no spectrogram, and the next one draws it
        keep_plot = any(left.values()) and unplotted < UNPLOTTED_AT_MOST
        middle = _middle(clip, spec) if keep_plot else None
        scorers = {
            name: ClipScorer(model, clip.name, options.rollout_steps, keep_plot, options.ssim_window, middle)
            for name, (_, model) in models.items()
        }
        try:
            for batch in iter_windows(clip.media, window_seconds, spec, clip.start, clip.end, clip.info):
                batch = to_device(batch, device)
                for scorer in scorers.values():
                    scorer.push(batch)
        except MediaError as exc:
            # the clip is left out, also its windows already scored, and so are the file's later spans (it
            # is listed); spans of it scored before stay, each read whole
            skips.add(exc.path, exc.reason)
            skipped.append({"path": exc.path, "reason": exc.reason})
            listed.add(exc.path)
            continue
        results = {name: s.finish() for name, s in scorers.items()}
        if not any(len(r.losses) for r in results.values()):
            skipped.append({"path": clip.name, "reason": TOO_SHORT_TO_SCORE})
            log.warning("skipped %s: %s", one_line(clip.segment), TOO_SHORT_TO_SCORE)
            continue
        for name, result in results.items():
            reports[name].add(result)
        first = next(iter(results.values()))
        files.append({"path": clip.name, "start": clip.start, "seconds": first.duration})
        summary = ", ".join(
            "{} {:.4f} (copy {:.4f}, mean {:.4f})".format(n, *(r.losses.mean(0) if len(r.losses) else [math.nan] * 3))
            for n, r in results.items()
        )
        drawn = {}
        if keep_plot:  # (sound: some audio token was scored; a silent track read in its place is not)
            sound = any(bool((r.modality == AUDIO).any()) for r in results.values())
            kinds = {kind for kind, n in left.items() if n > 0 and (sound or kind != "audio")}
            drawn = plots.clip_figures(results, len(files), one_line(clip.segment), output, kinds)
        named = f"; figures {', '.join(os.path.basename(f) for f in drawn.values())}" if drawn else ""
        log.info(  # (figures are numbered by the rows of files.csv; the count here, by the clips listed)
            "[%d/%d] %s: %.1f s; loss %s%s%s",
            number,
            len(clips),
            one_line(clip.segment),
            first.duration,
            summary,
            named,
            time_left(time.monotonic() - started, number, len(clips)),
        )
        if keep_plot:
            if not sound and left.get("audio", 0) > 0:
                log.info("%s: no spectrogram: read with a silent track", one_line(clip.segment))
            if (
                not drawn
                and any(s.keep_plot for s in scorers.values())
                and all(r.plot is None for r in results.values())
            ):
                log.info(
                    "%s: no rollout figure: rollouts start at the end of each %g s window and need the next "
                    "%d steps of the clip, which it does not have",
                    one_line(clip.segment),
                    window_seconds,
                    options.rollout_steps,
                )
            figures += drawn.values()
            left = {kind: n - (kind in drawn) for kind, n in left.items()}
            unplotted += not drawn
            if unplotted == UNPLOTTED_AT_MOST and any(left.values()):
                log.info(
                    "figures: %d clips had none to draw; no more clips are looked at for them (each keeps its "
                    "rollouts until it is scored): evaluate the clips long enough to roll out apart for their figures",
                    UNPLOTTED_AT_MOST,
                )
    return {"reports": reports, "files": files, "skipped": skipped, "figures": figures}


def _middle(clip: ClipInfo, spec: ReadSpec) -> float | None:
    """Seconds from a clip's start to its middle, where its figures' rollout is taken (None: not known
    before it is read, which then says why)."""
    try:
        start, end = clip_span(clip, spec)
    except MediaError:
        return None
    return 0.5 * (end - start)
