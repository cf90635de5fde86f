"""``python -m ttt_mm.tasks.linear_probe ckpt=<path> input=<class folders | manifest> [output=<dir>]``

Are a model's embeddings good for classifying labelled media? A linear probe answers it: a
multinomial logistic regression on each file's pooled embedding (``rows=true``: on per-hop rows,
see `ttt_mm.linear_probe.classifier`), scored by k-fold cross-validation (``folds``, default 5; the folds
keep each class's share and, when the manifest has a ``group`` column, never split a group). On the
same folds it scores three baselines: pooled log-mel statistics (mean and standard deviation of
every mel band), the same architecture with random weights (seeded, through the same embedding
path) and the majority class (each fold's training majority). ``embeddings=<folder>`` probes what the embed task wrote
instead of a checkpoint (the random-weights model is rebuilt from the sidecars' model config).

Inputs: ``input`` is a class folder tree (``root/<class>/<file>``) or a CSV/JSONL manifest with a
``label`` column (optional ``start``, ``end``, ``split``, ``group``). Video works too; the
log-mel baseline reads the audio track, and is left out (with a line saying so) when a file has
none. Writes ``metrics.json``, ``folds.csv`` (one row per feature set and fold) and ``files.csv``
(fold and predictions of every file), each under a temporary name renamed into place, and prints
a table. Options are in ``conf/linear_probe.yaml``.

Bad input: a file that cannot be read is reported and left out; a class with fewer clips than
``min_clips`` (default: the number of folds), or with every clip in one group, is dropped with a
warning; a manifest without labels, too few classes, groups or files for the folds end in one
``error:`` line and exit code 2.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ttt_mm.checkpoint import build_parts
from ttt_mm.data import ClassFolderSource, ClipInfo, ManifestSource
from ttt_mm.data.selection import index_clips
from ttt_mm.data.skiplist import count_reasons, missing_stream_hint
from ttt_mm.data.sources import MANIFEST_SUFFIXES, SPLITS
from ttt_mm.embed import EMBEDDING_OPTIONS, Embedder, load_parts
from ttt_mm.linear_probe.classifier import FoldScore, cross_validate, majority_class, summarize
from ttt_mm.linear_probe.features import EmbeddingFolder, Extractors, LogMelStats, ModelFeatures, gather, stack
from ttt_mm.linear_probe.folds import assign_folds, drop_one_group, fold_groups, warn_of_classes_some_folds_miss
from ttt_mm.linear_probe.tables import write_outputs
from ttt_mm.messages import one_line, skips_named
from ttt_mm.processes.termination import sigterm_as_ctrl_c
from ttt_mm.tasks.command_keys import extensions_of, input_path, names_of, positive_count, results_folder, set_threads
from ttt_mm.tasks.common import ConfigError, Interrupted, config_errors_end_the_command
from ttt_mm.tasks.composing import hydra_command
from ttt_mm.tasks.config_types import check_arguments, check_config
from ttt_mm.tasks.job_logs import module_logger
from ttt_mm.tasks.overrides import given_keys

log = module_logger(__name__, __spec__)

BASELINES = ("logmel", "random_weights", "majority")
TITLES = {
    "model": "model",
    "logmel": "log-mel mean+std",
    "random_weights": "random weights",
    "majority": "majority class",
}


# ----------------------------------------------------------------------------------------- inputs


@dataclass
class Labelled:
    """The labelled clips to probe, their class names (``names[clip.label]``) and the classes asked
    for (``labels``, by index: a class folder without files is one, so that it is reported as dropped)."""

    clips: list[ClipInfo]
    names: list[str]
    labels: list[int]
    notes: list[str] = field(default_factory=list)  # what was left out before reading, in words


def labelled_clips(path: str, extensions: tuple[str, ...]) -> Labelled:
    """Clips of a class folder tree or a manifest with labels; unlabelled manifest rows are left out."""
    target = Path(path)
    if target.is_dir():
        source = ClassFolderSource(str(target), extensions)
        try:
            names = source.classes()
            return Labelled(source.clips(), names, list(range(len(names))))
        except FileNotFoundError as exc:
            raise ConfigError(f"input={path}: {exc}") from None
    if not target.is_file() or target.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ConfigError(f"input={path} must be a folder of class folders or a CSV/JSONL manifest with a label column")
    source = ManifestSource(str(target))
    try:
        clips, names = source.clips(), source.classes()
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"input={path}: not a readable manifest: {exc}") from None
    if clips and all(c.label < 0 for c in clips):
        if not any("label" in row for row in source.rows()):
            raise ConfigError(f"manifest {path} has no 'label' column")
        raise ConfigError(f"manifest {path}: the 'label' column is empty in every row")
    labelled = [c for c in clips if c.label >= 0]
    notes = [f"{len(clips) - len(labelled)} rows without a label"] if len(labelled) < len(clips) else []
    if not labelled:
        raise ConfigError(f"manifest {path} has no rows")
    return Labelled(labelled, names, sorted({c.label for c in labelled}), notes)


def select(data: Labelled, cfg: DictConfig) -> Labelled:
    """The clips of ``split`` and ``classes``, at most ``max_files`` of them (`each_class_in_turn`)."""
    clips, labels = data.clips, data.labels
    if cfg.split != "all":
        if cfg.split not in SPLITS:
            raise ConfigError(f"split must be all, train, val or test; got {cfg.split!r}")
        if not any(c.split for c in clips):
            raise ConfigError(f"split={cfg.split} needs a manifest with a 'split' column")
        present = Counter(c.split for c in clips if c.split)
        unsplit = len(clips) - sum(present.values())
        clips = [c for c in clips if c.split == cfg.split]
        if not clips:
            has = ", ".join(f"{split} ({present[split]} rows)" for split in SPLITS if present[split])
            raise ConfigError(
                f"split={cfg.split}: input={cfg.input} has no {cfg.split} rows; its split column names {has}"
                + (f" ({unsplit} rows name none: training hashes those, the probe leaves them out)" if unsplit else "")
            )
    if classes := names_of(cfg.classes):
        unknown = sorted(set(classes) - set(data.names))
        if unknown:
            raise ConfigError(f"classes: {unknown} are not among the labels {data.names}")
        if len(set(classes)) < 2:
            raise ConfigError(f"classes={classes[0]} names one class: a probe tells two or more apart")
        labels = sorted({data.names.index(name) for name in classes})
        clips = [c for c in clips if c.label in labels]
    if cfg.max_files is not None:
        clips = each_class_in_turn(clips, positive_count(cfg.max_files, "max_files"))
    if not clips:
        chosen = [f"split={cfg.split}"] * (cfg.split != "all") + [f"classes=[{','.join(classes)}]"] * bool(classes)
        raise ConfigError(f"no clips in input={cfg.input}" + (f" after {' and '.join(chosen)}" if chosen else ""))
    return replace(data, clips=clips, labels=labels)


def each_class_in_turn(clips: list[ClipInfo], count: int) -> list[ClipInfo]:
    """At most ``count`` clips taken from each class in turn, in their order: the first ``count`` rows
    of a class-folder listing would all be one class, and a quick check needs every class."""
    seen: Counter = Counter()
    rank = []  # (clips of the same class before this one, first row of its class)
    first_row: dict[int, int] = {}
    for i, clip in enumerate(clips):
        rank.append((seen[clip.label], first_row.setdefault(clip.label, i)))
        seen[clip.label] += 1
    taken = sorted(sorted(range(len(clips)), key=rank.__getitem__)[:count])
    return [clips[i] for i in taken]


def drop_rare(
    clips: list[ClipInfo], names: list[str], labels: list[int], min_clips: int, which: str, rule: str | None = None
) -> tuple[list[ClipInfo], dict[str, dict]]:
    """The clips of classes with at least ``min_clips`` clips, and the dropped classes of ``labels``
    (those asked for: a class with no clips at all is dropped too) with their counts and why.
    ``which``: what was counted, ``listed`` (before reading: such a class is not read) or ``readable``;
    ``rule``: ``min_clips`` as said (by default ``min_clips=<n>``; where the key is unset, the folds)."""
    rule = rule or f"min_clips={min_clips}"
    counts = Counter(c.label for c in clips)
    rare = {names[label]: counts[label] for label in labels if counts[label] < min_clips}
    for name, n in rare.items():
        log.warning("class %r has %d %s clip(s), fewer than %s: left out of the probe", name, n, which, rule)
    why = f"{which}: fewer than {rule}"
    return [c for c in clips if counts[c.label] >= min_clips], {n: {"files": k, "reason": why} for n, k in rare.items()}


# --------------------------------------------------------------------------------------- features


def _embedder(tokenizer, backbone, cfg: DictConfig, options: dict) -> Embedder:
    try:
        return Embedder(tokenizer, backbone, **options, device=cfg.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_embedded_settings(cfg: DictConfig, written: dict) -> None:
    """An embeddings folder is probed as it was embedded (``written``: a sidecar's settings): a setting
    given here that differs, or pool=null (rows only, no vector per file) without rows=true, asks for
    embedding again."""
    probe = "or probe the checkpoint: ckpt=<checkpoint> in place of embeddings="
    given = [k for k in ("layer", "norm", "pool", *(("hop_seconds",) if cfg.rows else ())) if k in given_keys()]
    asked = {k: cfg[k] for k in given}
    if "layer" in asked and isinstance(depth := written.get("depth"), int):  # (a sidecar counts from 0: -1 is depth-1)
        if not -depth <= int(asked["layer"]) < depth:  # (it wrapped round: layer=5 of 4 blocks read as layer=1)
            raise ConfigError(
                f"embeddings={cfg.embeddings} was embedded by a model of {depth} blocks: layer={asked['layer']} "
                f"is none of them (from {-depth} to {depth - 1})"
            )
        asked["layer"] = int(asked["layer"]) % depth
    if differ := [f"{k}={_value(cfg[k])}" for k in given if asked[k] != written[k]]:
        raise ConfigError(
            f"embeddings={cfg.embeddings} was embedded with {', '.join(f'{k}={_value(written[k])}' for k in given)}, "
            f"and is probed so: for {', '.join(differ)}, embed again (python -m ttt_mm.tasks.embed) {probe}"
        )
    if written["pool"] is None and not cfg.rows:
        raise ConfigError(
            f"embeddings={cfg.embeddings} was embedded with pool=null (rows only): a probe of files needs one "
            f"vector per file; probe its rows (rows=true), embed again with pool=mean, max or mean_std, {probe}"
        )


def _value(value) -> str:
    """A setting as an override writes it (``null``, ``true``, ``0.5``, ``mean``)."""
    return value if isinstance(value, str) else json.dumps(value)


def build_extractors(cfg: DictConfig, baselines: set[str]) -> Extractors:
    out = Extractors()
    if cfg.ckpt:
        try:
            tokenizer, backbone, hparams = load_parts(cfg.ckpt, bool(cfg.weights_only))
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        model = {"tokenizer": hparams["tokenizer"], "backbone": hparams["backbone"]}
        options = {k: cfg[k] for k in EMBEDDING_OPTIONS} | {"hop_seconds": cfg.hop_seconds if cfg.rows else None}
        if options["pool"] is None and not cfg.rows:  # (an embeddings folder's: `check_embedded_settings`)
            raise ConfigError(
                "pool must be mean, max or mean_std for a probe of files (it needs one vector per file), "
                "or null with rows=true (a probe of rows)"
            )
        embedders = {"model": _embedder(tokenizer, backbone, cfg, options)}
        out.spec = embedders["model"].read_spec()
        out.description = {"checkpoint": os.path.abspath(cfg.ckpt), "mixer": backbone.mixer_name, **options}
    else:
        try:
            out.folder = EmbeddingFolder(cfg.embeddings)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        meta = out.folder.meta
        model = meta["model"]
        options = {k: meta[k] for k in EMBEDDING_OPTIONS}
        embedders = {}
        out.description = {
            "embeddings": os.path.abspath(cfg.embeddings),
            "checkpoint": meta.get("checkpoint"),
            "mixer": meta.get("mixer"),  # (a folder written before embed recorded it: None)
            "weights_hash": out.folder.weights_hash,
        }
        out.description |= options
        check_embedded_settings(cfg, meta)
    if "random_weights" in baselines or out.spec is None:
        torch.manual_seed(int(cfg.seed))
        try:
            tokenizer, backbone = build_parts(model, "the probed model")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        random = _embedder(tokenizer, backbone, cfg, options)
        out.spec = out.spec or random.read_spec()
        if "random_weights" in baselines:
            embedders["random_weights"] = random
    if embedders:
        out.live = ModelFeatures(embedders, rows=bool(cfg.rows))  # an embeddings folder's rows: its own hop
    if "logmel" in baselines:
        try:
            # the model's rows: its embeddings folder's own hop, or one per token (hop_seconds=null)
            hop = options["hop_seconds"] or float(tokenizer.seconds_per_step)
            out.logmel = LogMelStats(instantiate(cfg.logmel), float(hop) if cfg.rows else None)
        except ValueError as exc:
            raise ConfigError(f"logmel: {exc}") from None
    return out


# -------------------------------------------------------------------------------------------- run


KEY_KINDS = {"l2": float | list[float]}
"""Keys that take more than their shipped value shows (`check_command_keys`): ``l2``, a list, one number too."""


def l2_grid(value) -> tuple[float, ...]:
    """The L2 strengths to choose from: a list, or one number (``l2=0.01``: that strength, none chosen)."""
    given = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
    try:
        grid = tuple(float(x) for x in (given if isinstance(given, list) else [given]))
    except (TypeError, ValueError):
        grid = ()
    if not grid or not all(0 < x < math.inf for x in grid):
        raise ConfigError(f"l2 must be a positive number or a list of them; got {_value(given)}")
    return grid


def _say_silent_tracks(clips: list[ClipInfo], modalities: tuple[str, ...], baselines: set[str]) -> None:
    """One line for the clips whose audio track is digital silence, where the model or the log-mel
    baseline reads it: their features are those of silence (embed says so of each file)."""
    model = "the model" + (" and its random-weights baseline" if "random_weights" in baselines else "")
    readers = [who for who, reads in ((model, "audio" in modalities), ("log-mel", "logmel" in baselines)) if reads]
    silent = [c.name for c in clips if c.info is not None and c.info.silent]
    if silent and readers:
        log.warning(
            "%d of the %d clips have an audio track of digital silence, read as it is by %s (e.g. %s)",
            len(silent),
            len(clips),
            " and ".join(readers),
            one_line(silent[0]),
        )


def _without_logmel(reasons: list[str], probed: int) -> str:
    """Why the log-mel baseline is left out: how many of the ``probed`` clips give it nothing, and why."""
    if all(r.startswith("no audio stream") for r in reasons):
        return f"{len(reasons)} of {probed} files have no audio track"
    return f"{len(reasons)} of {probed} clips give no log-mel features ({count_reasons(reasons)})"


def run(cfg: DictConfig) -> dict:
    """Probe the labelled clips of ``cfg.input``; returns the metrics and where they were written."""
    check_config(cfg, "linear_probe", KEY_KINDS)
    check_arguments(Embedder, {k: cfg[k] for k in (*EMBEDDING_OPTIONS, "device")})
    if OmegaConf.is_missing(cfg, "input") or not cfg.input:
        raise ConfigError("input=<class folder or manifest> is required")
    if bool(cfg.ckpt) == bool(cfg.embeddings):
        raise ConfigError("give either ckpt=<checkpoint> or embeddings=<folder written by the embed task>")
    baselines = set(cfg.baselines or ())
    if baselines - set(BASELINES):
        raise ConfigError(f"baselines must be among {list(BASELINES)}; got {sorted(baselines)}")
    folds = int(cfg.folds)
    if folds < 2:
        raise ConfigError(f"folds must be >= 2; got {folds}")
    min_clips = positive_count(cfg.min_clips, "min_clips", "as many as folds") or folds
    whence = f"min_clips={min_clips}" if cfg.min_clips is not None else f"folds={folds}; min_clips unset"
    rule = whence if cfg.min_clips is not None else f"{folds} ({whence})"
    grid = l2_grid(cfg.l2)
    set_threads(cfg.threads, "threads")
    extensions = extensions_of(cfg.extensions)

    extractors = build_extractors(cfg, baselines)  # (a checkpoint that is not one: said before a folder is listed)
    data = select(labelled_clips(input_path(cfg.input), extensions), cfg)
    # a class too small is dropped before its files are read: no time spent on them
    clips, dropped = drop_rare(data.clips, data.names, data.labels, min_clips, "listed", rule)
    clips, lonely = drop_one_group(clips, data.names, bool(cfg.group))
    dropped |= lonely
    output = results_folder(cfg.output)  # (before files are read: a folder that cannot be made is a config error)
    if extractors.folder is not None and clips and not any(extractors.folder.stem_of(c) for c in clips):
        held = next(iter(extractors.folder.stems))[0]  # (one line, not a "left out" line for each clip)
        raise ConfigError(
            f"embeddings={cfg.embeddings} embeds none of the {len(clips)} clips of input={cfg.input} (it holds "
            f"{held}, say; the input {clips[0].name}): run the embed task on this input, or give its embeddings"
        )
    rows = bool(cfg.rows)
    selection = index_clips(clips, extractors.spec, cfg.get("index_cache"))  # probed in subprocesses first
    unread = [(c.segment, reason) for c in clips if (reason := selection.reason_of(c))]  # each span of a bad file
    for name, reason in unread:
        log.warning("left out: %s: %s", one_line(name), reason)
    got = gather(selection.clips, extractors, rows, bool(cfg.progress))
    got.skipped[:0] = unread
    if clips and not got.clips:  # (one line for all, rather than "fewer than 2 classes")
        reasons = [reason for _, reason in got.skipped]
        hint = missing_stream_hint(reasons, extractors.spec.modalities, "the probed model")
        raise ConfigError(
            f"none of the {len(clips)} clips of input={cfg.input} can be read: {count_reasons(reasons)}{hint}"
        )
    kept_labels = sorted({c.label for c in clips})
    clips, thinned = drop_rare(got.clips, data.names, kept_labels, min_clips, "readable", rule)  # (bad files thin one)
    clips, lonely = drop_one_group(clips, data.names, bool(cfg.group))
    dropped |= thinned | lonely
    labels = {c.label for c in clips}
    kept = [i for i, c in enumerate(got.clips) if c.label in labels]  # the features of `clips`, by index
    _say_silent_tracks(clips, extractors.spec.modalities, baselines)
    if len(labels) < 2:
        hint = (
            "" if cfg.max_files is None else f" (max_files={cfg.max_files} clips in all, taken from each class in turn)"
        )
        raise ConfigError(
            f"fewer than 2 classes with at least {min_clips} readable clips ({whence}), in more than one group, "
            f"in input={cfg.input}{hint}"
        )

    y = np.unique([c.label for c in clips], return_inverse=True)[1]
    label_ids = sorted({c.label for c in clips})
    names = [data.names[i] for i in label_ids]
    by_group = fold_groups(clips, bool(cfg.group))
    grouped = len(set(by_group.tolist())) < len(by_group)
    groups = by_group if grouped else None
    try:
        fold_of = assign_folds(y, groups, folds, int(cfg.seed))
    except ValueError as exc:
        hint = " (a group: the spans of one file, or one value of the group column; group=false splits them)"
        raise ConfigError(f"input={cfg.input}: {exc}{hint if grouped else ''}") from None
    warn_of_classes_some_folds_miss(fold_of, y, by_group, names, "groups" if grouped else "clips")

    scores: dict[str, list[FoldScore]] = {}
    unavailable: dict[str, str] = {}
    order = ["model", "logmel", "random_weights"]
    no_logmel = {i: got.no_logmel[i] for i in kept if i in got.no_logmel}  # (of the clips probed)
    for name in order:
        if name != "model" and name not in baselines:
            continue
        if name == "logmel" and no_logmel:
            unavailable[name] = _without_logmel(list(no_logmel.values()), len(clips))
            example = got.clips[next(iter(no_logmel))].name
            log.warning("log-mel baseline left out: %s (e.g. %s)", unavailable[name], example)
            continue
        feats = stack([got.features[name][i] for i in kept], rows)
        log.info("fitting probes on %s: %d clips, %d rows of %d", name, len(clips), len(feats.x), feats.x.shape[1])
        scores[name] = cross_validate(feats, y, fold_of, len(names), groups, grid, int(cfg.seed))
    if "majority" in baselines:
        scores["majority"] = majority_class(y, fold_of)

    metrics = {
        "settings": {
            "input": os.path.abspath(str(cfg.input)),
            **extractors.description,
            "folds": folds,
            "grouped_by": ("group" if any(c.group for c in clips) else "file") if grouped else None,
            "groups": len(set(groups)) if grouped else None,
            "rows": rows,
            "l2_grid": list(grid),
            "min_clips": min_clips,
            "split": str(cfg.split),
            "seed": int(cfg.seed),
        },
        "files": len(clips),
        "classes": [{"name": n, "files": int((y == i).sum())} for i, n in enumerate(names)],
        "dropped_classes": [{"name": n, **why} for n, why in dropped.items()],
        "left_out_before_reading": data.notes,
        "skipped": [{"path": p, "reason": r} for p, r in got.skipped],
        "unavailable": unavailable,
        "results": {name: summarize(s) for name, s in scores.items()},
    }
    try:
        paths = write_outputs(output, metrics, scores, clips, y, names, fold_of)
    except KeyboardInterrupt:  # (each file is whole, written through a temporary name; not all may be there)
        raise Interrupted(f"the results were being written to {output}: some of its files may be missing") from None
    return {"output": str(output), "paths": paths, "metrics": metrics}


def report(out: dict) -> None:
    m = out["metrics"]
    s = m["settings"]
    classes = ", ".join(f"{c['name']} {c['files']}" for c in m["classes"])
    grouping = f"grouped by '{s['grouped_by']}' ({s['groups']} groups)" if s["grouped_by"] else "stratified"
    what = "per-hop rows" if s["rows"] else "pooled embeddings"
    lines = [
        f"linear probe on {what}: {m['files']} clips, {len(m['classes'])} classes ({classes})",
        f"{s['folds']}-fold cross-validation, {grouping}; mean ± std over folds",
        "",
        f"{'features':<22} {'accuracy':>15}   {'macro-F1':>15}",
    ]
    for name, r in m["results"].items():
        acc, f1 = r["accuracy"], r["macro_f1"]
        lines.append(
            f"{TITLES[name]:<22} {acc['mean']:>7.3f} ± {acc['std']:<5.3f}   {f1['mean']:>7.3f} ± {f1['std']:<5.3f}"
        )
    for name, why in m["unavailable"].items():
        lines.append(f"{TITLES[name]:<22} not computed: {why}")
    lines.append("")
    for c in m["dropped_classes"]:
        lines.append(f"dropped class {c['name']!r}: {c['files']} clip(s) ({c['reason']})")
    for note in m["left_out_before_reading"]:
        lines.append(f"left out: {note}")
    if m["skipped"]:
        lines.append(f"skipped {len(m['skipped'])} clip(s): {skips_named(m['skipped'], all_in='metrics.json')}")
    lines.append(f"output: {out['output']} (metrics.json, folds.csv, files.csv)")
    print("\n".join(lines), flush=True)


@hydra_command("linear_probe")
def main(cfg: DictConfig) -> dict:
    """Probes as configured; returns each feature set's mean scores over the folds, the output folder and
    the probed model's mixer (what a sweep's results table shows: `ttt_mm.tasks.sweep_report`)."""
    with (
        config_errors_end_the_command(
            interrupted="no results were written (they are written once every probe is fitted)", cfg=cfg
        ),
        sigterm_as_ctrl_c(),
    ):
        out = run(cfg)
        report(out)
    mixer = out["metrics"]["settings"]["mixer"]  # (a sweep's results table names each job's: `sweep_report`)
    return {"metrics": sweep_scores(out["metrics"]), "run_dir": out["output"], "mixer": mixer}


def sweep_scores(metrics: dict) -> dict[str, float]:
    """``probe/<features>/accuracy`` and ``probe/<features>/macro_f1``, the means over the folds: a
    sweep over layers, pools or L2 grids compares them side by side."""
    return {
        f"probe/{name}/{score}": float(result[score]["mean"])
        for name, result in metrics["results"].items()
        for score in ("accuracy", "macro_f1")
    }


if __name__ == "__main__":
    main()
