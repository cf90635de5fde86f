"""The HEAR common API (Holistic Evaluation of Audio Representations) for checkpoints whose
tokenizer reads audio only, so audio benchmarks can call a ttt-mm model like any other:

    from ttt_mm.embed import hear
    model = hear.load_model("last.ckpt")                               # model.sample_rate: 16000
    emb, ms = hear.get_timestamp_embeddings(audio, model)              # audio [n_sounds, n_samples]
    scene = hear.get_scene_embeddings(audio, model)                    # [n_sounds, scene_embedding_size]

Timestamp embeddings are one per audio token (every 40 ms at the defaults), taken from the chosen
block (default the last, after the final norm), timestamped at the centre of the token's span in
milliseconds. Scene embeddings are their mean. Audio of any length is streamed in windows with the
backbone state carried (see `ttt_mm.embed.embedder`), so long sounds need no cropping.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from ttt_mm.embed.embedder import Embedder


class HearModel(nn.Module):
    """A ttt-mm audio model with the attributes HEAR reads, in eval mode (its embeddings are computed
    without gradients; its parameters are left as they are, shared with the embedder).

    ``sample_rate`` (Hz) of the expected audio, ``timestamp_embedding_size`` and
    ``scene_embedding_size`` (both the backbone width). Move it with ``.to(device)`` as usual.
    """

    def __init__(self, embedder: Embedder) -> None:
        super().__init__()
        if embedder.modalities != ("audio",):
            raise ValueError(
                f"the HEAR interface needs a model whose tokenizer reads audio only; this one reads "
                f"{' and '.join(embedder.modalities)} (use ttt_mm.embed.Embedder for it)"
            )
        if embedder.hop_seconds is not None or embedder.pool != "mean":
            raise ValueError("build the embedder with hop_seconds=None and pool='mean' for HEAR")
        self.embedder = embedder
        self.tokenizer, self.backbone = embedder.tokenizer, embedder.backbone  # registered: .to() moves them
        self.sample_rate = int(embedder.sample_rate)
        self.timestamp_embedding_size = embedder.dim
        self.scene_embedding_size = embedder.dim
        self.eval()

    def embed(self, audio: Tensor):
        """Embeddings of ``audio [n_sounds, n_samples]`` (see `Embedder.embed_tensor`)."""
        if not isinstance(audio, Tensor):  # e.g. what soundfile returns: say what to pass
            raise TypeError(
                f"audio must be a torch.Tensor [n_sounds, n_samples]; got {type(audio).__name__} "
                "(for one sound x as soundfile reads it, [n_samples] or [n_samples, channels]: "
                "torch.from_numpy(x.mean(1) if x.ndim == 2 else x)[None], its channels averaged into one sound)"
            )
        if audio.dim() != 2 or audio.shape[0] == 0:
            raise ValueError(f"audio must be [n_sounds, n_samples] with at least one sound; got {tuple(audio.shape)}")
        samples = round(self.embedder.seconds_per_step * self.sample_rate)  # one audio token
        if audio.shape[1] < samples:
            layout = (
                "; a [n_samples, channels] array (soundfile's layout) is transposed: pass audio.T.mean(0, keepdim=True)"
                if 0 < audio.shape[1] <= 8 and audio.shape[0] > audio.shape[1]
                else ""
            )
            raise ValueError(
                f"audio of {audio.shape[1]} samples is shorter than one token "
                f"({samples} samples = {samples / self.sample_rate * 1000:g} ms at {self.sample_rate} Hz){layout}"
            )
        weights = next(self.parameters())
        if other := sorted({str(p.dtype) for p in self.parameters()} - {str(torch.float32)}):
            # (the audio and its log-mel frames are float32; a part cast to another type fails in a matmul)
            raise ValueError(f"HEAR embeds with float32 weights; this model's are {', '.join(other)}: model.float()")
        self.embedder.device = weights.device  # follow .to(device)
        return self.embedder.embed_tensor(audio=audio)


def load_model(
    model_file_path: str | os.PathLike = "", layer: int = -1, device: str | None = None, weights_only: bool = True
) -> HearModel:
    """Load a ttt-mm checkpoint (``SequenceModel``, audio tokenizer) as a HEAR model.

    ``layer`` picks the block whose output is the embedding (-1: the last); ``device`` defaults to
    CUDA when available; ``weights_only`` as in `ttt_mm.checkpoint`.
    """
    if not model_file_path:
        raise ValueError("load_model needs the path of a ttt-mm checkpoint (there are no built-in weights)")
    return HearModel(Embedder.from_checkpoint(model_file_path, layer=layer, device=device, weights_only=weights_only))


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """``audio [n_sounds, n_samples]`` (float in [-1, 1]) at ``model.sample_rate`` -> embeddings
    ``[n_sounds, n_timestamps, timestamp_embedding_size]`` and timestamps ``[n_sounds, n_timestamps]``
    (milliseconds, centre of each token's span), on the device of ``audio``."""
    out = model.embed(audio)
    centre = out.timestamps + model.embedder.seconds_per_step / 2
    ms = (centre * 1000).float().unsqueeze(0).expand(audio.shape[0], -1)
    return out.embeddings.to(audio.device), ms.contiguous().to(audio.device)


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """``audio [n_sounds, n_samples]`` -> ``[n_sounds, scene_embedding_size]``: the mean of the
    timestamp embeddings, on the device of ``audio``."""
    return model.embed(audio).pooled.to(audio.device)
