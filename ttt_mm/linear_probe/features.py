"""Per-file features for the linear probe, each read through `ttt_mm.data` (a bad file raises `MediaError`).

- `ModelFeatures`: the pooled embedding (and, for a row probe, one row per hop) of one or more
  embedders that read the same media, such as a trained model and the same architecture with
  random weights: each window of a clip is decoded once and pushed through every embedder's stream;
- `LogMelStats`: the mean and standard deviation of every mel band over the clip's log-mel frames
  (per hop for a row probe), the frames from an audio tokenizer's ``invert`` (the project's
  log-mel front end), the audio read on its own so that it works beside video-only models;
- `EmbeddingFolder`: what ``python -m ttt_mm.tasks.embed`` wrote, found by source file and start.

`gather` runs the `Extractors` of a probe over its clips, leaving out (and listing) those that
cannot be read; `stack` makes them one `Features` table.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from ttt_mm.data import ClipInfo, MediaError, ReadSpec, decode, iter_windows
from ttt_mm.embed import Embedder
from ttt_mm.embed.files import changed_settings, load, output_stem, read_sidecar, source_record
from ttt_mm.embed.reducers import HopBins, Pool, mean_and_std
from ttt_mm.linear_probe.classifier import Features
from ttt_mm.messages import one_line
from ttt_mm.messages.progress import FilesBar
from ttt_mm.tokenizers import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class FileFeatures:
    """``pooled [P]`` (None for a row probe of an embedding without a pool) and, for a row probe,
    ``rows [n, D]`` (n >= 1), float32."""

    pooled: np.ndarray | None
    rows: np.ndarray | None = None


def _finite(features: FileFeatures, clip: ClipInfo, what: str) -> FileFeatures:
    """``features``, or a `MediaError` (the clip left out) where a value is NaN or infinite: one would turn
    the probe's scores to chance, unsaid (the embed task refuses such rows too)."""
    if not all(np.isfinite(x).all() for x in (features.pooled, features.rows) if x is not None):
        raise MediaError(clip.name, f"{what} are not finite (NaN or inf)")
    return features


class ModelFeatures:
    """Embeddings of a clip from several embedders at once (same tokenizer settings, so the same windows)."""

    def __init__(self, embedders: dict[str, Embedder], rows: bool) -> None:
        """``rows``: keep each clip's rows too (one per hop, or per token for embedders without a hop)."""
        first = next(iter(embedders.values()))
        for name, e in embedders.items():
            if e.read_spec() != first.read_spec() or e.window_seconds != first.window_seconds:
                raise ValueError(f"embedder {name} reads other media or windows than the first")
        self.embedders, self.first, self.rows = embedders, first, rows

    @torch.inference_mode()
    def __call__(self, clip: ClipInfo) -> dict[str, FileFeatures]:
        start, _ = self.first.span(clip.media, clip.start, clip.end, clip.info)
        streams = {name: e.stream(start) for name, e in self.embedders.items()}
        rows: dict[str, list] = {name: [] for name in streams}
        for batch in self.first.windows(clip.media, clip.start, clip.end, clip.info):
            for name, stream in streams.items():
                rows[name].append(stream.push(batch)[0])
        out = {}
        for name, stream in streams.items():
            rows[name].append(stream.finish()[0])
            if stream.num_tokens == 0:
                raise MediaError(clip.name, f"no whole token step ({self.first.seconds_per_step} s) in the clip")
            pooled = stream.pooled()  # (None: pool=null, for a row probe)
            out[name] = FileFeatures(
                None if pooled is None else pooled[0].numpy(), torch.cat(rows[name]).numpy() if self.rows else None
            )
            _finite(out[name], clip, f"its {name} embeddings")
        return out


class LogMelStats:
    """Mean and standard deviation of each mel band over a clip (``[2 * n_mels]``), and per hop of
    ``hop_seconds`` for a row probe, from the log-mel frames of an audio ``tokenizer``."""

    def __init__(self, tokenizer: Tokenizer, hop_seconds: float | None = None, window_seconds: float = 30.0) -> None:
        d = tokenizer.decoding
        if d.modalities != ("audio",):
            raise ValueError(f"the log-mel baseline needs an audio tokenizer; this one reads {d.modalities}")
        self.tokenizer = tokenizer.eval()
        self.frame_seconds = tokenizer.seconds_per_step / tokenizer.media_per_step["audio"]
        self.spec = ReadSpec.for_tokenizer(tokenizer)
        steps = round(window_seconds / tokenizer.seconds_per_step)
        self.window_seconds = steps * tokenizer.seconds_per_step  # whole tokens: frames continue across windows
        self.hop_seconds = hop_seconds

    @torch.inference_mode()
    def __call__(self, clip: ClipInfo) -> FileFeatures:
        pool = Pool("mean_std")
        bins = None
        if self.hop_seconds is not None:
            bins = HopBins(self.frame_seconds, self.hop_seconds, 1)
        hops = []
        for batch in iter_windows(clip.media, self.window_seconds, self.spec, clip.start, clip.end, clip.info):
            tokens = self.tokenizer(batch)
            frames = self.tokenizer.invert(tokens.targets[:, tokens.mask[0]])["audio"]  # [1, F, n_mels]
            pool.add(frames)
            if bins is not None:  # (in float64: a quiet band's E[x^2] - E[x]^2 cancels to noise in float32)
                first = round((float(batch["start"][0]) - clip.start) / self.frame_seconds)
                x = frames.double()
                hops.append(bins.push(torch.cat([x, x.square()], -1), first + torch.arange(frames.shape[1])))
        if pool.count == 0:
            raise MediaError(clip.name, f"no whole log-mel frame ({self.frame_seconds} s) in the clip")
        rows = None
        if bins is not None:
            moments = torch.cat([*hops, bins.finish(1, 2 * self.tokenizer.n_mels)], 1)[0]  # [n, 2 * n_mels]
            rows = mean_and_std(*moments.chunk(2, -1)).float().numpy()
        return FileFeatures(pool.result()[0].numpy(), rows)


class EmbeddingFolder:
    """The ``.npy`` + ``.json`` pairs under ``root`` written by one embedding run, by ``(source, span)``:
    a source by its path as given, else by its real path (embedded through a linked folder, say).

    Raises ValueError when the folder holds none, or pairs of different model configs or settings
    (``config_hash``) or checkpoint weights (``weights_hash``), or two of the same span. Sidecars
    written before ``weights_hash`` was recorded load, with a warning that their checkpoint is unknown,
    and so do those decoded by other versions of the readers (`ttt_mm.data.decode.VERSION`).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"embeddings={root} is not a folder")
        self.stems: dict[tuple[str, float, float | None], Path] = {}  # (source, span start, span end) -> stem
        found = []
        self.unreadable: dict[Path, str] = {}  # the outputs whose sidecars could not be read, with why, by stem
        for sidecar in sorted(self.root.rglob("*.json")):
            try:
                meta = read_sidecar(sidecar.with_suffix(""))
            except ValueError as exc:
                log.warning("left out: %s", exc)
                self.unreadable[sidecar.with_suffix("")] = str(exc)
                continue
            if meta is not None and "source" in meta and "config_hash" in meta:  # (else e.g. a metrics.json)
                found.append((sidecar, meta))
        if not found:
            raise ValueError(f"embeddings={root} holds no .npy + .json pairs written by the embed task")
        _one_run(root, found, "config_hash", "other model config or settings")
        _one_run(root, found, "weights_hash", "other checkpoints")
        self.meta: dict = found[0][1]
        self.weights_hash: str | None = next((m["weights_hash"] for _, m in found if m.get("weights_hash")), None)
        unknown = sum(m.get("weights_hash") is None for _, m in found)
        for sidecar, meta in found:
            stem = sidecar.with_suffix("")
            start, end = meta.get("span") or (meta["start"], None)  # (sidecars before spans were recorded)
            key = _span_key(meta["source"], start, end)
            if key in self.stems:
                raise ValueError(f"{root}: {self.stems[key]} and {stem} both embed {key[0]} from {key[1]} to {key[2]}")
            self.stems[key] = stem
        self._real: dict[tuple[str, float, float | None], Path] | None = None  # (`stem_of`: made when first asked)
        if unknown:
            log.warning(
                "%d of %d sidecars in %s record no weights_hash (written by an older embed task): "
                "cannot check that they come from one checkpoint",
                unknown,
                len(self.stems),
                root,
            )
        if older := sum(m.get("decoder") != decode.VERSION for _, m in found):
            log.warning(
                "%d of %d sidecars in %s were decoded by another version of ttt-mm's readers than the baselines "
                "will be (run the embed task on the same input to redo them)",
                older,
                len(found),
                root,
            )

    def stem_of(self, clip: ClipInfo) -> Path | None:
        """The output that embeds ``clip`` (its file, over its span); None when the folder has none."""
        source, start, end = key = _span_key(clip.name, clip.start, clip.end)
        if (stem := self.stems.get(key)) is not None:
            return stem
        if self._real is None:  # the same sources by their real paths (two outputs of one file: the first)
            self._real = {}
            for (recorded, first, last), stem in self.stems.items():
                self._real.setdefault((os.path.realpath(recorded), first, last), stem)
        return self._real.get((os.path.realpath(source), start, end))

    def __call__(self, clip: ClipInfo, rows: bool) -> FileFeatures:
        stem = self.stem_of(clip)
        if stem is None:
            if (why := self.unreadable.get(output_stem(clip, self.root))) is not None:  # (where embed put it)
                raise MediaError(clip.name, why)
            raise MediaError(clip.name, f"not embedded in {self.root} (run the embed task on the same input)")
        try:
            loaded = load(stem)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise MediaError(clip.name, f"{stem}.npy or .json unreadable ({type(exc).__name__}: {exc})") from None
        now = source_record(clip)
        if any(k in loaded.meta and loaded.meta[k] != now[k] for k in ("source_bytes", "source_mtime_ns")):
            raise MediaError(clip.name, f"changed since {stem}.npy was embedded (run the embed task again)")
        if loaded.pooled is None and not rows:
            raise MediaError(clip.name, f"{stem}.json has no pooled vector (embedded with pool=null)")
        if len(loaded.embeddings) == 0:
            raise MediaError(clip.name, f"{stem}.npy holds no rows")
        # rows copied out of the memory map: a map kept per file held its file open, past the process's limit
        out = FileFeatures(loaded.pooled, np.array(loaded.embeddings, dtype=np.float32) if rows else None)
        return _finite(out, clip, f"the embeddings in {stem}")


def _one_run(root: Path, found: list[tuple[Path, dict]], field: str, meaning: str) -> None:
    """Raises ValueError where the sidecars record more than one ``field`` (those without one aside),
    naming each value that fewer of them share with a sidecar of it, and, for ``config_hash``, the
    settings that differ from the most common one's."""
    runs: dict[str, list[tuple[Path, dict]]] = {}
    for sidecar, meta in found:
        if meta.get(field) is not None:
            runs.setdefault(meta[field], []).append((sidecar, meta))
    if len(runs) < 2:
        return
    most, *others = sorted(runs, key=lambda value: -len(runs[value]))
    usual = runs[most][0][1]  # (the settings of a sidecar of the value most share)
    said = []
    for value in others:
        sidecar, meta = runs[value][0]
        differs = changed_settings(usual, meta) if field == "config_hash" else ""
        said.append(f"{len(runs[value])} with {field} {value} (e.g. {sidecar}{'; ' + differs if differs else ''})")
    raise ValueError(
        f"{root} mixes embedding runs ({meaning}): {len(runs[most])} of {len(found)} sidecars have {field} {most}, "
        f"{', '.join(said)}; embed into a folder of its own per model and settings"
    )


def _span_key(source: str, start: float, end: float | None) -> tuple[str, float, float | None]:
    return os.path.abspath(source), round(float(start), 6), None if end is None else round(float(end), 6)


# ------------------------------------------------------------------------------------ all clips


@dataclass
class Extractors:
    """What turns a clip into features: embedders run on the media (the model's and the random-weights
    baseline's), an embedding folder read in place of the model's, and the log-mel statistics."""

    live: ModelFeatures | None = None
    folder: EmbeddingFolder | None = None
    logmel: LogMelStats | None = None
    description: dict = field(default_factory=dict)
    spec: ReadSpec | None = None  # what the probed model reads: the dataset index selects files by it


@dataclass
class Gathered:
    clips: list[ClipInfo] = field(default_factory=list)
    features: dict[str, list[FileFeatures | None]] = field(default_factory=dict)  # each set's, by clip (None: none)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    no_logmel: dict[int, str] = field(default_factory=dict)  # clip (its index in clips) -> why it has no log-mel


def gather(clips: list[ClipInfo], ex: Extractors, rows: bool, progress: bool) -> Gathered:
    """Features of every clip; a clip that cannot be read is reported and left out (a clip whose only
    fault is its sound, which the model does not read, keeps its model features: the log-mel baseline
    is dropped where a clip probed has none)."""
    out = Gathered()
    bar = FilesBar(clips, "features", progress)
    with logging_redirect_tqdm():
        for clip in bar:
            try:
                found = {} if ex.folder is None else {"model": ex.folder(clip, rows)}
                if ex.live is not None:
                    found |= ex.live(clip)
                if ex.logmel is not None:
                    try:
                        found["logmel"] = ex.logmel(clip)
                    except MediaError as exc:  # (no audio track, a damaged one, one shorter than a frame)
                        out.no_logmel[len(out.clips)] = exc.reason
                        found["logmel"] = None  # (each set's list stays aligned with the clips)
            except MediaError as exc:
                out.skipped.append((clip.segment, exc.reason))  # (a span of a file: named as one)
                log.warning("left out: %s: %s", one_line(clip.segment), exc.reason)
                bar.set_postfix(skipped=len(out.skipped))
                continue
            out.clips.append(clip)
            for name, value in found.items():
                out.features.setdefault(name, []).append(value)
    return out


def stack(files: list[FileFeatures], rows: bool) -> Features:
    """One `Features` of every file: pooled vectors, or every file's rows with their owner."""
    if not rows:
        return Features.per_file(torch.from_numpy(np.stack([f.pooled for f in files]).astype(np.float32)))
    x = torch.from_numpy(np.concatenate([f.rows for f in files]).astype(np.float32))
    owner = torch.repeat_interleave(torch.arange(len(files)), torch.tensor([len(f.rows) for f in files]))
    return Features(x, owner)
