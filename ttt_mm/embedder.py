"""Embeddings from a trained checkpoint: media of any length in, one vector per token (or per fixed
hop) with its timestamp and modality out, plus a pooled vector per input.

    from ttt_mm.embedder import Embedder
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
the file start; `Clock` describes them compactly (this is what the ``.json`` sidecar stores).

Downsampling (``hop_seconds``, e.g. 0.5): rows are means over the tokens of the steps whose start
falls in ``[start + k * hop, start + (k + 1) * hop)``, timestamped at the bin start. The hop must be
at least one step, so no bin is empty. Pooling (``pool``) runs over all token rows before
downsampling: ``"mean"``, ``"max"`` or ``"mean_std"`` (mean and standard deviation concatenated).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import Tensor

from ttt_mm.backbone import Backbone
from ttt_mm.data.datasets import ReadSpec, clip_span, iter_windows
from ttt_mm.data.sources import ClipInfo
from ttt_mm.embed_stream import MIXED, Clock, Stream
from ttt_mm.tokenizers import AUDIO, VIDEO, AudioTokenizer, AVTokenizer, Tokenizer, VideoTokenizer

log = logging.getLogger(__name__)

POOLS = ("mean", "max", "mean_std")
DEFAULT_WINDOW_TOKENS = 1024
"""Tokens per streaming window by default: what one window costs in memory does not depend on the
tokenizer (41 s of audio at 25 tokens/s, 3.75 s of 128 px audio-visual media at 276 tokens/s)."""
__all__ = ["MIXED", "POOLS", "Clock", "Embedder", "Embeddings", "Stream", "load_parts"]


@dataclass
class Embeddings:
    """Rows of one input (or of a batch of equally long inputs, with a leading batch axis).

    ``embeddings`` ``[N, D]`` or ``[B, N, D]`` float32; ``timestamps`` ``[N]`` float64 seconds and
    ``modality`` ``[N]`` int8 (shared by every batch row); ``pooled`` ``[P]`` or ``[B, P]`` (None
    when pooling is off); ``clock`` is the compact form of the timestamps.
    """

    embeddings: Tensor
    timestamps: Tensor
    modality: Tensor
    pooled: Tensor | None
    clock: Clock


# ------------------------------------------------------------------------------------- embedder


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
        pool: Literal["mean", "max", "mean_std"] | None = "mean",
        window_seconds: float | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if not -backbone.depth <= layer < backbone.depth:
            raise ValueError(f"layer={layer} is out of range for a backbone of depth {backbone.depth}")
        if pool is not None and pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS} or None; got {pool!r}")
        step = float(tokenizer.seconds_per_step)
        if hop_seconds is not None and hop_seconds < step - 1e-9:
            raise ValueError(
                f"hop_seconds={hop_seconds} is shorter than one token step ({step} s): some bins would be empty"
            )
        steps = max(1, round(DEFAULT_WINDOW_TOKENS / tokenizer.tokens_per_step))
        window = steps * step if window_seconds is None else float(window_seconds)
        if window < step or abs(window / step - round(window / step)) > 1e-6:
            raise ValueError(
                f"window_seconds={window} must be a multiple of the tokenizer's step of {step} s "
                f"(e.g. {max(1, round(window / step)) * step:g})"
            )
        if backbone.mixer == "attention":
            log.warning("attention backbone: its KV cache grows with the input, so memory is not constant")
        self.device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer, self.backbone = tokenizer.eval().to(self.device), backbone.eval().to(self.device)
        self.layer, self.norm, self.pool = layer % backbone.depth, norm, pool
        self.hop_seconds = None if hop_seconds is None else float(hop_seconds)
        self.window_seconds, self.seconds_per_step = window, step
        self.tokens_per_step = int(tokenizer.tokens_per_step)
        self.dim = backbone.dim
        self.modalities, self.modality_ids, self.sample_rate, self.fps, self.size = _media(tokenizer)
        self.slot_offsets, self.slot_modality = _slots(tokenizer)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        layer: int = -1,
        device: str | torch.device | None = None,
        norm: bool = True,
        hop_seconds: float | None = None,
        pool: Literal["mean", "max", "mean_std"] | None = "mean",
        window_seconds: float | None = None,
    ) -> Embedder:
        """Build from a ``SequenceModel`` checkpoint (see `load_parts`); arguments as in the constructor."""
        tokenizer, backbone, _ = load_parts(path)
        return cls(tokenizer, backbone, layer, norm, hop_seconds, pool, window_seconds, device)

    def read_spec(self) -> ReadSpec:
        """What to decode for this tokenizer: its streams, rates and frame size."""
        context = getattr(self._audio_tokenizer(), "context_samples", 0)
        return ReadSpec(
            self.modalities,
            sample_rate=self.sample_rate or 16000,
            fps=self.fps or 8.0,
            size=self.size or 128,
            audio_context_seconds=max(0.025, context / (self.sample_rate or 16000)),
            min_seconds=self.seconds_per_step,
            missing_audio="silence",  # an audio-visual model embeds videos without sound too
        )

    def span(self, path: str | os.PathLike, start: float = 0.0, end: float | None = None) -> tuple[float, float]:
        """``(start, end)`` seconds of the file that will be embedded (raises `MediaError`)."""
        return clip_span(ClipInfo(os.fspath(path), start=start, end=end), self.read_spec())

    def windows(self, path: str | os.PathLike, start: float = 0.0, end: float | None = None) -> Iterator[dict]:
        """The file's consecutive window batches (decoding is lazy; a bad file raises `MediaError`)."""
        return iter_windows(os.fspath(path), self.window_seconds, self.read_spec(), start=start, end=end)

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
        return Embeddings(rows, clock.timestamps(), clock.modality(), stream.pooled(), clock)

    def embed_file(self, path: str | os.PathLike, start: float = 0.0, end: float | None = None) -> Embeddings:
        """Rows of a media file (or of its span ``[start, end)``) ``[N, D]``; raises `MediaError` for a bad file.

        Rows are gathered in memory (an hour of audio at 25 tokens/s and D = 512 is 184 MB in
        float32); the embed command instead writes them to disk window by window.
        """
        first, _ = self.span(path, start, end)
        out = self.embed_windows(self.windows(path, start, end), start=first)
        out.embeddings = out.embeddings[0]
        out.pooled = None if out.pooled is None else out.pooled[0]
        return out

    def embed_tensor(self, audio: Tensor | None = None, video: Tensor | None = None, start: float = 0.0) -> Embeddings:
        """Rows of decoded media, streamed in windows like a file.

        ``audio``: float ``[n]`` or ``[B, n]`` mono at `sample_rate`; ``video``: uint8
        ``[T, 3, size, size]`` or ``[B, T, 3, size, size]`` at `fps` (what the tokenizer reads). With
        a batch axis, every row is a separate input of the same length and the result has a batch
        axis too.
        """
        batch = _tensor_batch(self, audio, video)
        out = self.embed_windows(_tensor_windows(self, batch, start), start=start)
        if not batch["batched"]:
            out.embeddings = out.embeddings[0]
            out.pooled = None if out.pooled is None else out.pooled[0]
        return out

    def _audio_tokenizer(self) -> AudioTokenizer | None:
        t = self.tokenizer
        return t if isinstance(t, AudioTokenizer) else t.audio if isinstance(t, AVTokenizer) else None


def load_parts(path: str | os.PathLike) -> tuple[Tokenizer, Backbone, dict]:
    """Tokenizer, backbone and hyperparameters of a ``SequenceModel`` checkpoint, without Lightning.

    They are built exactly as ``SequenceModel.__init__`` builds them (``instantiate`` of the saved
    ``tokenizer`` and ``backbone`` mappings) and their weights loaded strictly. Checkpoints are
    pickles (Lightning saves Hydra containers in them): load only files you trust.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint: {str(exc).splitlines()[0]}") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hparams or "tokenizer" not in hparams or "backbone" not in hparams or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a ttt_mm SequenceModel checkpoint (no tokenizer/backbone hyperparameters)")
    try:
        tokenizer, backbone = instantiate(hparams["tokenizer"]), instantiate(hparams["backbone"])
    except InstantiationException as exc:  # e.g. a checkpoint from a version with other classes
        raise ValueError(f"cannot rebuild the model of {path}: {str(exc).splitlines()[0]}") from None
    for name, module in (("tokenizer", tokenizer), ("backbone", backbone)):
        prefix = name + "."
        weights = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        module.load_state_dict(weights, strict=True)
    return tokenizer, backbone, dict(hparams)


def _media(tokenizer: Tokenizer) -> tuple[tuple[str, ...], tuple[int, ...], int | None, float | None, int | None]:
    """(streams to decode, modality ids, sample rate, fps, frame size) of a tokenizer."""
    if isinstance(tokenizer, AVTokenizer):
        a, v = tokenizer.audio, tokenizer.video
        return ("audio", "video"), (AUDIO, VIDEO), a.sample_rate, v.fps, v.size
    if isinstance(tokenizer, AudioTokenizer):
        return ("audio",), (AUDIO,), tokenizer.sample_rate, None, None
    if isinstance(tokenizer, VideoTokenizer):
        return ("video",), (VIDEO,), None, tokenizer.fps, tokenizer.size
    raise TypeError(
        f"cannot tell which media a {type(tokenizer).__name__} reads (expected an Audio, Video or AV tokenizer)"
    )


def _slots(tokenizer: Tokenizer) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Offset (seconds from the step start) and modality of each token of a step, in token order
    (see `ttt_mm.tokenizers.av`: a step's audio tokens, then its video patches)."""
    if isinstance(tokenizer, AVTokenizer):
        audio = tuple(round(j * tokenizer.audio.seconds_per_step, 9) for j in range(tokenizer.audio_per_step))
        patches = tokenizer.video.tokens_per_step
        return audio + (0.0,) * patches, (AUDIO,) * len(audio) + (VIDEO,) * patches
    if isinstance(tokenizer, AudioTokenizer):
        return (0.0,), (AUDIO,)
    return (0.0,) * tokenizer.tokens_per_step, (VIDEO,) * tokenizer.tokens_per_step


def _tensor_batch(e: Embedder, audio: Tensor | None, video: Tensor | None) -> dict:
    """Check and batch ``embed_tensor``'s inputs: ``{"audio": [B, n], "video": [B, T, 3, S, S], "batched"}``."""
    out: dict = {}
    batched = None
    for name, value, dims in (("audio", audio, 1), ("video", video, 4)):
        wanted = name in e.modalities
        if (value is not None) != wanted:
            given = "a tensor" if value is not None else None
            raise ValueError(f"this model reads {' and '.join(e.modalities)}; got {name}={given}")
        if value is None:
            continue
        if value.dim() not in (dims, dims + 1):
            raise ValueError(
                f"{name} must have {dims} dimensions, or {dims + 1} with a batch axis; got {tuple(value.shape)}"
            )
        is_batched = value.dim() == dims + 1
        if batched is not None and batched != is_batched:
            raise ValueError("give audio and video both with or both without a batch axis")
        batched = is_batched
        out[name] = value if is_batched else value.unsqueeze(0)
    if "video" in out:
        v = out["video"]
        if v.dtype != torch.uint8 or tuple(v.shape[2:]) != (3, e.size, e.size):
            raise ValueError(
                f"video must be uint8 [.., T, 3, {e.size}, {e.size}] at {e.fps} fps; got {v.dtype} {tuple(v.shape)}"
            )
    if "audio" in out:
        out["audio"] = out["audio"].float()
    if len({x.shape[0] for k, x in out.items()}) > 1:
        raise ValueError(f"audio and video batch sizes differ: {[tuple(x.shape) for x in out.values()]}")
    out["batched"] = bool(batched)
    return out


def _tensor_windows(e: Embedder, batch: dict, start: float) -> Iterator[dict]:
    """Consecutive window batches of in-memory media, with the audio context each window needs."""
    w = e.window_seconds
    seconds = []
    if "audio" in batch:
        seconds.append(batch["audio"].shape[1] / e.sample_rate)
    if "video" in batch:
        seconds.append(batch["video"].shape[1] / e.fps)
    count = max(1, math.ceil(max(seconds) / w - 1e-9))
    size = next(v.shape[0] for k, v in batch.items() if k != "batched")
    context = getattr(e._audio_tokenizer(), "context_samples", 0)
    for i in range(count):
        item: dict = {"start": torch.full((size,), start + i * w, dtype=torch.float64)}
        if "audio" in batch:
            a, n = batch["audio"], round(w * e.sample_rate)
            lo = i * n
            ctx = a[:, max(0, lo - context) : lo]
            item["audio_context"] = torch.cat([ctx.new_zeros(size, context - ctx.shape[1]), ctx], dim=1)
            item["audio"], item["sample_rate"] = a[:, lo : lo + n], e.sample_rate
        if "video" in batch:
            f = round(w * e.fps)
            item["video"], item["fps"] = batch["video"][:, i * f : (i + 1) * f], e.fps
        yield item
