"""`Throughput`: tokens per second of real tokens and the data-wait fraction, per logging interval."""

from types import SimpleNamespace

import torch

from ttt_mm.callbacks import Throughput, throughput


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Module:
    device = torch.device("cpu")

    def __init__(self):
        self.logged = {}

    def log(self, name, value, **kw):
        self.logged[name] = value


def started(monkeypatch, log_every_n_steps: int):
    """A fake clock, a one-process trainer at step 0, a module that records what it logs, and the callback
    with training started."""
    clock = Clock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    reduce = SimpleNamespace(reduce=lambda t, reduce_op: t)  # one process: the sum is the value
    trainer = SimpleNamespace(log_every_n_steps=log_every_n_steps, global_step=0, strategy=reduce)
    module, cb = Module(), Throughput()
    cb.on_train_start(trainer, module)
    return clock, trainer, module, cb


def test_tokens_per_second_and_data_wait_over_one_interval(monkeypatch):
    clock, trainer, module, cb = started(monkeypatch, log_every_n_steps=2)
    for i, (wait, compute, tokens) in enumerate([(1.0, 3.0, 40), (2.0, 4.0, 60)]):
        if i == 1:  # a validation run between two batches counts neither as waiting nor as training
            cb.on_validation_start(trainer, module)
            clock.now += 50.0
            cb.on_validation_end(trainer, module)
        clock.now += wait
        cb.on_train_batch_start(trainer, module, None, i)
        clock.now += compute
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0), "tokens": torch.tensor(tokens)}, None, i)
    assert module.logged["train/tokens_per_s"] == (40 + 60) / 10.0
    assert module.logged["train/data_wait"] == 3.0 / 10.0


def test_tokens_are_summed_over_processes(monkeypatch):
    """``train/tokens_per_s`` is the run's throughput: every rank's tokens, not the first one's."""
    clock, trainer, module, cb = started(monkeypatch, log_every_n_steps=1)
    trainer.strategy = SimpleNamespace(reduce=lambda t, reduce_op: t * 2 if reduce_op == "sum" else t)  # 2 ranks
    cb.on_train_batch_start(trainer, module, None, 0)
    clock.now += 4.0
    trainer.global_step += 1
    cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0), "tokens": torch.tensor(40)}, None, 0)
    assert module.logged["train/tokens_per_s"] == 2 * 40 / 4.0


def test_the_fits_mean_covers_every_batch_and_leaves_out_validation(monkeypatch):
    """What a run's summary and a sweep's table give: over the whole fit, not the last interval logged."""
    clock, trainer, module, cb = started(monkeypatch, log_every_n_steps=2)
    trainer.strategy = SimpleNamespace(reduce=lambda t, reduce_op: t * 2 if reduce_op == "sum" else t)  # 2 ranks
    for i, (seconds, tokens) in enumerate([(2.0, 10), (2.0, 10), (6.0, 30)]):  # the last batch: after the last log
        cb.on_train_batch_start(trainer, module, None, i)
        clock.now += seconds
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0), "tokens": torch.tensor(tokens)}, None, i)
        if i == 0:
            cb.on_validation_start(trainer, module)
            clock.now += 100.0
            cb.on_validation_end(trainer, module)
    assert module.logged["train/tokens_per_s"] == 2 * 20 / 4.0 and cb.mean_tokens_per_s is None
    saved = cb.state_dict()  # (a checkpoint now: the logged interval's count, and the time so far)
    assert saved == {"tokens": 2 * 20, "seconds": 4.0, "wall": 110.0}
    cb.on_train_end(trainer, module)
    assert cb.mean_tokens_per_s == 2 * 50 / 10.0 and cb.fit_minutes == 110.0 / 60

    resumed = Throughput()  # from that checkpoint: its count goes on
    resumed.load_state_dict(saved)
    resumed.on_train_start(trainer, module)
    resumed.on_train_batch_start(trainer, module, None, 0)
    clock.now += 6.0
    trainer.global_step += 1
    resumed.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0), "tokens": torch.tensor(30)}, None, 0)
    resumed.on_train_end(trainer, module)
    assert resumed.mean_tokens_per_s == (2 * 20 + 2 * 30) / (4.0 + 6.0) and resumed.fit_minutes == (110.0 + 6.0) / 60


def test_nothing_is_logged_before_the_interval_ends(monkeypatch):
    _, trainer, module, cb = started(monkeypatch, log_every_n_steps=5)
    for i in range(4):
        cb.on_train_batch_start(trainer, module, None, i)
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0), "tokens": torch.tensor(8)}, None, i)
    assert module.logged == {}


def saving(monkeypatch):
    """A fake clock, a one-process trainer whose saves take 30 s (as Lightning's checkpoint callbacks make
    them, after every other callback's hook), a recording module, and the callback with training started."""
    clock = Clock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)

    class Trainer:
        log_every_n_steps = 2
        global_step = 0
        strategy = SimpleNamespace(reduce=lambda t, reduce_op: t)

        def save_checkpoint(self, path, weights_only=False):
            clock.now += 30.0

    trainer, module, cb = Trainer(), Module(), Throughput()
    cb.setup(trainer, module, "fit")
    cb.on_train_start(trainer, module)
    return clock, trainer, module, cb


def one_batch(clock, trainer, module, cb, i: int) -> None:
    """Batch ``i``: 1 s waited for, 4 s of training, 50 tokens, an optimizer step."""
    clock.now += 1.0
    cb.on_train_batch_start(trainer, module, None, i)
    clock.now += 4.0
    trainer.global_step += 1
    cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0), "tokens": torch.tensor(50)}, None, i)


def test_checkpoint_saves_between_batches_count_neither_as_waiting_nor_as_training(monkeypatch):
    clock, trainer, module, cb = saving(monkeypatch)
    for i in range(2):
        one_batch(clock, trainer, module, cb, i)
        trainer.save_checkpoint("last.ckpt")
    assert module.logged["train/tokens_per_s"] == 100 / 10.0 and module.logged["train/data_wait"] == 2.0 / 10.0
    cb.teardown(trainer, module, "fit")
    assert "save_checkpoint" not in vars(trainer)


def test_a_validations_loader_start_before_its_first_hook_counts_as_validation(monkeypatch):
    """Lightning starts the validation's loader workers and reads its first batch before
    `on_validation_start`: those seconds counted as training and as waiting for data. A save between
    the batch and the validation stays paused once."""
    clock, trainer, module, cb = saving(monkeypatch)
    for i in range(2):
        one_batch(clock, trainer, module, cb, i)
        if i == 0:
            trainer.save_checkpoint("last.ckpt")  # (every n steps, before the validation)
            clock.now += 7.0  # the validation's loader starts and reads its first batch
            cb.on_validation_start(trainer, module)
            clock.now += 20.0
            cb.on_validation_end(trainer, module)
    assert module.logged["train/tokens_per_s"] == 100 / 10.0 and module.logged["train/data_wait"] == 2.0 / 10.0
    cb.on_train_end(trainer, module)
    assert cb.mean_tokens_per_s == 100 / 10.0 and cb.fit_minutes == (10.0 + 30.0 + 27.0) / 60


def test_intervals_follow_the_optimizer_steps_lightning_logs_at_across_short_epochs(monkeypatch):
    """Epochs of 3 batches (limit_train_batches), 2 batches per optimizer step, logs every 2 steps:
    Lightning writes at steps 2, 4, 6, whatever the batch's index in its epoch."""
    clock, trainer, module, cb = started(monkeypatch, log_every_n_steps=2)
    logged_at = []
    for batch in range(12):
        cb.on_train_batch_start(trainer, module, None, batch % 3)
        clock.now += 1.0
        trainer.global_step += batch % 2  # the second batch of each pair steps
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0), "tokens": torch.tensor(10)}, None, batch % 3)
        if module.logged:
            logged_at.append(trainer.global_step)
            assert module.logged.pop("train/tokens_per_s") == 10.0 and module.logged.pop("train/data_wait") == 0.0
    assert logged_at == [2, 4, 6]
