"""Training throughput, and whether the data or the model is the bottleneck.

Every ``log_every_n_steps`` optimizer steps (when Lightning writes a step's logs) this logs
``train/tokens_per_s``: real tokens (padding excluded, as counted by the training step) per second
of wall time over the interval, summed over processes, and shown in the progress bar; and
``train/data_wait``: the fraction of the interval the training
loop spent between one batch's end and the next one's start, which is where it waits for the data
loader (validation runs and checkpoint saves are left out of both). A data wait near 1 means
decoding or tokenizing sets the pace (more ``data.num_workers``, smaller frames); near 0, the model does.

At the end of a fit it also keeps what the run's training cost, to compare runs (a run's summary, a
sweep's table): `mean_tokens_per_s`, the same count over all of its training time, and `fit_minutes`,
validation included. A resumed run's count goes on from its checkpoint's (`state_dict`: the logged
intervals before the save, the tokens and seconds of each; a checkpoint of an older version holds none,
and the count starts at the resume).

Checkpoint callbacks run after every other callback's hooks, so their saves fall in that gap between
batches: they are timed by wrapping ``trainer.save_checkpoint`` (through which every save goes) for
the length of the fit.
"""

from __future__ import annotations

import time

import lightning as L
import torch


class Throughput(L.Callback):
    """Logs ``train/tokens_per_s`` and ``train/data_wait`` once per logging interval."""

    def __init__(self) -> None:
        self._reset(None)
        self._val_start: float | None = None
        self._saved_since_batch = 0.0  # checkpoint saves (paused) since the last training batch ended
        self._step_seen: int | None = None  # global_step at the last batch end
        self._fit_start: float | None = None
        self._fit_paused = 0.0  # the fit's validation and checkpoint-saving time
        self._fit_tokens: torch.Tensor | int = 0
        self._logged = {"tokens": 0.0, "seconds": 0.0}  # this fit's logged intervals, summed over processes
        self._earlier = {"tokens": 0.0, "seconds": 0.0, "wall": 0.0}  # before this fit (a resumed run's checkpoint)
        self.mean_tokens_per_s: float | None = None
        """The run's training throughput, summed over processes (None before a fit has ended)."""
        self.fit_minutes: float | None = None
        """The run's training time, validation and checkpoint saves included."""

    def state_dict(self) -> dict[str, float]:
        wall = 0.0 if self._fit_start is None else time.perf_counter() - self._fit_start
        return {
            "tokens": self._earlier["tokens"] + self._logged["tokens"],
            "seconds": self._earlier["seconds"] + self._logged["seconds"],
            "wall": self._earlier["wall"] + wall,
        }

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._earlier = {key: float(state_dict.get(key, 0.0)) for key in self._earlier}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or "save_checkpoint" in vars(trainer):
            return
        save = trainer.save_checkpoint

        def timed_save(*args, **kwargs):
            started = time.perf_counter()
            try:
                return save(*args, **kwargs)
            finally:
                if self._val_start is None:  # (a save inside a validation is paused already)
                    self._pause(time.perf_counter() - started)
                    self._saved_since_batch += time.perf_counter() - started

        trainer.save_checkpoint = timed_save

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        vars(trainer).pop("save_checkpoint", None)

    def _reset(self, now: float | None) -> None:
        self._start = now  # when the interval began (the end of the batch before it)
        self._last_end = now
        self._wait = 0.0
        self._paused = 0.0  # validation and checkpoint-saving time inside the interval
        self._tokens: torch.Tensor | int = 0  # summed on the device: no sync per batch

    def _pause(self, seconds: float) -> None:
        self._paused += seconds
        self._fit_paused += seconds

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(time.perf_counter())  # a resumed run starts mid-epoch: no epoch-start hook then
        self._step_seen = trainer.global_step
        self._fit_start, self._fit_paused, self._fit_tokens = self._start, 0.0, 0
        self._logged = {"tokens": 0.0, "seconds": 0.0}
        self.mean_tokens_per_s = self.fit_minutes = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fit_start is None:
            return
        wall = time.perf_counter() - self._fit_start
        tokens = torch.as_tensor(self._fit_tokens, dtype=torch.float64, device=pl_module.device)
        tokens = self._earlier["tokens"] + float(trainer.strategy.reduce(tokens, reduce_op="sum"))
        seconds = self._earlier["seconds"] + wall - self._fit_paused
        self.mean_tokens_per_s = tokens / max(seconds, 1e-9)
        self.fit_minutes = (self._earlier["wall"] + wall) / 60

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(time.perf_counter())

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        # paused from the last training batch's end (its saves, paused already, left out): Lightning
        # starts the validation's loader workers and reads its first batch before `on_validation_start`
        if self._val_start is not None:
            start = self._val_start  # (the sanity check's: no training batch before it)
            if self._last_end is not None:
                start = min(start, self._last_end + self._saved_since_batch)
            self._pause(time.perf_counter() - start)
            self._val_start = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._last_end is not None:
            self._wait += time.perf_counter() - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if isinstance(outputs, dict) and "tokens" in outputs:
            self._tokens = self._tokens + outputs["tokens"]
            self._fit_tokens = self._fit_tokens + outputs["tokens"]
        self._last_end, self._saved_since_batch = now, 0.0
        # Lightning writes a step's logs at the batch that takes an optimizer step whose count is a
        # multiple of log_every_n_steps (counted over the run: epochs end at limit_train_batches)
        stepped, self._step_seen = trainer.global_step != self._step_seen, trainer.global_step
        if not stepped or trainer.global_step % max(1, trainer.log_every_n_steps) or self._start is None:
            return
        wall = max(now - self._start - self._paused, 1e-9)
        wait = max(self._wait - self._paused, 0.0)
        tokens = torch.as_tensor(self._tokens, dtype=torch.float64, device=pl_module.device)
        tokens = float(trainer.strategy.reduce(tokens, reduce_op="sum"))
        pl_module.log("train/tokens_per_s", tokens / wall, prog_bar=True, rank_zero_only=True)
        pl_module.log("train/data_wait", wait / wall, rank_zero_only=True)
        self._logged = {"tokens": self._logged["tokens"] + tokens, "seconds": self._logged["seconds"] + wall}
        self._reset(now)
