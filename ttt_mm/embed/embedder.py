"""Embeddings from a trained checkpoint: media of any length in, one vector per token (or per fixed
hop) with its timestamp and modality out, plus a pooled vector per input.

    from ttt_mm.embed import Embedder
    embedder = Embedder.from_checkpoint("last.ckpt")           # layer=-1: the last block
    out = embedder.embed_file("talk.flac")                     # streamed window by window
    out.embeddings.shape, out.timestamps[:3], out.pooled.shape   # [N, D], seconds, [D]

Streaming: an input is cut into consecutive windows of ``window_seconds`` (a multiple of the
tokenizer's ``seconds_per_step``); each window is tokenized and run through the backbone with the
state left by the previous window. The TTT state has a fixed size, so memory is that of one window
whatever the length of the file, and the rows equal those of one pass over the whole input (up to
float rounding; ``tests/test_embed.py`` checks it). An attention backbone streams too, but its KV
cache grows with the input.

Which tokens become rows: tokens come in steps (``tokens_per_step`` tokens covering
``seconds_per_step``; one audio token, or a video tubelet's patches, or an audio-visual step's
audio tokens then patches). A step becomes rows only when all of its tokens are real, so the end
of an input that does not fill a whole step (at most one step: 40 ms of audio or 0.25 s of video at
the defaults) is left out. Row timestamps are the start of each token's media span, in seconds from
the file start; `ttt_mm.embed.clock.Clock` describes them compactly (this is what the ``.json`` sidecar stores).

Downsampling (``hop_seconds``, e.g. 0.5): rows are means over the tokens of the steps whose start
falls in ``[start + k * hop, start + (k + 1) * hop)``, timestamped at the bin start. The hop must be
at least one step, so no bin is empty. Pooling (``pool``) runs over all token rows before
downsampling: ``"mean"``, ``"max"`` or ``"mean_std"`` (mean and standard deviation concatenated).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import numbers
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ttt_mm.backbone import Backbone, BackboneState
from ttt_mm.checkpoint import load_parts, resolve_device
from ttt_mm.data.datasets import ReadSpec, clip_span, collate, iter_windows, to_device, walk
from ttt_mm.data.decode import MediaError, MediaInfo
from ttt_mm.data.index import IndexCacheError
from ttt_mm.data.media import TensorMedia
from ttt_mm.data.selection import index_clips
from ttt_mm.data.sources import ClipInfo
from ttt_mm.embed.clock import MIXED, Clock
from ttt_mm.embed.reducers import POOLS, HopBins, Pool, PoolKind
from ttt_mm.tokenizers import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_WINDOW_TOKENS = 1024
"""Tokens per streaming window by default: what one window costs in memory does not depend on the
tokenizer (41 s of audio at 25 tokens/s, 3.75 s of 128 px audio-visual media at 276 tokens/s)."""
EMBEDDING_OPTIONS = ("layer", "norm", "hop_seconds", "pool", "window_seconds")
"""The `Embedder` arguments each output's sidecar records: all but ``window_seconds`` decide its rows (the
window only how they are computed, exactly: a change in it redoes no output)."""


@dataclass
class Embeddings:
    """Rows of one input (or of a batch of equally long inputs, with a leading batch axis).

    ``embeddings`` ``[N, D]`` or ``[B, N, D]`` float32; ``timestamps`` ``[N]`` float64 seconds and
    ``modality`` ``[N]`` int8 (shared by every batch row); ``pooled`` ``[P]`` or ``[B, P]`` (None
    when pooling is off); ``clock`` is the compact form of the timestamps; ``silent_track``
    (`Stream.silent_track`): whether silence stood in for a video's missing sound, None for a model of
    one stream.
    """

    embeddings: Tensor
    timestamps: Tensor
    modality: Tensor
    pooled: Tensor | None
    clock: Clock
    silent_track: bool | None = None


# ------------------------------------------------------------------------------------- embedder


_SCALED = {torch.int16: "divide by 32768", torch.uint8: "subtract 128, then divide by 128"}
"""How integer PCM samples of a type that says their bit depth are brought to [-1, 1]."""


class Embedder:
    """Frozen tokenizer + backbone of a trained model, streaming inputs of any length.

    Args:
        tokenizer, backbone: the trained parts (``SequenceModel.tokenizer`` and ``.backbone``).
        layer: block whose output is returned (index into ``range(depth)``, negatives allowed; -1 the last).
        norm: apply the backbone's final RMSNorm to that output (for ``layer=-1`` this is exactly what
            the prediction head reads).
        hop_seconds: downsample to one row per ``hop_seconds`` (None: one row per token).
        pool: pooled vector per input: ``"mean"``, ``"max"``, ``"mean_std"`` or None.
        window_seconds: streaming window, a multiple of the tokenizer's ``seconds_per_step`` (None:
            whole steps of about `DEFAULT_WINDOW_TOKENS` tokens). Results do not depend on it.
        device: where to run (None: CUDA if available, else CPU). The parts are put in eval mode and
            moved there.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        backbone: Backbone,
        layer: int = -1,
        norm: bool = True,
        hop_seconds: float | None = None,
        pool: PoolKind | None = "mean",
        window_seconds: float | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -backbone.depth <= layer < backbone.depth:
            raise ValueError(
                f"layer must be a block's index from {-backbone.depth} to {backbone.depth - 1} (-1: the last) for a "
                f"backbone of depth {backbone.depth}; got {layer!r}"
            )
        if not isinstance(norm, bool):  # (a string such as "foo" or "false" would read as true)
            raise ValueError(f"norm must be True or False; got {norm!r}")
        if pool is not None and pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS} or None; got {pool!r}")
        step = float(tokenizer.seconds_per_step)
        for key, value in (("hop_seconds", hop_seconds), ("window_seconds", window_seconds)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number of seconds; got {value}")
        if hop_seconds is not None and hop_seconds <= 0:
            raise ValueError(
                f"hop_seconds must be a positive number of seconds (at least one token step, {step} s); "
                f"got {hop_seconds}"
            )
        if hop_seconds is not None and hop_seconds < step - 1e-9:
            raise ValueError(
                f"hop_seconds={hop_seconds} is shorter than one token step ({step} s): some bins would be empty"
            )
        if window_seconds is not None and window_seconds <= 0:
            raise ValueError(
                f"window_seconds must be a positive number of seconds (a multiple of the tokenizer's step of "
                f"{step} s); got {window_seconds}"
            )
        steps = max(1, round(DEFAULT_WINDOW_TOKENS / tokenizer.tokens_per_step))
        window = steps * step if window_seconds is None else float(window_seconds)
        if (whole := tokenizer.whole_window(window)) is None:
            raise ValueError(
                f"window_seconds={window} must be a multiple of the tokenizer's step of {step} s "
                f"(e.g. {tokenizer.seconds_text(max(1, round(window / step)))})"
            )
        window = whole
        if not backbone.bounded_state:
            log.warning("the backbone's state grows with the input (an attention KV cache): memory is not constant")
        self.device = resolve_device(device)
        self.tokenizer, self.backbone = tokenizer.eval().to(self.device), backbone.eval().to(self.device)
        self.layer, self.norm, self.pool = layer % backbone.depth, norm, pool
        self.hop_seconds = None if hop_seconds is None else float(hop_seconds)
        self.window_seconds, self.seconds_per_step = window, step
        self.tokens_per_step = int(tokenizer.tokens_per_step)
        self.dim = backbone.dim
        self.decoding = tokenizer.decoding
        d = self.decoding  # shortcuts to what the model reads
        self.modalities, self.sample_rate, self.fps, self.size = d.modalities, d.sample_rate, d.fps, d.size

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        layer: int = -1,
        device: str | torch.device | None = None,
        norm: bool = True,
        hop_seconds: float | None = None,
        pool: PoolKind | None = "mean",
        window_seconds: float | None = None,
        weights_only: bool = True,
    ) -> Embedder:
        """Build from a ``SequenceModel`` checkpoint; arguments as in the constructor, ``weights_only`` as
        in `ttt_mm.checkpoint` (the one loader: ``False`` only for files you trust)."""
        tokenizer, backbone, _ = load_parts(path, weights_only)
        return cls(tokenizer, backbone, layer, norm, hop_seconds, pool, window_seconds, device)

    def read_spec(self) -> ReadSpec:
        """What to decode for this tokenizer: its streams, rates and frame size (the others unused)."""
        return ReadSpec.for_tokenizer(self.tokenizer, missing_audio="silence")  # AV models embed mute videos too

    def span(
        self, path: str | os.PathLike, start: float = 0.0, end: float | None = None, info: MediaInfo | None = None
    ) -> tuple[float, float]:
        """``(start, end)`` seconds of the file that will be embedded (raises `MediaError`). ``info``: the
        file's entry in the dataset index (`ClipInfo.info`); without it the file is indexed first, probed
        in a worker process (`vetted`)."""
        _check_span(start, end)
        info = info or self.vetted(path, start, end)
        return clip_span(ClipInfo(os.fspath(path), start=start, end=end, info=info), self.read_spec())

    def windows(
        self, path: str | os.PathLike, start: float = 0.0, end: float | None = None, info: MediaInfo | None = None
    ) -> Iterator[dict]:
        """The file's consecutive window batches (decoding is lazy; a bad file raises `MediaError`);
        ``info`` as in `span`."""
        _check_span(start, end)
        info = info or self.vetted(path, start, end)
        return iter_windows(os.fspath(path), self.window_seconds, self.read_spec(), start, end, info)

    def vetted(self, path: str | os.PathLike, start: float = 0.0, end: float | None = None) -> MediaInfo | None:
        """The file's entry in the dataset index (`ttt_mm.data.index`, cached per folder; in a temporary
        folder where that cannot be written), probed in a worker process: a file that crashes or hangs a
        decoder raises `MediaError` instead of taking this process down (probed here, it reached decord in
        the caller's process). None in a daemonic process (a DataLoader worker: it cannot start the
        index's workers, and is itself one), where the file is then probed."""
        if multiprocessing.current_process().daemon:
            return None
        clips = [ClipInfo(os.fspath(path), start=start, end=end)]
        try:
            selection = index_clips(clips, self.read_spec())
        except IndexCacheError:
            with tempfile.TemporaryDirectory() as cache:
                selection = index_clips(clips, self.read_spec(), cache_dir=cache)
        for name, reason in selection.rejected.items():
            raise MediaError(name, reason)
        return selection.clips[0].info

    def stream(self, start: float = 0.0) -> Stream:
        """A fresh `Stream` for an input whose first window starts at ``start`` seconds."""
        return Stream(self, start)

    def embed_windows(self, windows: Iterable[Mapping[str, Any]], start: float = 0.0) -> Embeddings:
        """Embed consecutive window batches of one input and gather the rows in memory."""
        stream = self.stream(start)
        parts = [stream.push(batch) for batch in windows]
        parts.append(stream.finish())
        rows = torch.cat(parts, dim=1)
        clock = stream.clock
        return Embeddings(rows, clock.timestamps(), clock.modality(), stream.pooled(), clock, stream.silent_track)

    def embed_file(self, path: str | os.PathLike, start: float = 0.0, end: float | None = None) -> Embeddings:
        """Rows of a media file (or of its span ``[start, end)``) ``[N, D]``; raises `MediaError` for a bad file.

        Rows are gathered in memory (an hour of audio at 25 tokens/s and D = 512 is 184 MB in
        float32); the embed command instead writes them to disk window by window. The file is probed
        first in a worker process (the dataset index, `ttt_mm.data.index`, cached per folder), so a
        file that crashes or hangs a decoder raises `MediaError` instead of taking this process down.
        """
        _check_span(start, end)
        info = self.vetted(path, start, end)
        first, _ = self.span(path, start, end, info)
        out = self.embed_windows(self.windows(path, start, end, info), start=first)
        out.embeddings = out.embeddings[0]
        out.pooled = None if out.pooled is None else out.pooled[0]
        return out

    def embed_tensor(self, audio: Tensor | None = None, video: Tensor | None = None, start: float = 0.0) -> Embeddings:
        """Rows of decoded media, streamed in windows like a file.

        ``audio``: float ``[n]`` or ``[B, n]`` in [-1, 1], mono at `sample_rate`; ``video``: uint8
        ``[T, 3, size, size]`` or ``[B, T, 3, size, size]`` at `fps` (what the tokenizer reads). With
        a batch axis, every row is a separate input of the same length and the result has a batch
        axis too. Audio and video cover the same span, within a frame (a ValueError otherwise). The
        tensors are cut into windows by the same code as files (`ttt_mm.data.media.TensorMedia`), with
        ``start`` the time of their first sample.
        """
        if isinstance(start, bool) or not isinstance(start, numbers.Real) or not math.isfinite(start):
            raise ValueError(f"start must be a finite time in seconds; got {start!r}")  # (said: NaN to integer)
        inputs, batched = _tensor_inputs(self, audio, video, start)
        rows = [walk(ClipInfo(media, start=start), self.window_seconds, self.read_spec()) for media in inputs]
        try:  # the rows have the same length, so the same windows: each window is one batch
            out = self.embed_windows((collate(items) for items in zip(*rows)), start=start)
        except MediaError as exc:
            raise ValueError(f"in-memory input: {exc.reason}") from None
        if not batched:
            out.embeddings = out.embeddings[0]
            out.pooled = None if out.pooled is None else out.pooled[0]
        return out


# ------------------------------------------------------------------------------------- streaming


class Stream:
    """One input being embedded: `push` its window batches in order, then `finish`. A batch of several
    rows holds equally long inputs (one clock for all: a window whose rows end apart is refused); a
    window that ends inside a step (padded) is the input's last.

    Each call returns the rows that became final, ``[B, n, D]`` float32 on the CPU (n may be 0);
    `clock` and `pooled` describe everything returned so far.
    """

    def __init__(self, embedder: Embedder, start: float = 0.0) -> None:
        self.embedder, self.start = embedder, float(start)
        self.state: BackboneState | None = None
        self.batch_size = 1
        self.num_tokens = 0
        self._pool = None if embedder.pool is None else Pool(embedder.pool)
        self._bins = None
        self._end_step = 0  # (where the last window ended, in steps from ``start``)
        self._finished = False
        self._input_ended: float | None = None  # (seconds from ``start`` where a window's padding began)
        reads_both = {"audio", "video"} <= set(embedder.modalities)
        self.silent_track: bool | None = False if reads_both else None
        """Whether silence stood in for the sound of a video without usable sound (a batch's ``audio_silent``),
        which the audio rows and the pooled vector then embed; None for a model of one stream."""
        if embedder.hop_seconds is None:
            tok = embedder.tokenizer
            self.clock = Clock(self.start, embedder.seconds_per_step, tok.slot_offsets, tok.slot_modality)
        else:
            modalities = set(embedder.tokenizer.slot_modality)
            mixed = modalities.pop() if len(modalities) == 1 else MIXED
            self.clock = Clock(self.start, embedder.hop_seconds, (0.0,), (mixed,))
            self._bins = HopBins(embedder.seconds_per_step, embedder.hop_seconds, embedder.tokens_per_step, self.clock)

    @torch.inference_mode()
    def push(self, batch: Mapping[str, Any]) -> Tensor:
        """Embed the next window (a collated batch as `ttt_mm.data.iter_windows` yields)."""
        if self._finished:
            raise RuntimeError("this stream is finished: embed another input with a new Embedder.stream()")
        e = self.embedder
        batch = to_device(batch, e.device)
        window_start = float(torch.as_tensor(batch.get("start", 0.0), dtype=torch.float64).reshape(-1)[0])
        first = (window_start - self.start) / e.seconds_per_step
        if abs(first - round(first)) > 1e-6:
            fix = (  # (a first window: the stream was opened elsewhere; a later one: a span starts off the grid)
                f"open the stream where its first window starts, Embedder.stream(start={window_start!r})"
                if self.state is None
                else "start every span and window of one stream a whole number of steps after its start"
            )
            raise ValueError(
                f"a window starts {window_start - self.start:.6f} s into the input (from the stream's start, "
                f"{self.start:g} s), not a whole number of {e.seconds_per_step} s steps: {fix}"
            )
        if self._input_ended is not None:  # (its state read padding; the steps after it would follow a gap)
            raise ValueError(
                f"the window before ended the input (padding from {self._input_ended:g} s into it): a window that "
                "ends inside a step is an input's last; embed another input with a new Embedder.stream()"
            )
        if round(first) < self._end_step:  # (the state has read past it: its rows would be wrong and out of order)
            raise ValueError(
                f"a window starts {window_start - self.start:g} s into the input, before the end of the last one "
                f"({self._end_step * e.seconds_per_step:g} s): push a stream's windows in order, without overlap"
            )
        tokens = e.tokenizer(batch)  # (every check before the state reads the window: a refused one changes nothing)
        if self.silent_track is not None and "audio_silent" in batch:
            self.silent_track = self.silent_track or bool(batch["audio_silent"].any())
        k = e.tokens_per_step
        if tokens.embeddings.shape[1] % k:
            raise ValueError(
                f"the tokenizer returned {tokens.embeddings.shape[1]} tokens, not a whole number of steps of {k}"
            )
        _, hidden, self.state = e.backbone.forward_intermediates(tokens.embeddings, self.state, layers=(e.layer,))
        h = e.backbone.norm(hidden[0]) if e.norm else hidden[0]  # [B, N, D]
        B, N, D = h.shape
        self._end_step = round(first) + N // k
        self.batch_size = B
        real = tokens.mask.reshape(B, N // k, k).all(-1)  # [B, S] steps whose tokens are all real
        if (real != real[:1]).any():  # (one clock for all rows: a longer row's steps would be dropped unsaid)
            raise ValueError(
                f"the {B} rows of this window are not equally long (padding in some rows where others have "
                "sound or frames): a stream's rows share one clock; stream inputs of other lengths apart"
            )
        keep = real.all(0)  # [S] (the same in every row)
        if len(keep) and not keep[-1]:  # padding: the input ended in this window
            self._input_ended = (round(first) + int(keep.sum())) * e.seconds_per_step
        steps = round(first) + keep.nonzero().squeeze(1).cpu()
        rows = h.reshape(B, N // k, k, D)[:, keep].reshape(B, -1, D).float().cpu()
        self.num_tokens += rows.shape[1]
        if self._pool is not None:
            self._pool.add(rows)
        if self._bins is None:
            self.clock.add_runs(steps)
            return rows
        return self._bins.push(rows, steps)

    def finish(self) -> Tensor:
        """Rows still held back (the last open bin when downsampling); the stream takes no more windows."""
        self._finished = True
        if self._bins is None:
            return torch.zeros(self.batch_size, 0, self.embedder.dim)
        return self._bins.finish(self.batch_size, self.embedder.dim)

    def pooled(self) -> Tensor | None:
        """The pooled vector of every batch row ``[B, P]`` over all tokens so far (None: pooling off)."""
        return None if self._pool is None else self._pool.result()


MAX_PEAK = 2.0
"""The loudest float sample `embed_tensor` takes: twice full scale, past any real recording's overs."""


def _tensor_inputs(e: Embedder, audio: Tensor | None, video: Tensor | None, start: float) -> tuple[list, bool]:
    """``embed_tensor``'s inputs checked and split into one `TensorMedia` per batch row; and whether
    they had a batch axis."""
    given: dict[str, Tensor] = {}
    batched = None
    reads = " and ".join(e.modalities)
    for name, value in (("audio", audio), ("video", video)):
        if value is not None and name not in e.modalities:
            raise ValueError(f"this model reads {reads} only; it takes no {name}")
    for name, value, dims in (("audio", audio, 1), ("video", video, 4)):
        if value is None and name in e.modalities:
            raise ValueError(f"this model reads {reads}: pass {name}=")
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor; got {type(value).__name__} (a NumPy array: torch.from_numpy)"
            )
        if value.dim() not in (dims, dims + 1):
            raise ValueError(
                f"{name} must have {dims} dimensions, or {dims + 1} with a batch axis; got {tuple(value.shape)}"
            )
        if batched is not None and batched != (value.dim() == dims + 1):
            shapes = f"audio {tuple(audio.shape)}, video {tuple(value.shape)}"
            if batched:  # audio [2, n] beside one clip of video: stereo as decoders give it, not a batch
                raise ValueError(
                    f"audio has a batch axis and video none ({shapes}): a [channels, n_samples] array? give mono "
                    "samples, e.g. audio.mean(dim=0), or both with a batch axis"
                )
            raise ValueError(f"give audio and video both with or both without a batch axis ({shapes})")
        batched = value.dim() == dims + 1
        given[name] = value if batched else value.unsqueeze(0)
        if given[name].shape[0] == 0:  # nothing to embed
            raise ValueError(f"{name} has an empty batch (0 rows): shape {tuple(value.shape)}")
        if given[name].shape[1] == 0:
            raise ValueError(f"{name} has no {'samples' if name == 'audio' else 'frames'}: shape {tuple(value.shape)}")
    if "video" in given:
        v = given["video"]
        if v.dtype != torch.uint8 or tuple(v.shape[2:]) != (3, e.size, e.size):
            raise ValueError(
                f"video must be uint8 [.., T, 3, {e.size}, {e.size}] at {e.fps} fps; got {v.dtype} {tuple(v.shape)}"
            )
    if "audio" in given:
        step = round(e.sample_rate * e.seconds_per_step)
        rows, n = given["audio"].shape
        if batched and n < step <= rows:  # e.g. [n_samples, channels] as soundfile reads it
            raise ValueError(
                f"audio [B, n] has rows of {n} samples, shorter than one token step ({step} samples), and {rows} of "
                f"them: a [n_samples, channels] array? give mono samples, e.g. audio.mean(dim=1)"
            )
        if not (dtype := given["audio"].dtype).is_floating_point:  # integer samples would be embedded unscaled
            scale = _SCALED.get(dtype, "divide by the full scale of their bit depth, 32768 for 16-bit samples")
            raise ValueError(f"audio must be floating point in [-1, 1]; got {dtype} (integer samples: {scale})")
        # NaN or inf samples would give NaN embeddings without a word
        bad = (~torch.isfinite(given["audio"])).any(dim=1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"audio has NaN or infinite samples (rows {bad[:10]}{' ...' if len(bad) > 10 else ''})")
        # integer samples turned to float unscaled would be embedded as they are: far past full scale
        loud = (given["audio"].abs().amax(dim=1) > MAX_PEAK).nonzero().flatten().tolist()
        if loud:
            raise ValueError(
                f"audio peaks above {MAX_PEAK:g} (rows {loud[:10]}{' ...' if len(loud) > 10 else ''}): samples "
                "must be in [-1, 1] (integer samples: divide by their full scale, e.g. 32768 for int16)"
            )
    if len({x.shape[0] for x in given.values()}) > 1:
        raise ValueError(f"audio and video batch sizes differ: {[tuple(x.shape) for x in given.values()]}")
    if len(given) == 2:  # (what is read ends where the shorter does: the rest of the longer was dropped unsaid)
        seconds = given["audio"].shape[1] / e.sample_rate, given["video"].shape[1] / e.fps
        if abs(seconds[0] - seconds[1]) > 1 / e.fps:
            raise ValueError(
                f"audio lasts {seconds[0]:.3f} s and video {seconds[1]:.3f} s: give both for the same span (within "
                f"a frame, 1/{e.fps:g} s); what is read would end where the shorter does"
            )
    rows = next(iter(given.values())).shape[0]
    samples, frames = given.get("audio"), given.get("video")
    inputs = [
        TensorMedia(
            None if samples is None else samples[r].float().cpu(),
            None if frames is None else frames[r].cpu(),
            e.sample_rate,
            e.fps,
            offset=start,
            name=f"<tensor row {r}>",
        )
        for r in range(rows)
    ]
    return inputs, bool(batched)


def _check_span(start: float, end: float | None = None) -> None:
    """A span of a file: times in it (a negative start was read as made-up silence before the
    audio), the end (None: the file's) after the start."""
    for name, value in (("start", start), ("end", end)):
        if name == "end" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
            raise ValueError(f"{name} must be a time in seconds >= 0; got {value!r}")
    if end is not None and end <= start:
        raise ValueError(f"end {end:g} is {'before' if end < start else 'at'} start {start:g}; the span would be empty")
