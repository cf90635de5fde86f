"""Scores of one model on one clip, streamed window by window with the backbone state carried.

`ClipScorer.push` takes the consecutive windows of a clip (from `ttt_mm.data.iter_windows`) and
scores every token ``t`` of the clip exactly as one pass over the whole clip would, for three
predictors of the target of token ``t``:

- ``model``: the model's prediction made at token ``t - offset`` (what ``SequenceModel.losses`` scores);
- ``copy_last_step``: the target of token ``t - P`` (``P = tokens_per_step``: the same slot one
  step earlier, e.g. the same patch in the previous frame);
- ``running_mean``: the mean of the targets of every earlier token of the same slot up to ``t - P``
  (zero before there is one).

Token ``t`` is scored when it, token ``t - offset`` and token ``t - P`` are all real (for the usual
``offset == P`` this is exactly the set ``SequenceModel.losses`` scores). Predictions and targets of
the previous window reach the next one through `Lag` buffers, so scores do not depend on where the
windows are cut. Video steps also get per-frame PSNR and SSIM of the predicted frames (see
`ttt_mm.eval.rollout` for how normalized patches become pixels); audio tokens get the log-mel L1.
After each window the scorer starts a rollout of ``rollout_steps`` steps from the state it reached
and scores each horizon when the true steps arrive in later windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ttt_mm.eval.metrics import mel_l1, psnr, ssim
from ttt_mm.eval.rollout import rollout
from ttt_mm.tokenizers import AUDIO, VIDEO, Tokens
from ttt_mm.tokenizers.base import token_loss

SERIES = ("model", "copy_last_step", "running_mean")
HORIZON_FIELDS = (
    "loss_model",
    "loss_copy",
    "psnr_model",
    "psnr_copy",
    "ssim_model",
    "ssim_copy",
    "mel_l1_model",
    "mel_l1_copy",
)
FRAME_COLUMNS = ("frame", "seconds", "psnr_model", "psnr_copy", "ssim_model", "ssim_copy")


def _last_frame(steps: Tensor) -> Tensor:
    """The copy-last-frame baseline of video steps ``[s, tubelet, ...]`` from the steps before them: the
    last frame of each, for every frame of the step it predicts (the model has seen that frame)."""
    return steps[:, -1:].expand_as(steps)


def _cpu(media: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.cpu() for k, v in media.items()}


class Lag:
    """A sequence delayed by ``delay`` positions along dim 1 across consecutive chunks:
    ``out[:, t] = x[:, t - delay]``, and ``fill`` before the first position."""

    def __init__(self, delay: int) -> None:
        self.delay, self.buffer = delay, None

    def __call__(self, x: Tensor, fill: float | bool = 0) -> Tensor:
        if self.delay == 0:
            return x
        if self.buffer is None:
            self.buffer = torch.full((x.shape[0], self.delay, *x.shape[2:]), fill, dtype=x.dtype, device=x.device)
        joined = torch.cat([self.buffer, x], dim=1)
        self.buffer = joined[:, joined.shape[1] - self.delay :]
        return joined[:, : x.shape[1]]


@dataclass
class ClipResult:
    """Everything scored on one clip; arrays hold only scored tokens, frames and audio tokens."""

    path: str
    start: float  # seconds into the file where the clip begins
    duration: float  # seconds of media scored (`_window_seconds`)
    tokens: int  # real tokens in the clip
    position: np.ndarray  # [n] int64 token index of each scored token in the clip
    seconds: np.ndarray  # [n] float64 seconds from the clip start
    modality: np.ndarray  # [n] int8
    losses: np.ndarray  # [n, len(SERIES)] float32
    frames: np.ndarray  # [f, len(FRAME_COLUMNS)] one-step video metrics per frame
    mel: np.ndarray  # [a, 2] one-step log-mel L1 per audio token: model, copy
    horizon_sums: np.ndarray  # [rollout_steps, len(HORIZON_FIELDS)]
    horizon_counts: np.ndarray  # same shape
    rollouts: int  # rollouts started
    plot: dict | None = None  # a rollout with every horizon scored, for the figures (`ClipScorer.plot_near`)


@dataclass
class _Pending:
    origin: int  # global step index of the last real step before the rollout
    preds: Tensor  # [1, k, P, D] predicted targets for steps origin + 1 .. origin + k
    targets: Tensor  # [1, P, D] targets of the origin step (copy baseline)
    stats: Tensor | None  # [1, P, 2, 3] their patch statistics
    scored: int = 0
    plot: dict[str, list] = field(default_factory=dict)


class ClipScorer:
    """Streams one clip through one `ttt_mm.module.SequenceModel`; see the module docstring."""

    def __init__(
        self,
        model,
        path: str,
        rollout_steps: int = 0,
        keep_plot: bool = False,
        ssim_window: int = 11,
        plot_near: float | None = None,
    ) -> None:
        tok = model.tokenizer
        self.model, self.tokenizer, self.path = model, tok, path
        self.P, self.offset = int(tok.tokens_per_step), int(model.offset)
        self.kind = model.hparams.loss
        self.decoding = tok.decoding
        self.audio, self.video = "audio" in tok.decoding.modalities, "video" in tok.decoding.modalities
        self.video_slots = torch.tensor(tok.slot_modality) == VIDEO  # [P]
        self.per_step = tok.media_per_step  # rows of each inverted medium per step
        if self.audio:  # log-mel frames per audio token
            self.mel_per_token = self.per_step["audio"] // tok.slot_modality.count(AUDIO)
        self.rollout_steps = rollout_steps if model.predicts_next_step else 0
        self.keep_plot = keep_plot and self.rollout_steps > 0
        # the figures' rollout: the one starting nearest this many seconds into the clip (None: the last)
        self.plot_near = plot_near
        if self.video and self.decoding.size < ssim_window:
            raise ValueError(f"frames of {self.decoding.size} px are smaller than ssim_window={ssim_window}")
        self.ssim_window = ssim_window
        self.state = None
        self.seen = 0  # tokens pushed so far
        self.start: float | None = None
        self.seconds = 0.0  # of media pushed (`_window_seconds`)
        self.real_tokens = 0
        self.lag_pred, self.lag_mask_off = Lag(self.offset), Lag(self.offset)
        self.lag_prev, self.lag_stats, self.lag_mask_prev, self.lag_mean = (
            Lag(self.P),
            Lag(self.P),
            Lag(self.P),
            Lag(self.P),
        )
        self.mean_sum: Tensor | None = None  # [1, P, D] float64 running sums of real targets per slot
        self.mean_count: Tensor | None = None  # [1, P, 1]
        self.pending: list[_Pending] = []
        self.rollouts = 0
        self.horizon_sums = np.zeros((self.rollout_steps, len(HORIZON_FIELDS)))
        self.horizon_counts = np.zeros((self.rollout_steps, len(HORIZON_FIELDS)))
        self.parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("position", "seconds", "modality", "losses", "frames", "mel")
        }
        self.plot: dict | None = None

    # ---------------------------------------------------------------------------------- streaming

    @torch.no_grad()
    def push(self, batch: dict[str, Any]) -> None:
        """Score the next window of the clip (a collated batch of one)."""
        tokens, pred, self.state = self.model(batch, self.state)
        b, n = tokens.mask.shape
        if b != 1:
            raise ValueError(f"ClipScorer streams one clip at a time; got a batch of {b}")
        if n % self.P:
            raise ValueError(f"a window gave {n} tokens, not a whole number of steps of {self.P}")
        if self.start is None:
            self.start = float(torch.as_tensor(batch["start"]).reshape(-1)[0])
        self.seconds += self._window_seconds(batch)  # (also of a window too short for a token: it was read)
        if n == 0:  # a clip's last window shorter than one step: no token to score
            return
        stats = tokens.target_stats
        targets = tokens.targets.float()
        pred_t = self.lag_pred(pred.float())  # prediction of token t, made at t - offset
        prev = self.lag_prev(targets)  # target of token t - P
        prev_stats = None if stats is None else self.lag_stats(stats)
        mean_t = self.lag_mean(self._running_mean(targets, tokens.mask))  # mean of same-slot targets up to t - P
        valid = tokens.scored & self.lag_mask_off(tokens.mask, False) & self.lag_mask_prev(tokens.mask, False)

        widths = self.tokenizer.target_widths(tokens.modality)
        losses = torch.stack(
            [token_loss(x, targets, widths, self.kind) for x in (pred_t, prev, mean_t.float())], dim=-1
        )  # [1, n, 3]
        keep = valid[0]
        position = self.seen + torch.arange(n, device=keep.device)
        self._append("position", position[keep])
        self._append("seconds", tokens.timestamps[0][keep] - self.start)
        self._append("modality", tokens.modality[0][keep].to(torch.int8))
        self._append("losses", losses[0][keep])

        media = self._media(tokens, pred_t, prev, prev_stats)
        step0 = self.seen // self.P
        if self.video:
            self._score_frames(media, valid, step0)
        if self.audio:
            self._score_mel(media, tokens, valid)
        self._resolve(tokens, media, step0)
        self.real_tokens += int(tokens.mask.sum())
        self.seen += n
        if self.rollout_steps and bool(tokens.mask[0, -self.P :].all()):
            last = None if stats is None else stats[:, -self.P :]
            preds = rollout(self.model, self.state, pred[:, -self.P :].float(), last, self.rollout_steps)
            self.pending.append(_Pending(self.seen // self.P - 1, preds.float(), targets[:, -self.P :], last))
            self.rollouts += 1

    def _append(self, key: str, value: Tensor | np.ndarray) -> None:
        self.parts[key].append(value.cpu().numpy() if isinstance(value, Tensor) else value)

    def _running_mean(self, targets: Tensor, mask: Tensor) -> Tensor:
        """Mean of the real targets of each slot up to and including each token ``[1, n, D]`` (float64)."""
        b, n, d = targets.shape
        x = targets.double().reshape(b, n // self.P, self.P, d)
        m = mask.double().reshape(b, n // self.P, self.P, 1)
        if self.mean_sum is None:
            self.mean_sum, self.mean_count = x.new_zeros(b, self.P, d), x.new_zeros(b, self.P, 1)
        sums = torch.cumsum(x * m, dim=1) + self.mean_sum[:, None]
        counts = torch.cumsum(m, dim=1) + self.mean_count[:, None]
        self.mean_sum, self.mean_count = sums[:, -1], counts[:, -1]
        return (sums / counts.clamp_min(1)).reshape(b, n, d)

    def _media(self, tokens: Tokens, pred_t: Tensor, prev: Tensor, prev_stats: Tensor | None) -> dict[str, dict]:
        """Truth, one-step prediction and copy baseline as media (``"audio"`` log-mel, ``"video"`` uint8).

        Predicted and copied patches use the statistics of token ``t - P``, the last frame seen."""
        invert = self.tokenizer.invert
        return {
            "truth": invert(tokens.targets.float(), tokens.target_stats),
            "model": invert(pred_t, prev_stats),
            "copy": invert(prev, prev_stats),
        }

    def _score_frames(self, media: dict, valid: Tensor, step0: int) -> None:
        tub, steps = self.per_step["video"], valid.shape[1] // self.P
        video_slots = valid[0].reshape(steps, self.P)[:, self.video_slots.to(valid.device)]
        ok = torch.nonzero(video_slots.all(-1)).flatten()  # steps whose every patch is scored
        if len(ok) == 0:
            return
        frames = {k: v["video"][0].reshape(steps, tub, *v["video"].shape[2:])[ok] for k, v in media.items()}
        frames["copy"] = _last_frame(frames["copy"])
        size = self.ssim_window
        cols = [
            psnr(frames["model"], frames["truth"]),
            psnr(frames["copy"], frames["truth"]),
            ssim(frames["model"], frames["truth"], window=size),
            ssim(frames["copy"], frames["truth"], window=size),
        ]  # each [s, tub]
        index = ((step0 + ok)[:, None] * tub + torch.arange(tub, device=ok.device)).double()
        table = torch.stack([index, index / self.decoding.fps, *cols], dim=-1).reshape(-1, len(FRAME_COLUMNS))
        self._append("frames", table)

    def _score_mel(self, media: dict, tokens: Tokens, valid: Tensor) -> None:
        is_audio = tokens.modality[0] == AUDIO
        ok = valid[0][is_audio]
        if not bool(ok.any()):
            return
        fpt = self.mel_per_token

        def per_token(mel: Tensor) -> Tensor:  # [1, A * fpt, n_mels] -> [A, fpt, n_mels]
            return mel[0].reshape(-1, fpt, mel.shape[-1])[ok]

        truth = per_token(media["truth"]["audio"])
        self._append("mel", torch.stack([mel_l1(per_token(media[k]["audio"]), truth) for k in ("model", "copy")], -1))

    # ----------------------------------------------------------------------------------- rollouts

    def _step_media(self, media: dict, index: int) -> dict[str, Tensor]:
        """Step ``index`` of a window's media: ``"video"`` ``[tubelet, 3, S, S]``, ``"audio"`` ``[F, n_mels]``."""
        return {name: media[name][0, index * per : (index + 1) * per] for name, per in self.per_step.items()}

    def _resolve(self, tokens: Tokens, media: dict, step0: int) -> None:
        """Score the horizons of pending rollouts whose true step is in this window."""
        steps = tokens.mask.shape[1] // self.P
        whole = tokens.mask[0].reshape(steps, self.P).all(-1)
        invert, spp = self.tokenizer.invert, self.tokenizer.seconds_per_step
        for r in self.pending:
            for h in range(1, self.rollout_steps + 1):
                i = r.origin + h - step0
                if not 0 <= i < steps or not bool(whole[i]):
                    continue
                span = slice(i * self.P, (i + 1) * self.P)
                truth, modality = tokens.targets[:, span].float(), tokens.modality[:, span]
                scored = tokens.scored[:, span]  # (a silent track read in place of sound is not)
                guess = r.preds[:, h - 1]
                widths = self.tokenizer.target_widths(modality)
                row = {  # (each scored token's: the horizon's mean pools the tokens, as every mean does)
                    "loss_model": token_loss(guess, truth, widths, self.kind)[scored],
                    "loss_copy": token_loss(r.targets, truth, widths, self.kind)[scored],
                }
                true_m = self._step_media(media["truth"], i)
                model_m = self._step_media(invert(guess, r.stats), 0)
                copy_m = self._step_media(invert(r.targets, r.stats), 0)
                if self.video:
                    copy_m["video"] = _last_frame(copy_m["video"][None])[0]
                    for name, x in (("model", model_m), ("copy", copy_m)):
                        row[f"psnr_{name}"] = psnr(x["video"], true_m["video"])  # [tubelet]
                        row[f"ssim_{name}"] = ssim(x["video"], true_m["video"], window=self.ssim_window)
                if self.audio and bool(scored[modality == AUDIO].any()):
                    row["mel_l1_model"] = mel_l1(model_m["audio"], true_m["audio"])
                    row["mel_l1_copy"] = mel_l1(copy_m["audio"], true_m["audio"])
                for j, name in enumerate(HORIZON_FIELDS):
                    if name in row:
                        value = row[name].reshape(-1).double()
                        self.horizon_sums[h - 1, j] += float(value.sum())
                        self.horizon_counts[h - 1, j] += value.numel()
                r.scored += 1
                if self.keep_plot:
                    onestep = self._step_media(media["model"], i)
                    for key, value in (("truth", true_m), ("rollout", model_m), ("onestep", onestep)):
                        r.plot.setdefault(key, []).append(_cpu(value))
            if self.keep_plot and r.scored == self.rollout_steps and self._nearer((r.origin + 1) * spp):
                last = _cpu(self._step_media(invert(r.targets, r.stats), 0))
                self.plot = {"origin_seconds": (r.origin + 1) * spp, "last": last, **r.plot}
        self.pending = [r for r in self.pending if r.origin + self.rollout_steps >= step0 + steps]

    def _nearer(self, origin: float) -> bool:
        """Whether a rollout from ``origin`` seconds is the figures' rather than the one kept so far: nearer
        `plot_near` (a clip's middle: a track's last seconds often fade to silence, its first from it)."""
        if self.plot is None or self.plot_near is None:
            return True
        return abs(origin - self.plot_near) <= abs(self.plot["origin_seconds"] - self.plot_near)

    def _window_seconds(self, batch: dict[str, Any]) -> float:
        """Seconds of media in a window of one: its samples over the sample rate, or its frames over the
        frame rate, the shorter (where a clip's streams end apart, it is read to the first end), and no
        more than the span read. Steps were counted instead, and a last step that held a little audio
        counted whole: 1.25 s scored of a 1.17 s file; and frames were counted whole, 4.125 s of a 4.004 s
        video at 8 fps. Without ``*_lengths`` a stream is all data, and without rates, the tokenizer's."""
        seconds = [float(batch["duration"][0])] if "duration" in batch else []
        for modality, key in (("audio", "sample_rate"), ("video", "fps")):
            if modality in batch:
                length = batch.get(f"{modality}_lengths", torch.tensor([batch[modality].shape[1]]))[0]
                seconds.append(float(length) / float(batch.get(key) or getattr(self.decoding, key)))
        return min(seconds)

    # -------------------------------------------------------------------------------------- result

    def finish(self) -> ClipResult:
        """The scores of everything pushed so far."""

        def cat(key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
            parts = self.parts[key]
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

        return ClipResult(
            path=self.path,
            start=0.0 if self.start is None else self.start,
            duration=round(self.seconds, 6),  # (not 3.2800000000000002, nor decord's float32 4.004000187 s)
            tokens=self.real_tokens,
            position=cat("position", (0,), np.int64),
            seconds=cat("seconds", (0,), np.float64),
            modality=cat("modality", (0,), np.int8),
            losses=cat("losses", (0, len(SERIES)), np.float32),
            frames=cat("frames", (0, len(FRAME_COLUMNS)), np.float64),
            mel=cat("mel", (0, 2), np.float64),
            horizon_sums=self.horizon_sums,
            horizon_counts=self.horizon_counts,
            rollouts=self.rollouts,
            plot=self.plot,
        )
