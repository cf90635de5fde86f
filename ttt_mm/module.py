"""LightningModule: tokenizer -> backbone -> head that predicts the target of a later token.

The module is built from plain config mappings (each with a ``_target_``) rather than from built
objects, so that ``save_hyperparameters`` records everything needed to rebuild it and
``SequenceModel.load_from_checkpoint(path)`` works with no other argument.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from .backbone import Backbone, BackboneState
from .tokenizers.base import TOKEN_LOSSES, Tokens, token_loss
from .training.carried_state import CarriedState, gathered_initial_state, own_part, place_of

PREDICT = ("next_token", "next_step")
PLACE = "stream_place"
"""The batch key under which a streamed training batch carries its `Place`, read before the transfer."""
log = logging.getLogger(__name__)
EXACT_COPY = 1e-6
"""A copy baseline's mean loss at or below which it is taken as exact (a still picture): the ratio to it
is logged as NaN (it reached 1e12; left out, the loggers would repeat the last step's)."""
NOMINAL_TOKENS = 1024
"""What a batch's summed loss is divided by before its backward pass (`training_step`), undone when its
step's gradients are scaled to the mean (`on_before_optimizer_step`): a sum over thousands of tokens
would overflow float16's gradients at GradScaler's first scale (``trainer.precision=16-mixed``)."""


def _ratio(loss: float, scored: float, copy: float, copied: float) -> float:
    """The model's mean loss over the copy baseline's; NaN where the copy is exact or scored nothing."""
    return (loss / scored) / (copy / copied) if copied > 0 and copy / copied > EXACT_COPY else math.nan


class Losses(NamedTuple):
    """What `SequenceModel.losses` scores in a batch: sums over the scored tokens, and their counts."""

    loss: Tensor  # the model's, summed (differentiable)
    copy: Tensor  # the copy-the-last-step baseline's, summed
    scored: Tensor  # tokens the model's loss scores
    copied: Tensor  # tokens the copy baseline scores (with predict="next_token", fewer: `losses`)

    def summed(self) -> Tensor:
        """``[loss, copy, scored, copied]`` as float64, detached: what batches add up to a step's or an
        epoch's sums, reduced over ranks once."""
        return torch.stack([x.detach().double() for x in self])


class Diverged(ArithmeticError):
    """The training loss stopped being finite: every later step would train on NaN, and the run would
    go on to its end and report NaN metrics as if it had trained."""


def _optimizer_settings(checkpoint: dict) -> dict:
    """``lr``, ``betas`` and ``weight_decay`` as the checkpoint's optimizer has them: what a resume
    keeps (the base learning rate is the scheduler's), whatever the config now says."""
    out = {}
    schedulers = checkpoint.get("lr_schedulers") or [{}]
    if schedulers[0].get("base_lrs"):
        out["lr"] = schedulers[0]["base_lrs"][0]
    groups = (checkpoint.get("optimizer_states") or [{}])[0].get("param_groups") or [{}]
    out |= {k: _plain_list(groups[0][k]) for k in ("betas", "weight_decay") if k in groups[0]}
    return out


OPTIMIZER_KEYS = ("lr", "betas", "weight_decay")
"""Settings a resume keeps from the checkpoint's optimizer state (`_optimizer_settings`), said apart."""
UNTRAINED_KEYS = ("backbone.checkpoint_activations",)
"""Settings that change how a step is computed, not what it trains: a resume may change them unsaid."""
SCHEDULE_KEYS = ("warmup_steps", "min_lr_ratio")
"""Settings that shape the learning-rate schedule (its length aside)."""


def _changed_settings(saved: Mapping, now: Mapping) -> dict[str, tuple[Any, Any]]:
    """``{key: (was, now)}`` for each model setting (dotted, under ``model.``) that a resumed run
    changes and its weights fit either way (a LaCT chunk, predict, loss, the warm-up): nothing else would
    say so. Not said for a checkpoint saved before the mixer was injected (its mixer a name): its settings
    are in another form (`ttt_mm.checkpoint.translate`)."""
    if not isinstance((saved.get("backbone") or {}).get("mixer"), Mapping):
        return {}
    was, given = _flat(saved), _flat(now)
    if was.get("backbone.mixer._target_") != given.get("backbone.mixer._target_"):
        return {}  # (another mixer: its weights do not load, and that says why)
    skip = (*OPTIMIZER_KEYS, *UNTRAINED_KEYS)
    return {k: (was[k], given[k]) for k in sorted(was.keys() & given.keys()) if was[k] != given[k] and k not in skip}


def _said(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``model.<key> <was> -> <now>, ...`` of `_changed_settings`'s changes."""
    return ", ".join(f"model.{k} {was} -> {now}" for k, (was, now) in changes.items())


def _flat(node: Mapping, prefix: str = "") -> dict[str, Any]:
    """A nested mapping's leaves by dotted key."""
    out = {}
    for key, value in node.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = _plain_list(value)
    return out


def _plain_list(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _plain(value: Any) -> Any:
    """Config nodes -> plain (resolved) dicts and lists, so that checkpoints hold only builtin types
    and load with ``torch.load(weights_only=True)``."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class SequenceModel(L.LightningModule):
    """Next-token or next-step prediction on token sequences from any tokenizer.

    Args:
        tokenizer, backbone: config mappings with ``_target_`` (see ``conf/tokenizer``, ``conf/model``).
        predict: ``"next_token"`` predicts token ``i + 1``; ``"next_step"`` predicts token
            ``i + tokenizer.tokens_per_step`` (for video: the same patch one tubelet step later).
        loss: ``"mse"`` or ``"l1"`` on the tokenizer's normalised targets, masked by validity; each
            optimizer step's is the mean over every token it scores (all its batches and ranks).
        lr, betas, weight_decay: AdamW; norms, biases and what the mixers name (e.g. the TTT inner
            initial weights) get no decay.
        warmup_steps, min_lr_ratio: linear warm-up, then cosine decay towards ``min_lr_ratio * lr``,
            reached as the trainer's last step ends.
        carry_state: train consecutive windows of one stream in order, carrying the backbone state
            (detached) across batches; rows whose batch entry ``reset`` is true start afresh.
    """

    def __init__(
        self,
        tokenizer: Mapping,
        backbone: Mapping,
        predict: Literal["next_token", "next_step"] = "next_step",
        loss: Literal["mse", "l1"] = "mse",
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.05,
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.1,
        carry_state: bool = False,
    ):
        super().__init__()
        if predict not in PREDICT:
            raise ValueError(f"predict must be one of {PREDICT}; got {predict!r}")
        if loss not in TOKEN_LOSSES:
            raise ValueError(f"loss must be one of {TOKEN_LOSSES}; got {loss!r}")
        self.save_hyperparameters({k: _plain(v) for k, v in locals().items() if k not in ("self", "__class__")})
        self.tokenizer = instantiate(self.hparams.tokenizer)
        self.backbone: Backbone = instantiate(self.hparams.backbone)
        if self.tokenizer.dim != self.backbone.dim:
            raise ValueError(f"tokenizer.dim ({self.tokenizer.dim}) must equal backbone.dim ({self.backbone.dim})")
        if carry_state and not self.backbone.bounded_state:
            raise ValueError(
                "carry_state=true needs a mixer with a bounded state (e.g. TTT): an attention KV cache "
                "would grow without bound"
            )
        self.head = nn.Linear(self.backbone.dim, self.tokenizer.target_dim)
        self.offset = 1 if predict == "next_token" else int(self.tokenizer.tokens_per_step)
        self._carried = CarriedState()  # with carry_state: the training state from batch to batch
        self._gather_group = None  # the processes' gloo group that `_gathered` gathers over, once made
        # since the last optimizer step, on this rank: `Losses.summed`, then the batches whose loss was not finite
        self._unstepped: Tensor | None = None
        self._skipped_steps = 0
        self._epoch_of_step: int | None = None  # the epoch of the last optimizer step
        self._eval_sums: Tensor | None = None  # validation or test, per epoch: `Losses`, summed
        self.unscored: set[str] = set()  # the splits ("val", "test") whose last run scored no token
        # decided now, on the parameters' own shapes: FSDP (use_orig_params) shows them as flat shards later
        self._no_decay_ids = frozenset(self._no_decay())
        self._schedule_steps: int | None = None  # steps the learning-rate schedule spans, once fitting
        self._resumed: dict | None = None  # what a loaded checkpoint's optimizer had, until training starts

    @property
    def predicts_next_step(self) -> bool:
        """Whether each token's target is the same slot one tokenizer step later (``offset ==
        tokens_per_step``): what rollouts need, since a step's predictions are the next step's input."""
        return self.offset == self.tokenizer.tokens_per_step

    # ------------------------------------------------------------------------------------ forward

    def forward(self, batch: Mapping[str, Any], state: BackboneState | None = None, restart: Tensor | None = None):
        """Returns (tokens, predictions [B, N, target_dim], new state); ``restart``: the backbone's."""
        tokens = self.tokenizer(batch)
        hidden, state = self.backbone(tokens.embeddings, state, restart)
        return tokens, self.head(hidden), state

    def _pair_mask(self, tokens: Tokens) -> Tensor:
        """Token i is scored when it is real and its target token i + offset is scored (`Tokens.scored`)."""
        return tokens.mask[:, : -self.offset] & tokens.scored[:, self.offset :]

    def _summed(self, pred: Tensor, target: Tensor, mask: Tensor, modality: Tensor) -> Tensor:
        """`token_loss` summed over the scored tokens (each token averaged over its real target entries)."""
        per = token_loss(pred, target, self.tokenizer.target_widths(modality), self.hparams.loss)
        return (per * mask).sum()

    def losses(self, tokens, pred: Tensor) -> Losses:
        """The model's loss and the copy-the-last-step baseline's, each summed over the tokens it scores,
        and their counts (`Losses`): sums, so that a step's loss is the mean over every token it scored,
        whatever the windows' lengths, the micro-batches and the ranks (`on_before_optimizer_step`).

        The copy baseline guesses target ``i + offset`` with the target of the same slot one step earlier,
        ``i + offset - tokens_per_step`` (with ``predict="next_token"`` the tokens it has no such earlier
        slot for are left out of its count). A window too short to score anything (a file's last few
        frames) gives zero losses that reach every parameter: DDP's reducer on this rank then reduces
        every bucket, as the other ranks' do (an empty input reaches none of the mixers' weights)."""
        o, P = self.offset, self.tokenizer.tokens_per_step
        N = tokens.targets.shape[1]
        if o >= N:
            zero = pred.sum() * 0.0 + sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            none = torch.zeros((), dtype=torch.long, device=pred.device)
            return Losses(zero, zero.detach(), none, none)
        mask = self._pair_mask(tokens)
        target, modality = tokens.targets[:, o:], tokens.modality[:, o:]
        loss = self._summed(pred[:, :-o], target, mask, modality)
        shift = P - o  # >= 0: how far before token i its copy source lies
        source = F.pad(tokens.targets, (0, 0, shift, 0))[:, : N - o]
        copied = mask & F.pad(tokens.mask, (shift, 0))[:, : N - o]
        return Losses(loss, self._summed(source, target, copied, modality).detach(), mask.sum(), copied.sum())

    # ----------------------------------------------------------------------------------- training

    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        if self.hparams.carry_state and isinstance(batch, dict) and self._trainer is not None and self.trainer.training:
            batch[PLACE] = place_of(batch)  # (on the CPU: `Place`)
        return batch

    def training_step(self, batch, batch_idx):
        state = restart = place = None
        if self.hparams.carry_state:
            place = batch[PLACE] if PLACE in batch else place_of(batch)
            state, restart = self._carried.before(place)
        tokens, pred, state = self(batch, state, restart)
        if self.hparams.carry_state:
            self._carried.after(state, place)
        s = self.losses(tokens, pred)
        sums = torch.cat([s.summed(), (~torch.isfinite(s.loss.detach())).double()[None]])
        self._unstepped = sums if self._unstepped is None else self._unstepped + sums  # (no sync: once per step)
        loss = s.loss / NOMINAL_TOKENS
        return {"loss": loss, "tokens": tokens.mask.sum().detach()}  # real tokens, for `callbacks.Throughput`

    def _gradients_not_finite(self, params: list[Tensor]) -> Tensor:
        """``[1.0]`` where a gradient holds an inf or a NaN, else ``[0.0]`` (not synchronised: one read of
        the gradients, as clipping makes; each tensor on its own, as a norm of finite float16 gradients
        can overflow). Under float16's loss scaling such a step is expected: the scaler skips it and
        scales down, so it is not counted."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads or getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None) is not None:
            return torch.zeros(1)
        return (~torch.stack([torch.isfinite(g).all() for g in grads]).all()).double()[None]

    def on_before_optimizer_step(self, optimizer) -> None:
        """Once per optimizer step, on the sums of its batches over every rank (one collective):
        - end the run where a batch's loss, or the step's gradients, on any rank are not finite (`Diverged`:
          on every rank at once, so none waits on the others), before the step spreads it to every weight
          (gradients clipped to a norm of inf are NaN) and a checkpoint keeps them;
        - leave out a step whose batches scored no token on any rank (a file's last few frames in each
          row): its gradients are all zero, yet AdamW would still move every weight, by its momentum and
          the decay (parameters without a gradient are what AdamW skips);
        - scale the gradients of the summed losses (`losses`; Lightning divides each micro-batch's by
          their number, data-parallel ranks average theirs) to those of the mean over every token the
          step scored: a short window counts by its tokens, not as much as a full batch (callbacks'
          ``on_before_optimizer_step`` run before this one: they see the gradients unscaled);
        - log that mean (``train/loss``) and its ratio to the copy baseline's, over every rank."""
        counts, self._unstepped = self._unstepped, None
        if counts is None:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        counts = torch.cat([counts, self._gradients_not_finite(params).to(counts)])
        loss, copy, scored, copied, nonfinite, bad_gradients = self.trainer.strategy.reduce(
            counts, reduce_op="sum"
        ).tolist()
        if nonfinite > 0 or bad_gradients > 0:
            what = "training loss is" if nonfinite > 0 else "training loss is finite but its gradients are"
            raise Diverged(
                f"the {what} not finite at step {self.global_step} (the weights have diverged, most "
                f"likely): lower model.lr (now {self.hparams.lr:g}) or lengthen model.warmup_steps (now "
                f"{self.hparams.warmup_steps})"
            )
        self._epoch_of_step = self.current_epoch  # (`on_train_end`: a run ended by max_steps has moved on)
        if scored > 0:
            scale = self.trainer.accumulate_grad_batches * self.trainer.world_size * NOMINAL_TOKENS / scored
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(scale)
            self.log("train/loss", loss / scored, prog_bar=True)
            self.log("train/loss_ratio_copy", _ratio(loss, scored, copy, copied))
            return
        for p in params:
            p.grad = None
        self._skipped_steps += 1
        if self._skipped_steps == 1:
            log.info(
                "step %d scored no token on any rank (windows shorter than one step): the weights are left "
                "as they are, but the step counts, in trainer.max_steps and the learning-rate schedule "
                "(logged once)",
                self.global_step,
            )

    # -------------------------------------------------------------------------- validation and test
    # Each rank sums (loss * n, copy loss * n, n) over its batches; at the epoch's end every rank reduces
    # the sums once, however many batches it had (none included: no collective per batch to miss), and
    # logs means over all scored tokens.

    def _start_scoring(self) -> None:
        self._eval_sums = torch.zeros(4, dtype=torch.float64, device=self.device)

    def _score(self, batch) -> None:
        if batch.get("restarted"):  # the pass starts again without a file whose decoder crashed
            self._start_scoring()
        tokens, pred, _ = self(batch)
        if batch.get("padding"):  # run for FSDP's gathers while other processes evaluate (`EvenPasses`)
            return
        self._eval_sums += self.losses(tokens, pred).summed()

    def _log_scores(self, split: str) -> None:
        loss, copy, scored, copied = self.trainer.strategy.reduce(self._eval_sums, reduce_op="sum").tolist()
        if scored > 0:  # equal on every rank: averaging them (sync_dist) changes nothing, and says they are global
            self.unscored.discard(split)
            self.log(f"{split}/loss", loss / scored, sync_dist=True)
            self.log(f"{split}/loss_copy", copy / copied if copied else math.nan, sync_dist=True)
            self.log(f"{split}/loss_ratio_copy", _ratio(loss, scored, copy, copied), prog_bar=True, sync_dist=True)
        elif not self.trainer.sanity_checking and split not in self.unscored:
            self.unscored.add(split)
            if self.trainer.is_global_zero:
                log.warning(
                    "%s: no token was scored (its files failed, listed in the skip list, or hold only silence "
                    "read for missing sound): %s/* is not logged",
                    {"val": "validation", "test": "test"}[split],
                    split,
                )

    def on_validation_epoch_start(self) -> None:
        self._start_scoring()

    def validation_step(self, batch, batch_idx) -> None:
        self._score(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_start(self) -> None:
        self._start_scoring()

    def test_step(self, batch, batch_idx) -> None:
        self._score(batch)

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    # --------------------------------------------------------------------------------- optimizers

    def _no_decay(self) -> set[int]:
        """Tensors of < 2 dims (biases, scales), norm weights, and what the mixers and the tokenizer
        name (e.g. TTT's inner initial weights, the video position codes)."""
        skip = {id(p) for p in self.parameters() if p.dim() < 2}
        for m in self.modules():
            if isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
                skip |= {id(p) for p in m.parameters()}
        return skip | {id(p) for p in (*self.backbone.no_weight_decay(), *self.tokenizer.no_weight_decay())}

    def check_optimizer_settings(self) -> None:
        """Raises ValueError for values the optimizer would refuse only at the first step (a traceback),
        or take quietly and do something else (a negative warm-up is none, a negative weight decay
        grows the weights). Asked by training only: a checkpoint is loaded whatever it was trained with."""
        h = self.hparams
        if not 0 <= h.lr < math.inf:
            raise ValueError(f"model.lr must be a number >= 0; got {h.lr}")
        if len(h.betas) != 2 or not all(0 <= b < 1 for b in h.betas):
            raise ValueError(f"model.betas must be two numbers in [0, 1); got {list(h.betas)}")
        if not 0 <= h.weight_decay < math.inf:
            raise ValueError(f"model.weight_decay must be 0 or more; got {h.weight_decay}")
        if h.warmup_steps < 0:
            raise ValueError(f"model.warmup_steps must be 0 or more; got {h.warmup_steps}")
        if not 0 <= h.min_lr_ratio <= 1:
            raise ValueError(f"model.min_lr_ratio must lie in [0, 1]; got {h.min_lr_ratio}")

    def configure_optimizers(self):
        skip = self._no_decay_ids
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if id(p) not in skip], "weight_decay": self.hparams.weight_decay},
            {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        self._schedule_steps = total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self._lr_factor(step, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _lr_factor(self, step: int, total: int) -> float:
        """The learning rate over ``lr`` at ``step`` of a ``total``-step run: linear warm-up, then cosine."""
        warmup, floor = min(self.hparams.warmup_steps, total // 2), self.hparams.min_lr_ratio
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    @property
    def _carrying_in_fit(self) -> bool:
        """Whether the carried state goes into checkpoints and out of them: only a fit goes on from it."""
        return self.hparams.carry_state and self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lr_schedule_steps"] = self._schedule_steps
        if self._carrying_in_fit:
            checkpoint["carried_state"] = self._gathered(self._carried.saved())

    def _gathered(self, part: Any) -> list | None:
        """Every process's ``part``, in rank order, on the first process, which writes the checkpoint
        (None on the others: they would each hold every process's state for nothing). All of them
        call this: every save is collective. They gather over gloo, through host memory: over NCCL
        each part would go through its GPU, and the first process's would hold all of them at once."""
        if self.trainer.world_size == 1:
            return [part]
        if self._gather_group is None:
            self._gather_group = torch.distributed.new_group(backend="gloo")
        parts = [None] * self.trainer.world_size if self.trainer.is_global_zero else None
        torch.distributed.gather_object(part, parts, dst=0, group=self._gather_group)
        return parts

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Notes what a resume keeps from the checkpoint; `on_train_start` reports it once fitting
        begins (with every strategy the restore is done by then; loading to test or embed says nothing).
        The optimizer state of a checkpoint that decayed the tokenizer's codes is regrouped first."""
        self._regroup_optimizer_state(checkpoint)
        self._resumed = {
            "optimizer": _optimizer_settings(checkpoint),
            "schedule_steps": checkpoint.get("lr_schedule_steps"),
            "step": checkpoint.get("global_step", 0),
            "settings": _changed_settings(checkpoint.get("hyper_parameters") or {}, self.hparams),
            # a checkpoint loaded to test or validate leaves it in the file
            "carried_state": own_part(checkpoint.get("carried_state"), self.global_rank)
            if self._carrying_in_fit
            else None,
        }

    def _regroup_optimizer_state(self, checkpoint: dict) -> None:
        """Checkpoints written before the tokenizer's codes (video positions, AV modalities) left weight
        decay hold them in the decayed group: their optimizer state moves to the group that holds them
        now, so that such a run resumes. Any other mismatch is left for the optimizer to refuse. (FSDP
        loads the optimizer state before this hook: such a checkpoint does not resume under it.)"""
        groups = (checkpoint.get("optimizer_states") or [{}])[0].get("param_groups")
        if not groups or len(groups) != 2:
            return
        params = [p for p in self.parameters() if p.requires_grad]
        skip, codes = self._no_decay_ids, {id(p) for p in self.tokenizer.no_weight_decay()}
        now = ([p for p in params if id(p) not in skip], [p for p in params if id(p) in skip])
        before = (
            [p for p in params if id(p) not in skip or id(p) in codes],
            [p for p in params if id(p) in skip - codes],
        )
        sizes = [len(g["params"]) for g in groups]
        if sizes == [len(g) for g in now] or sizes != [len(g) for g in before]:
            return
        saved = {
            id(p): i for group, ps in zip(groups, before, strict=True) for p, i in zip(ps, group["params"], strict=True)
        }
        for group, ps in zip(groups, now, strict=True):
            group["params"] = [saved[id(p)] for p in ps]

    def on_train_end(self) -> None:
        """Write the last step's training loss to the loggers where Lightning did not: it writes every
        ``log_every_n_steps`` optimizer steps, so a run of 25 steps at 10 ended its loss curve 5 steps early."""
        trainer, steps = self.trainer, self.trainer.global_step
        every = trainer.log_every_n_steps
        if not trainer.loggers or not every or steps % every == 0:
            return
        last = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train/loss", "train/loss_ratio_copy")
        }
        for logger in trainer.loggers if last else ():
            epoch = trainer.current_epoch if self._epoch_of_step is None else self._epoch_of_step
            logger.log_metrics(last | {"epoch": epoch}, step=steps - 1)  # (Lightning's step count)

    def on_train_start(self) -> None:
        self._unstepped = None  # (an earlier fit of this module stopped between its batches and its step)
        resumed, self._resumed = self._resumed, None
        if resumed is None:
            return
        settings = resumed["settings"]
        if settings and self.trainer.is_global_zero:
            log.warning(
                "resuming with other model settings (%s): the weights load as the checkpoint has them, and train "
                "on with these",
                _said(settings),
            )
        if self.hparams.carry_state:
            self._restore_carried_state(resumed["carried_state"], resumed["step"])
        # a run resumed with another step count (a larger trainer.max_steps, say) or schedule shape follows
        # the new schedule from where it stopped; the restored optimizer holds the old schedule's rate until
        # the scheduler's next step, so every process sets the new one now
        planned, total, step = resumed["schedule_steps"], self._schedule_steps, resumed["step"]
        longer = planned is not None and total is not None and planned != total
        reshaped = {k: settings[k] for k in SCHEDULE_KEYS if k in settings}
        redrawn = total is not None and (longer or bool(reshaped))
        old = None
        if redrawn:
            old = self.optimizers().optimizer.param_groups[0]["lr"]  # (as restored, under every strategy)
            bases = self.lr_schedulers().base_lrs
            for group, base in zip(self.optimizers().optimizer.param_groups, bases, strict=True):
                group["lr"] = base * self._lr_factor(step, total)
        if not self.trainer.is_global_zero:
            return
        restored = resumed["optimizer"]
        given = {k: _plain_list(self.hparams[k]) for k in restored}
        kept = [f"model.{k}={v} (given {given[k]})" for k, v in restored.items() if v != given[k]]
        if kept:
            log.warning(
                "resuming keeps the optimizer state of the checkpoint, so these stay as it has them: %s",
                ", ".join(kept),
            )
        if redrawn:  # its learning rate jumps: say so, with both values
            lr = restored.get("lr", self.hparams.lr)
            why = f"was planned for {planned} steps, now {total}" if longer else f"changed ({_said(reshaped)})"
            log.warning(
                f"resuming at step {step} a run whose learning-rate schedule {why}: the learning rate follows the "
                f"new schedule and {_rate_change(old, lr * self._lr_factor(step, total))}"
            )

    def _restore_carried_state(self, saved: tuple[int, dict | None] | None, step: int) -> None:
        """Each process takes its own part of the checkpoint's carried state (`own_part`), when the
        checkpoint has one for as many processes, and the first batch checks that each row goes on from it.
        The state is checked against the model's own (`CarriedState.restore`), made with its parameters'
        full shapes (`gathered_initial_state`: under FSDP, every process takes part)."""
        why = template = None
        if saved is not None:  # (alike on every process)
            rows = len(saved[1]["rows"]) if saved[1] is not None else 1
            template = gathered_initial_state(self.trainer.strategy.model, self.backbone, rows)
        if saved is None:
            why = (
                "the checkpoint does not hold the carried state "
                "(it was written by an earlier version, or by a run without model.carry_state)"
            )
        elif saved[0] != self.trainer.world_size:
            world = self.trainer.world_size
            why = f"the checkpoint's carried state is for {saved[0]} processes, this run has {world}"
        elif saved[1] is None:
            why = "the checkpoint was written before the first training batch"
        elif (batch := getattr(self.trainer.datamodule, "batch_size", None)) and batch != rows:
            why = f"the checkpoint's carried state is for batches of {rows} rows, this run's are of {batch}"
        else:
            try:
                self._carried.restore(saved[1], self.backbone, template)
            except ValueError as err:  # each process checks its own part: the first may take its own
                why = f"the checkpoint's carried state does not fit this model: {err}"
                if not self.trainer.is_global_zero:
                    log.warning(
                        "resuming at step %d on process %d: %s; its rows start afresh", step, self.global_rank, why
                    )
        if self.trainer.is_global_zero:
            if why is None:
                log.info(
                    "resuming at step %d with the checkpoint's carried state: each row goes on from it if the first "
                    "batch finds the row where it stopped",
                    step,
                )
            else:
                log.info("resuming at step %d: %s, so every row starts its clip's state afresh", step, why)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clipping by norm under FSDP: the gradients are sharded, so the root FSDP module takes their
        norm across ranks (Lightning's own clipping refuses to run there); elsewhere Lightning's."""
        root = self.trainer.strategy.model
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and hasattr(root, "clip_grad_norm_"):
            root.clip_grad_norm_(gradient_clip_val)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)


def _rate_change(old: float, new: float) -> str:
    """How a redrawn schedule moves the learning rate at the step resumed, as the log shows rates."""
    old_text, new_text = f"{old:.3g}", f"{new:.3g}"
    if old_text == new_text:  # (in the warm-up, say: the schedules part later)
        return f"is {new_text} at this step under both"
    return f"goes from {old_text} to {new_text}"
