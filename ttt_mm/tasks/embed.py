"""``python -m ttt_mm.tasks.embed ckpt=<path> input=<file|folder|manifest> output=<dir> [key=value ...]``

Embeds every input with a trained checkpoint, streaming each file window by window with the
backbone state carried (constant memory, the same rows as one pass over the file), and writes per
input ``<output>/<relative path>.npy`` (rows ``[N, D]``) and ``.json`` (timestamps, pooled vector,
provenance; see `ttt_mm.embed.files`). ``input`` is a media file, a folder (searched recursively by
extension) or a CSV/JSONL manifest (``path`` and optional ``start``, ``end``, ``label`` columns, as
``python -m ttt_mm.tasks.probe`` writes). Every input is probed first in a subprocess (the dataset
index), so a file that crashes a decoder is reported, never opened here; videos without sound are
read with a silent track when the model reads audio and video. Options are in ``conf/embed.yaml``.
Quote paths with characters Hydra parses (``'input="/data/clip (1).mp4"'``).

A finished output is skipped when its sidecar records what this run would make it from: the same
source file (path, size, modification time), span, checkpoint weights and settings (model config,
layer, norm, hop, pool, dtype). Otherwise it is embedded again, with a line saying what differs, and
an input that now fails (or that the index now rejects) loses its earlier output: an output never
describes another checkpoint, older media or other settings than its input's latest run (outputs of
files no longer listed stay as they are). ``overwrite=true`` redoes every input. A file that cannot be
read is reported and the others go on; the run ends with a summary listing every failed file and its
reason, and exits with status 1 if any failed (2 for a config error or an input that lists no files,
130 when interrupted). A single bad input gives one ``error: <file>: <reason>`` line. Files without a
stream the model reads (sound files for a video model) are left out and listed, not failed: a folder
of mixed media embeds what the model reads (exit 0 where nothing failed), and only where none of its
files has such a stream do they count as failed.
"""

from __future__ import annotations

import errno
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ttt_mm.data.decode import MediaError
from ttt_mm.data.decode.guard import native_stderr_silenced
from ttt_mm.data.manifest import ManifestSource
from ttt_mm.data.selection import index_clips
from ttt_mm.data.skiplist import count_reasons, reason_kind
from ttt_mm.data.sources import MANIFEST_SUFFIXES, ClipInfo, FolderSource
from ttt_mm.embed import EMBEDDING_OPTIONS, Embedder, load_parts
from ttt_mm.embed.files import (
    DTYPES,
    SETTINGS,
    NpyRowWriter,
    RowError,
    adopt_older_name,
    config_hash,
    out_of_date,
    output_paths,
    output_stem,
    read_sidecar,
    remove_outputs,
    source_record,
    weights_hash,
)
from ttt_mm.messages import missing, one_line
from ttt_mm.messages.progress import FilesBar
from ttt_mm.processes.termination import sigterm_as_ctrl_c
from ttt_mm.storage.atomic import remove_stale_temporaries, replaced_with_sidecar, write_json
from ttt_mm.tasks.command_keys import extensions_of, input_path, output_folder, set_threads, sweep_job_folder
from ttt_mm.tasks.common import ConfigError, Interrupted, SweepJobError, config_errors_end_the_command, in_a_sweep
from ttt_mm.tasks.composing import hydra_command
from ttt_mm.tasks.config_types import check_arguments, check_config
from ttt_mm.tasks.job_logs import module_logger

log = module_logger(__name__, __spec__)
EMBEDDER_KEYS = (*EMBEDDING_OPTIONS, "device")  # the keys passed to the Embedder as they are


class InputError(ValueError):
    """An input that was read but gives nothing to write (too short, values not finite)."""


@dataclass
class Summary:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    lacking: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): good files without a stream read
    again: Counter[str] = field(default_factory=Counter)  # why earlier outputs were embedded again: how many
    single: bool = False  # the input was one file
    output: str = ""  # the folder written to

    def report(self) -> str:
        counts = f"embedded {len(self.written)}, skipped {len(self.skipped)} (already done), failed {len(self.failed)}"
        if self.lacking:
            counts += f", left out {len(self.lacking)} (no stream the model reads)"
        lines = [f"{counts} -> {self.output}"]
        lines += [f"embedded again: {n} out of date, {why}" for why, n in self.again.items()]
        for heading, listed in (("left out", self.lacking), ("failed", self.failed)):
            if listed:
                lines.append(f"{len(listed)} {heading}:")
                lines += [f"  {one_line(name)}: {reason}" for name, reason in listed]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------- inputs


class Inputs(NamedTuple):
    clips: list[ClipInfo]
    single: bool  # ``input`` was one media file
    classes: list[str]  # a manifest's label names, by `ClipInfo.label` (none for a folder or a file)


def list_inputs(path: str, extensions: tuple[str, ...]) -> Inputs:
    """The clips to embed, each with its own output (two that would share one are a config error)."""
    target = Path(path)
    if target.is_dir():
        clips = FolderSource(str(target), extensions).clips()
        if not clips:
            raise ConfigError(f"input={path}: no files with extensions {' '.join(extensions)} under it")
        return Inputs(clips, False, [])
    if target.is_file() and target.suffix.lower() in MANIFEST_SUFFIXES:
        manifest = ManifestSource(str(target))
        try:
            clips, classes = manifest.clips(), manifest.classes()
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"input={path}: not a readable manifest: {exc}") from None
        if not clips:
            raise ConfigError(f"input={path}: the manifest lists no files")
        return Inputs(clips, False, classes)
    if target.exists() or target.is_symlink():
        return Inputs([ClipInfo(str(target), key=target.name)], True, [])
    raise ConfigError(missing(f"input={path}", path))


def check_outputs_apart(clips: list[ClipInfo], output: Path) -> None:
    """Raise a config error if two inputs map to one output (a manifest's absolute and relative paths
    can: `output_stem` keeps both under ``output``); they would overwrite each other on every run."""
    seen: dict[Path, str] = {}
    for clip in clips:
        stem = output_stem(clip, output)
        other = seen.setdefault(stem, clip.segment)
        if other != clip.segment:
            raise ConfigError(
                f"{other} and {clip.segment} would both be written to {stem}.npy: "
                "list each file once, by one path, or embed them into different outputs"
            )


# ----------------------------------------------------------------------------------------- embed


def embed_one(embedder: Embedder, clip: ClipInfo, stem: Path, meta: dict, dtype: str, progress: bool = False) -> dict:
    """Stream one clip into ``<stem>.npy`` and ``<stem>.json``; returns the sidecar.

    Raises `MediaError` (unreadable), `InputError` or `OSError` (the output cannot be written); nothing
    is left at the final names then.
    """
    made_from = source_record(clip)  # before reading: a file changed meanwhile is redone next run
    with native_stderr_silenced():  # libsndfile's mp3 decoder prints its own notes on a bad file
        first, end = embedder.span(clip.media, clip.start, clip.end, info=clip.info)
    npy, sidecar = output_paths(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stream = embedder.stream(first)
    name = Path(clip.name).name[-30:]
    bar = tqdm(total=round(end - first, 2), unit="s", desc=name, leave=False, disable=not progress or None)
    try:
        with replaced_with_sidecar(npy, sidecar) as (tmp, data):
            with open(tmp, "wb") as f:
                writer = NpyRowWriter(f, embedder.dim, dtype)
                done = first
                try:
                    for batch in embedder.windows(clip.media, clip.start, clip.end, info=clip.info):
                        writer.write(stream.push(batch)[0].numpy())
                        reached = min(float(batch["start"][0]) + embedder.window_seconds, end)
                        bar.update(round(reached - done, 2))
                        done = reached
                    writer.write(stream.finish()[0].numpy())
                except RowError as exc:
                    raise InputError(str(exc)) from None
                writer.close()
            if stream.num_tokens == 0:
                step = embedder.seconds_per_step
                raise InputError(f"no whole token step in {end - first:.3f} s (a step is {step} s)")
            pooled = stream.pooled()
            data |= {
                **meta,
                **made_from,
                "start": first,
                "end": end,
                "duration": round(end - first, 9),  # (2.3 - 0.31 is 1.9899999999999998 in floats)
                "embeddings": npy.name,
                "shape": [writer.rows, embedder.dim],
                "dtype": dtype,
                "tokens": stream.num_tokens,
                "clock": stream.clock.to_json(),
                "pooled": None if pooled is None else [float(x) for x in pooled[0]],
                **({} if stream.silent_track is None else {"silent_track": stream.silent_track}),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        return data
    finally:
        bar.close()


UNNAMEABLE = (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ)
"""Why a filesystem refuses one output's name (too long; characters such as ``:`` that FAT, exFAT and SMB
refuse; bytes that are not its encoding): that input fails alone."""


def _up_to_date(stem: Path, clip: ClipInfo, meta: dict) -> bool:
    """Whether ``stem`` holds a finished output that records what this run would write of ``clip``."""
    try:
        old = _finished(stem)
        return old is not None and out_of_date(old, meta | source_record(clip)) is None
    except (MediaError, OSError):  # (the source is gone; the output's name is one the filesystem refuses)
        return False


def _finished(stem: Path) -> dict | None:
    """The sidecar of the finished output at ``stem``; None when there is none or it is unreadable
    (the output is then made again)."""
    try:
        return read_sidecar(stem)
    except ValueError:
        return None


def build(cfg: DictConfig) -> tuple[Embedder, dict]:
    """The embedder and the sidecar fields shared by every input."""
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(map(repr, DTYPES))}; got {cfg.dtype!r}")
    try:
        tokenizer, backbone, hparams = load_parts(cfg.ckpt, bool(cfg.weights_only))
        weights = weights_hash(tokenizer, backbone)  # once per run, before the weights move to the device
        embedder = Embedder(tokenizer, backbone, **{k: cfg[k] for k in EMBEDDER_KEYS})
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    model = {"tokenizer": hparams["tokenizer"], "backbone": hparams["backbone"]}
    options = {k: cfg.dtype if k == "dtype" else getattr(embedder, k) for k in SETTINGS}  # as the embedder took them
    meta = {
        "checkpoint": os.path.abspath(cfg.ckpt),
        "config_hash": config_hash(model, options),
        "weights_hash": weights,
        **options,
        "depth": backbone.depth,
        "mixer": backbone.mixer_name,
        "window_seconds": embedder.window_seconds,
        "modalities": list(embedder.modalities),
        "model": model,
    }
    return embedder, meta


@contextmanager
def _said_on_ctrl_c(summary: Summary, readable: int, output: Path, overwrite: bool) -> Iterator[None]:
    """Ctrl-C while inputs are embedded ends with how far it got, and how to go on (`embed_one` writes
    through temporary names: nothing half-written is left)."""
    try:
        yield
    except KeyboardInterrupt:
        done = len(summary.written) + len(summary.skipped)
        again = (
            "the same command without overwrite=true embeds the rest (with it, all of them again)"
            if overwrite
            else "the same command embeds the rest"
        )
        anew = " anew" if overwrite else ""
        others = ", the others' outputs of earlier runs (if any) as they were" if overwrite else ""
        raise Interrupted(
            f"{done} of the {readable} readable inputs are embedded in {output}{anew} and kept, the one in progress "
            f"not written{others}; {again}"
        ) from None


def run(cfg: DictConfig) -> Summary:
    """Embed every input of ``cfg.input`` into ``cfg.output`` (`sweep_job_folder`); bad files are
    collected, not raised."""
    check_config(cfg, "embed")
    check_arguments(Embedder, {k: cfg[k] for k in EMBEDDER_KEYS})  # before the inputs are listed
    for key in ("ckpt", "input", "output"):
        if OmegaConf.is_missing(cfg, key) or not cfg[key]:
            raise ConfigError(f"{key}=<path> is required")
    set_threads(cfg.threads, "threads")
    try:
        embedder, meta = build(cfg)  # (a checkpoint that is not one is said before a large folder is listed)
        clips, single, classes = list_inputs(input_path(cfg.input), extensions_of(cfg.extensions))
        output = sweep_job_folder(cfg.output)
        if output.exists() and not output.is_dir():  # (said now: a run of bad inputs only would not make it)
            raise ConfigError(f"output={output} cannot be made a folder: a file of that name exists")
        check_outputs_apart(clips, output)
        summary = Summary(single=single, output=str(output))
        selection = index_clips(clips, embedder.read_spec(), cfg.get("index_cache"))  # probed in subprocesses first
    except KeyboardInterrupt:
        raise Interrupted(
            "nothing was written (the inputs were being listed and probed)", before_it_began=True
        ) from None
    modalities = embedder.read_spec().modalities
    unread = 0  # earlier outputs removed of files of another kind (good files: said once for all)
    for clip in clips:  # each span of a file left out whole is an output not made
        if not (reason := selection.reason_of(clip)):
            continue
        lacking = not single and reason_kind(reason) in {f"no {stream} stream" for stream in modalities}
        if lacking:
            summary.lacking.append((clip.segment, reason))  # (a good file of another kind: said once, below)
        else:
            summary.failed.append((clip.segment, reason))
            if not single:
                log.warning("failed: %s: %s", one_line(clip.segment), reason)
        if remove_outputs(output_stem(clip, output)):  # an earlier output describes what the file was
            if lacking:
                unread += 1
            else:
                log.warning("removed the earlier output of %s, which cannot be read now", one_line(clip.segment))
    if unread:
        log.warning("removed the earlier outputs of %d input(s) that lack a stream this model reads", unread)
    if summary.lacking:
        log.warning(
            "left out %d of %d inputs, which lack a stream the model reads (%s): listed at the end; "
            "extensions=[...] takes only the files of the extensions given",
            len(summary.lacking),
            len(clips),
            count_reasons([reason for _, reason in summary.lacking]),
        )
    clips = selection.clips
    hears = "audio" in modalities
    after = (  # what training and evaluation do with such a file (`ttt_mm.data.selection.select`)
        "an audio model's training and evaluation leave such a file out"
        if modalities == ("audio",)
        else "training and evaluation read such a file as a video without sound: left out, or with "
        "data.missing_audio=silence read with its silence"
    )
    videos = [c for c in clips if modalities == ("audio",) and c.info is not None and c.info.has_video]
    if videos:  # (the sidecars' modalities said it alone)
        some = f"{len(videos)} videos, e.g." if len(videos) > 1 else "a video,"
        log.info(
            "embedding only the sound of %s %s: the checkpoint's model reads audio", some, one_line(videos[0].segment)
        )
    if clips:  # made only when something may be written: a lone bad input leaves no folder behind
        output_folder(output)
        if removed := remove_stale_temporaries(output):
            log.info(
                "removed %d temporary file(s) that earlier runs, killed while writing, left in %s", removed, output
            )
    progress = bool(cfg.progress)
    bar = FilesBar(clips, "embed", progress and len(clips) > 1)
    told: set[str] = set()  # reasons for embedding again that were logged
    with logging_redirect_tqdm(), _said_on_ctrl_c(summary, len(clips), output, cfg.overwrite):
        for clip in bar:
            stem = output_stem(clip, output)
            try:
                if adopt_older_name(clip, stem):
                    log.info("renamed the output of %s from its older name", one_line(clip.segment))
                label = {"label": classes[clip.label]} if clip.label != -1 else {}  # by name: indices shift
                old, why = None if cfg.overwrite else _finished(stem), None
                if old is not None:
                    why = out_of_date(old, meta | source_record(clip))
                    if why is None:
                        if old.get("label") != label.get("label"):  # relabelled in the manifest: same rows
                            write_json(output_paths(stem)[1], {k: v for k, v in old.items() if k != "label"} | label)
                            log.info("relabelled the output of %s: %s", one_line(clip.segment), label.get("label"))
                        summary.skipped.append(clip.segment)
                        continue
                    if why not in told:  # (a run's new settings: one line, not one per file)
                        log.warning(
                            "embedding %s again: %s (others out of date for this reason: counted at the end)",
                            one_line(clip.segment),
                            why,
                        )
                        told.add(why)
                if hears and clip.info is not None and clip.info.silent:
                    log.warning(
                        "%s: the audio is digital silence: embedded as it is (%s)", one_line(clip.segment), after
                    )
                embed_one(embedder, clip, stem, meta | label, cfg.dtype, progress)
            except (MediaError, InputError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno not in UNNAMEABLE:
                    raise  # a full disk, a read-only folder: every later file would fail the same way
                if isinstance(exc, MediaError):
                    reason = exc.reason
                elif isinstance(exc, OSError):  # the filesystem takes no such output name (too long, a ':' on FAT)
                    reason = f"cannot write its output: {exc.strerror}"
                else:
                    reason = str(exc)
                summary.failed.append((clip.segment, reason))
                if not single:
                    log.warning("failed: %s: %s", one_line(clip.segment), reason)
                # an earlier output out of date goes (no stale rows); one that overwrite=true could not
                # replace stays where it is still what this run would write
                if not (cfg.overwrite and _up_to_date(stem, clip, meta)) and remove_outputs(stem):
                    log.warning("removed the earlier output of %s, which is out of date", one_line(clip.segment))
                bar.set_postfix(failed=len(summary.failed))
            else:
                summary.written.append(clip.segment)
                if why is not None:
                    summary.again[why] += 1
    return summary


@hydra_command("embed")
def main(cfg: DictConfig) -> None:
    with (
        config_errors_end_the_command(
            interrupted="finished outputs are kept, and one in progress was not written", cfg=cfg
        ),
        sigterm_as_ctrl_c(),
    ):
        summary = run(cfg)
    if summary.single and summary.failed:
        name, reason = summary.failed[0]
        print(f"error: {one_line(name)}: {reason}", file=sys.stderr)
    else:
        print(summary.report(), file=sys.stderr)
    done = len(summary.written) + len(summary.skipped)
    unmade = summary.failed if done else summary.failed + summary.lacking  # (all lacking a stream: nothing made)
    if unmade:
        if in_a_sweep():  # the job fails and the sweep goes on; its end lists the failed jobs (`SweepReport`)
            raise SweepJobError(f"{len(unmade)} input(s) failed, {done} embedded (outputs kept)")
        sys.exit(1)


if __name__ == "__main__":
    main()
