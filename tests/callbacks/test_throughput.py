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


def test_tokens_per_second_and_data_wait_over_one_interval(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    trainer = SimpleNamespace(log_every_n_steps=2, strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))
    module, cb = Module(), Throughput()
    cb.on_train_epoch_start(trainer, module)
    for i, (wait, compute, tokens) in enumerate([(1.0, 3.0, 40), (2.0, 4.0, 60)]):
        if i == 1:  # a validation run between two batches counts neither as waiting nor as training
            cb.on_validation_start(trainer, module)
            clock.now += 50.0
            cb.on_validation_end(trainer, module)
        clock.now += wait
        cb.on_train_batch_start(trainer, module, None, i)
        clock.now += compute
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0), "tokens": torch.tensor(tokens)}, None, i)
    assert module.logged["train/tokens_per_s"] == (40 + 60) / 10.0
    assert module.logged["train/data_wait"] == 3.0 / 10.0


def test_nothing_is_logged_before_the_interval_ends(monkeypatch):
    monkeypatch.setattr(throughput.time, "perf_counter", Clock())
    trainer = SimpleNamespace(log_every_n_steps=5, strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))
    module, cb = Module(), Throughput()
    cb.on_train_epoch_start(trainer, module)
    for i in range(4):
        cb.on_train_batch_start(trainer, module, None, i)
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0), "tokens": torch.tensor(8)}, None, i)
    assert module.logged == {}
