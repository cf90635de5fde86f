"""Reading windows of clips: what to decode (`ReadSpec`), one window of a clip (`read_item`), batching
(`collate`), and every file in order as consecutive windows, for evaluation and streaming
(`SequentialWindows`, `iter_windows`); the training orders are in `ttt_mm.data.training_order`.

Items are dicts (see `collate` for the batch form):

- ``"audio"`` float32 ``[n]`` at ``sample_rate`` and ``"audio_context"`` float32 ``[c]``, the ``c``
  samples just before the window (zeros before the file start): the audio tokenizer needs them so
  a window's tokens equal the same span of a one-pass tokenization;
- ``"video"`` uint8 ``[T, 3, size, size]`` at ``fps``;
- ``"start"`` (seconds from the file start), ``"path"``, ``"label"`` (-1 if none), and in
  evaluation ``"window_index"`` (0 at the first window of each file: reset streaming state there).

Files are normally screened before a dataset sees them (`ttt_mm.data.index`); one that still
fails (`MediaError`, e.g. a damaged stretch of video in the middle) is logged once, recorded in a `SkipList`
and replaced by another clip. A dataset raises only when every clip it has is in the skip list,
with the reasons counted by kind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from ttt_mm.data import decode, reading_notes
from ttt_mm.data.decode import MediaError, MediaInfo, NotAsProbed, stat_reason
from ttt_mm.data.media import Media
from ttt_mm.data.skiplist import SkipList
from ttt_mm.data.sources import ClipInfo
from ttt_mm.tokenizers.base import FPS, FRAME_SIZE, SAMPLE_RATE, Tokenizer

MODALITIES = ("audio", "video")
MISSING_AUDIO = ("skip", "silence")


@dataclass(frozen=True)
class ReadSpec:
    """What to decode for each window (the tokenizers' default media clock: 16 kHz, 8 fps, 128 px).

    ``missing_audio`` applies when both streams are read and a video has no sound: ``"skip"``
    leaves the file out (a bad file), ``"silence"`` reads it with a silent audio track.
    """

    modalities: tuple[str, ...] = MODALITIES
    sample_rate: int = SAMPLE_RATE
    fps: float = FPS
    size: int = FRAME_SIZE
    audio_context_seconds: float = 0.025  # >= win_length - hop_length of the audio tokenizer
    min_seconds: float = 0.5  # shorter clips (e.g. 1-frame videos) are bad files
    missing_audio: Literal["skip", "silence"] = "skip"
    skip_silent: bool = False  # audio of digital silence: the file left out of audio-only reads, no sound with video
    min_seconds_set_by: str = "data.min_seconds"  # what a too-short file's reason names as the least length

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {self.modalities}")
        if self.missing_audio not in MISSING_AUDIO:
            raise ValueError(f"missing_audio must be one of {MISSING_AUDIO}, got {self.missing_audio!r}")

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, missing_audio: Literal["skip", "silence"] = "skip") -> ReadSpec:
        """What to decode for ``tokenizer``: its streams, rates, frame size and audio context (the
        defaults fill the fields of a stream it does not read); a clip shorter than one of its steps
        is a bad file."""
        d = tokenizer.decoding
        sample_rate = d.sample_rate or SAMPLE_RATE
        return cls(
            d.modalities,
            sample_rate=sample_rate,
            fps=d.fps or FPS,
            size=d.size or FRAME_SIZE,
            audio_context_seconds=d.context_samples / sample_rate,
            min_seconds=tokenizer.seconds_per_step,
            min_seconds_set_by="one token step",
            missing_audio=missing_audio,
        )

    @property
    def context_samples(self) -> int:
        return round(self.audio_context_seconds * self.sample_rate) if "audio" in self.modalities else 0


def _file_info(clip: ClipInfo, spec: ReadSpec) -> MediaInfo:
    """What the index found in the clip's file, or a probe of it in this process."""
    return clip.info if clip.info is not None else decode.probe(clip.media, streams=spec.modalities)


def reads_silence(info: MediaInfo, spec: ReadSpec) -> bool:
    """Whether a file's audio is read as silence: a video without (usable) sound, which includes a track of
    digital silence in training and evaluation (`ttt_mm.data.selection.select`), and ``missing_audio="silence"``."""
    return spec.missing_audio == "silence" and "video" in spec.modalities and info.has_video and not info.has_audio


def clip_span(clip: ClipInfo, spec: ReadSpec) -> tuple[float, float]:
    """``(start, end)`` seconds of the clip where every requested stream has data."""
    start = clip.start
    if isinstance(clip.media, Media):
        end, timed = clip.media.duration, spec.modalities
        start = max(start, getattr(clip.media, "offset", 0.0))  # (`TensorMedia`'s streams begin there)
    else:
        info = _file_info(clip, spec)
        timed = []  # the streams the file has: its end is theirs (silence read for a missing sound has none)
        for modality in spec.modalities:
            if getattr(info, f"has_{modality}"):
                timed.append(modality)
            elif not (modality == "audio" and reads_silence(info, spec)):
                reads = " and ".join(spec.modalities)
                raise MediaError(clip.media, f"no {modality} stream (the dataset reads {reads})")
        end = min(getattr(info, f"{modality}_duration") for modality in timed)
    what = " and ".join(timed)
    if start >= end:
        raise MediaError(  # (this span's trouble, recorded under its own name: the file's other spans stay in)
            clip.segment, f"the clip starts at {start:.10g} s, at or after the end of its {what} ({end:.3f} s)"
        )
    end = end if clip.end is None else min(end, clip.end)
    if end - start < spec.min_seconds - 1e-9:  # (a clip of exactly one step from 0.3 s: 0.04 s less a hair)
        seconds = max(0.0, end - start)
        least = (
            f"{spec.min_seconds_set_by}={spec.min_seconds:g}"
            if spec.min_seconds_set_by.startswith("data.")
            else f"less than {spec.min_seconds_set_by}, {spec.min_seconds:g} s"
        )
        raise MediaError(clip.segment, f"only {seconds:.6g} s of {what} in the clip ({least})")
    return start, end


def read_item(clip: ClipInfo, start: float, duration: float, spec: ReadSpec) -> dict:
    """One window ``[start, start + duration)`` of a clip as an item dict (raises `MediaError`)."""
    item: dict = {
        "start": start,
        "duration": duration,
        "path": clip.name,
        "label": clip.label,
        "sample_rate": spec.sample_rate,
        "fps": spec.fps,
    }
    media = clip.media
    info = clip.info
    if not isinstance(media, Media):
        _check_unchanged(clip)
    if "audio" in spec.modalities:
        sr, context = spec.sample_rate, spec.context_samples
        first = round(start * sr)
        item["audio_silent"] = False
        if isinstance(media, Media):
            samples = media.audio((first - context) / sr, (context + round(duration * sr)) / sr, sr)
        elif spec.missing_audio == "silence" and reads_silence(_file_info(clip, spec), spec):
            samples = torch.zeros(context + round(duration * sr))
            item["audio_silent"] = True  # read, not scored (`Tokens.scored`)
        else:
            backend = info.audio_backend if info is not None else None
            samples = decode.read_audio(
                media, (first - context) / sr, (context + round(duration * sr)) / sr, sr, backend
            )
        if len(samples) <= context:
            raise MediaError(clip.name, f"no audio samples at {start:.3f} s")
        item["audio_context"], item["audio"] = samples[:context], samples[context:]
    if "video" in spec.modalities:
        if isinstance(media, Media):
            frames = media.video(start, duration, spec.fps, spec.size)
        else:
            backend = info.video_backend if info is not None else None
            frames = decode.read_video(media, start, duration, spec.fps, spec.size, backend)
        if len(frames) == 0:
            raise MediaError(clip.name, f"no video frames at {start:.3f} s")
        item["video"] = frames
    return item


CHANGED = "the file changed since it was probed (its size or modification time): left out, not read unvetted"


def _check_unchanged(clip: ClipInfo) -> None:
    """Raises `MediaError` where a file is no longer the one its `MediaInfo` describes: rewritten during
    a long run, it would reach a decoder that can abort the process without being vetted again."""
    info = clip.info
    if info is None or info.mtime_ns is None:
        return
    try:
        st = os.stat(clip.media)
    except OSError as exc:
        raise NotAsProbed(clip.name, f"{stat_reason(clip.media, exc)} (since it was probed)") from None
    if (st.st_size, st.st_mtime_ns) != (info.num_bytes, info.mtime_ns):
        raise NotAsProbed(clip.name, CHANGED)


def _pad(values: list[Tensor]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(v) for v in values], dtype=torch.long)
    out = values[0].new_zeros((len(values), int(lengths.max())) + tuple(values[0].shape[1:]))
    for row, value in enumerate(values):
        out[row, : len(value)] = value
    return out, lengths


def collate(items: Sequence[dict]) -> dict:
    """Batch items, zero-padding audio and video to the longest; ``*_lengths`` and ``*_mask`` mark valid data.

    Keys: ``audio [B, n]``, ``audio_lengths [B]``, ``audio_mask [B, n]``, ``audio_context [B, c]``,
    ``video [B, T, 3, S, S]``, ``video_lengths [B]``, ``video_mask [B, T]``, ``start [B]`` float64,
    ``label [B]``, ``path`` list, ``sample_rate`` and ``fps`` (plain numbers), ``audio_silent [B]``
    (a silent track read in place of missing sound), ``window_index`` and ``duration [B]`` float64 (the
    seconds of the span read) when items have them.
    """
    batch: dict = {
        "start": torch.tensor([float(x["start"]) for x in items], dtype=torch.float64),
        "path": [x["path"] for x in items],
        "label": torch.tensor([int(x["label"]) for x in items], dtype=torch.long),
    }
    for key in ("sample_rate", "fps"):
        if key in items[0]:
            values = {x[key] for x in items}
            if len(values) != 1:
                raise ValueError(f"items in one batch disagree on {key}: {sorted(values)}")
            batch[key] = values.pop()
    for modality in MODALITIES:
        if modality in items[0]:
            data, lengths = _pad([x[modality] for x in items])
            batch[modality], batch[f"{modality}_lengths"] = data, lengths
            batch[f"{modality}_mask"] = torch.arange(data.shape[1])[None, :] < lengths[:, None]
    if "audio_context" in items[0]:
        batch["audio_context"] = torch.stack([x["audio_context"] for x in items])
    if "audio_silent" in items[0]:
        batch["audio_silent"] = torch.tensor([x["audio_silent"] for x in items], dtype=torch.bool)
    if "window_index" in items[0]:
        batch["window_index"] = torch.tensor([x["window_index"] for x in items], dtype=torch.long)
    if "duration" in items[0]:
        batch["duration"] = torch.tensor([float(x["duration"]) for x in items], dtype=torch.float64)
    return batch


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """A collated batch with its tensors on ``device`` (the rest as it is)."""
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def window_spans(start: float, end: float, window_seconds: float, least: float = 0.0) -> Iterator[tuple[float, float]]:
    """``(start, duration)`` of the consecutive windows covering ``[start, end)``; the last may be
    shorter, and is left out where it lasts no more than ``least`` seconds (unless it is the only one)."""
    count = math.ceil((end - start) / window_seconds * (1 - 1e-9))  # (relative: any window length)
    if count > 1 and end - (start + (count - 1) * window_seconds) <= least:
        count -= 1
    for k in range(count):
        t = start + k * window_seconds
        yield t, min(window_seconds, end - t)


def reads_nothing(spec: ReadSpec) -> float:
    """The longest window that reads no sample or no frame (`read_item`: a sample for each half of a
    1/sample_rate, a frame for more than a millionth of a 1/fps): a file a fraction of a sample longer
    than whole windows (a 44.1 kHz file read at 16 kHz, say) ends in such a tail, which is no fault."""
    audio = 0.5 / spec.sample_rate if "audio" in spec.modalities else 0.0  # (a clock only for a stream read)
    return max(audio, 1e-6 / spec.fps if "video" in spec.modalities else 0.0)


def walk(clip: ClipInfo, window_seconds: float, spec: ReadSpec) -> Iterator[dict]:
    """Consecutive windows covering the clip; the last may be shorter (one too short to read anything
    of a stream is left out: `reads_nothing`). Raises `MediaError`. In a DataLoader worker, each read
    is noted while it lasts (`reading_notes`)."""
    spans = window_spans(*clip_span(clip, spec), window_seconds, reads_nothing(spec))
    for k, (t, duration) in enumerate(spans):
        with reading_notes.reading(clip.name):
            item = read_item(clip, t, duration, spec)
        item["window_index"] = k
        yield item


class SequentialWindows(IterableDataset):
    """Evaluation: every clip in order, whole, as consecutive windows; ranks and workers take every n-th clip
    (every rank at least one it can read: with fewer such clips than ranks, some are scored twice).

    A file that fails is logged, recorded in the skip list and left (windows already yielded stay).
    """

    def __init__(
        self,
        clips: Sequence[ClipInfo],
        window_seconds: float,
        spec: ReadSpec = ReadSpec(),
        skip_list: SkipList | str | None = None,
    ) -> None:
        self.skips = skip_list if isinstance(skip_list, SkipList) else SkipList(skip_list)
        self.clips, self.window_seconds, self.spec = list(clips), window_seconds, spec
        _check_grid(window_seconds, spec)

    def __iter__(self) -> Iterator[dict]:
        clips = self.clips
        if clips and torch.distributed.is_available() and torch.distributed.is_initialized():  # one share per rank
            # a rank with nothing to evaluate runs no forward, while the others' forwards are collectives
            # under FSDP (and DDP's buffer broadcast): with fewer clips than ranks, such a rank evaluates
            # a clip another rank also does (scored twice: val/* leans towards it)
            rank = torch.distributed.get_rank()
            clips = clips[rank :: torch.distributed.get_world_size()] or [clips[rank % len(clips)]]
            if self.skips.holds_all(clips) and (readable := [c for c in self.clips if not self.skips.holds(c)]):
                clips = [readable[rank % len(readable)]]  # (its share failed before: the pass had no batch of its own)
        worker = get_worker_info()
        clips = clips if worker is None else clips[worker.id :: worker.num_workers]
        for clip in clips:
            if self.skips.holds(clip):
                continue
            try:
                yield from walk(clip, self.window_seconds, self.spec)
            except MediaError as exc:
                self.skips.add(exc.path, exc.reason)


def off_grid(window_seconds: float, spec: ReadSpec) -> str | None:
    """Why consecutive windows of this length would not start on every stream's sample or frame grid
    (with a length that would), or None when they do."""
    rates = {"audio": (spec.sample_rate, "sample_rate"), "video": (spec.fps, "fps")}
    for rate, name in (rates[m] for m in spec.modalities):
        ticks = window_seconds * rate
        if abs(ticks - round(ticks)) > 1e-6:
            return f"is not a whole number of 1/{name} ({ticks:.10g} ticks); e.g. {max(1, round(ticks)) / rate:.10g}"
    return None


def _check_grid(window_seconds: float, spec: ReadSpec) -> None:
    if (why := off_grid(window_seconds, spec)) is not None:
        raise ValueError(f"window_seconds={window_seconds} {why}")


def iter_windows(
    media: str | Media,
    window_seconds: float,
    spec: ReadSpec = ReadSpec(),
    start: float = 0.0,
    end: float | None = None,
    info: MediaInfo | None = None,
) -> Iterator[dict]:
    """Stream one file (or other `Media`: a synthetic clip, tensors) as consecutive collated windows (batch size 1).

    Tokenizing the windows and joining the tokens gives the tokens of one pass over the whole span
    when ``window_seconds`` is a multiple of the tokenizer's ``seconds_per_step`` (0.04 s audio,
    0.25 s video and audio-visual at the defaults). A bad file raises `MediaError`. ``info`` is the
    file's entry in the dataset index (`ClipInfo.info`): with it, the file is not probed again. Without
    it the file is probed in this process, where a decoder can abort the process on some corrupt files
    (decord's ``std::bad_alloc``): for files you do not trust, take ``info`` from `index_clips`, which
    probes in worker processes, or read through ``Embedder.windows``, which does so itself.
    """
    _check_grid(window_seconds, spec)
    clip = ClipInfo(media, start=start, end=end, info=info)
    for item in walk(clip, window_seconds, spec):
        yield collate([item])
