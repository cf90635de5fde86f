"""Lightning's progress bar, with a total that fits a run counted in steps.

Training draws windows without end, so a run's length is ``trainer.max_steps``. Lightning's bar
counts batches but takes its total from the steps left, so with ``accumulate_grad_batches`` it ran
past its total, and a resumed run, whose epoch counts on from the checkpoint's batches, showed
``350/?``. Here the total is in batches, and a resumed epoch's bar starts where it stood. A run
stopped by Ctrl-C or SIGTERM closes its bars at once, so that its summary is the last thing printed.

Where stdout is no terminal (a scheduler's log file, ``nohup``, a pipe), a bar is a stream of
carriage returns and cursor moves that reads as one endless line. There the bar gives way to a
plain line every ``line_seconds``, after each validation and at the end.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from ttt_mm.messages.progress import LINE_SECONDS


class ProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` whose training bar reads ``batches done / batches in the run``.

    Args:
        lines: print plain lines instead of bars; None: where stdout is no terminal.
        line_seconds: the least time between two lines (the end and each validation print one anyway).
    """

    def __init__(
        self, *args: Any, lines: bool | None = None, line_seconds: float = LINE_SECONDS, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lines = lines
        self.line_seconds = line_seconds
        self._left: int | None = None  # batches this run trains, where it is counted in steps
        self._placed = False  # the bar has been set to where this run's batches start
        self._started = self._last_line = 0.0  # (time.monotonic(): this run's first batch, the last line)
        self._batches = 0  # this run's, over its epochs (a bar counts its epoch's)
        self._line_at = 0  # `_batches` when the last line was printed
        self._validating = 0.0  # seconds this run spent validating, which the rate leaves out
        self._validation_from: float | None = None

    def _as_lines(self) -> bool:
        return not sys.stdout.isatty() if self.lines is None else self.lines

    def _prints_lines(self) -> bool:
        return self.is_enabled and self._as_lines()  # (refresh_rate=0 and ranks other than the first: nothing)

    def _counter(self, make_bar) -> Tqdm:
        """Lightning's bar, or where lines are printed a silent one that only counts (it draws nothing)."""
        return Tqdm(disable=True) if self._as_lines() else make_bar()

    def init_sanity_tqdm(self) -> Tqdm:
        return self._counter(super().init_sanity_tqdm)

    def init_train_tqdm(self) -> Tqdm:
        return self._counter(super().init_train_tqdm)

    def init_validation_tqdm(self) -> Tqdm:
        return self._counter(super().init_validation_tqdm)

    def init_test_tqdm(self) -> Tqdm:
        return self._counter(super().init_test_tqdm)

    def init_predict_tqdm(self) -> Tqdm:
        return self._counter(super().init_predict_tqdm)

    def _print_line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """``Epoch 0: 20/400 batches, 00:13, 1.51 batches/s, train/loss=0.590, ...`` on stdout: the time
        since the run's start, and the training rate (validations left out, as ``train/tokens_per_s`` does)."""
        bar = self.train_progress_bar
        elapsed = time.monotonic() - self._started
        training = elapsed - self._validating
        rate = self._batches / training if training > 0 else 0.0
        total = "?" if bar.total is None or not math.isfinite(bar.total) else bar.total
        metrics = "".join(
            f", {k}={Tqdm.format_num(v) if isinstance(v, (int, float)) else v}"
            for k, v in self.get_metrics(trainer, pl_module).items()
        )
        when = Tqdm.format_interval(elapsed)
        name = (bar.desc or "Training").removesuffix(": ")  # (tqdm adds ": " to a description)
        print(f"{name}: {bar.n}/{total} batches, {when}, {rate:.2f} batches/s{metrics}", flush=True)
        self._last_line, self._line_at = time.monotonic(), self._batches

    def _in_steps(self) -> bool:
        trainer = self.trainer
        return not math.isfinite(trainer.num_training_batches) and trainer.max_epochs == -1 and trainer.max_steps > 0

    @property
    def total_train_batches(self) -> int | float:
        """The batches left in this run: its steps left times the batches of a step (Lightning: the steps)."""
        trainer = self.trainer
        if self._in_steps():
            return (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
        return super().total_train_batches

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._left = self.total_train_batches if self._in_steps() else None
        self._placed = False
        self._started = self._last_line = time.monotonic()
        self._batches = self._line_at = 0
        self._validating, self._validation_from = 0.0, None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if not self._placed and bar is not None:
            # A resumed run's first batch is not its epoch's first: Lightning counts on from the checkpoint's
            # batches (and starts no new epoch, nor sets a total, when the checkpoint fell inside one).
            self._placed = True
            if self._left is not None:
                bar.total = batch_idx + self._left
            bar.initial = bar.n = bar.last_print_n = batch_idx  # (the rate counts this run's batches only)
            bar.set_description(f"Epoch {trainer.current_epoch}")
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._prints_lines() and bar is not None:
            bar.n = batch_idx + 1  # (Lightning counts only every refresh_rate batches)
            self._batches += 1

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self._print_line_if_due(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print_line_if_due(trainer, pl_module)  # (before the next epoch resets the bar to 0)
        super().on_train_epoch_end(trainer, pl_module)

    def _print_line_if_due(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A line that is due is printed before the next batch (or at the epoch's end), not after the
        last one: a validation run in between prints its own, and the two read as the same line twice."""
        due = time.monotonic() - self._last_line >= self.line_seconds
        if self._prints_lines() and self.train_progress_bar is not None and self._unprinted() and due:
            self._print_line(trainer, pl_module)

    def _unprinted(self) -> bool:
        """Whether batches ran since the last line (none has before this run's first batch)."""
        return self._batches > self._line_at

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_start(trainer, pl_module)
        self._validation_from = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._validation_from is not None and not trainer.sanity_checking:  # (the sanity check: before the start)
            self._validating += time.monotonic() - self._validation_from
        self._validation_from = None
        if self._prints_lines() and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._print_line(trainer, pl_module)  # (with the validation's metrics)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bar = self.train_progress_bar
        if self._prints_lines() and bar is not None and self._unprinted():
            self._print_line(trainer, pl_module)  # (where a validation at the last batch has not)
        super().on_train_end(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A stopped run's bars are closed now: closed at exit, they were drawn again after the run's summary."""
        for name in ("_train_progress_bar", "_val_progress_bar", "_test_progress_bar"):  # (None until shown)
            if (bar := getattr(self, name, None)) is not None:
                bar.close()
