"""SequenceModel: it asks the backbone, never a mixer's name, which parameters decay and whether
state can be carried."""

from __future__ import annotations

import logging
import math
from copy import deepcopy
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from embedhelpers import MIXERS, TOKENIZERS
from torch import Tensor

from ttt_mm.data import ClipInfo, ReadSpec, SyntheticClip, collate
from ttt_mm.data.datasets import read_item
from ttt_mm.module import NOMINAL_TOKENS, Diverged, SequenceModel, _rate_change
from ttt_mm.tokenizers.base import token_loss


def model(mixer: str, **kw) -> SequenceModel:
    backbone = {"_target_": "ttt_mm.backbone.Backbone", "dim": 32, "depth": 2, "mixer": MIXERS[mixer]}
    return SequenceModel(TOKENIZERS["audio"], backbone, **kw)


def test_weight_decay_skips_small_tensors_norms_and_what_the_mixers_name():
    m = model("ttt_linear")
    skip = m._no_decay()
    decayed = sorted(n for n, p in m.named_parameters() if id(p) not in skip)
    assert all(m.get_parameter(n).dim() >= 2 for n in decayed)
    assert "backbone.blocks.0.mixer.wqkv.weight" in decayed and "head.weight" in decayed
    assert "backbone.blocks.0.mixer.W" not in decayed  # the inner model's initial weights (TTTLayer says so)
    assert not any("norm" in n for n in decayed)


def test_position_and_modality_codes_take_no_weight_decay_and_the_patch_projection_does():
    backbone = {"_target_": "ttt_mm.backbone.Backbone", "dim": 32, "depth": 1, "mixer": MIXERS["ttt_linear"]}
    m = SequenceModel(TOKENIZERS["av"], backbone)
    skip = m._no_decay()
    assert id(m.tokenizer.video.pos) in skip and id(m.tokenizer.modality_embed.weight) in skip
    assert id(m.tokenizer.video.proj.weight) not in skip and id(m.tokenizer.audio.proj.weight) not in skip


def test_a_checkpoint_that_decayed_the_tokenizer_codes_resumes_with_each_state_on_its_parameter():
    backbone = {"_target_": "ttt_mm.backbone.Backbone", "dim": 32, "depth": 1, "mixer": MIXERS["ttt_linear"]}
    m = SequenceModel(TOKENIZERS["av"], backbone)
    params = list(m.parameters())
    skip, codes = m._no_decay(), {id(p) for p in m.tokenizer.no_weight_decay()}
    older = torch.optim.AdamW(  # the groups as written before the codes left weight decay
        [
            {"params": [p for p in params if id(p) not in skip or id(p) in codes], "weight_decay": 0.05},
            {"params": [p for p in params if id(p) in skip - codes], "weight_decay": 0.0},
        ]
    )
    for p in params:
        p.grad = torch.randn_like(p)
    older.step()
    checkpoint = {"optimizer_states": [older.state_dict()]}
    m._regroup_optimizer_state(checkpoint)
    m._trainer = SimpleNamespace(estimated_stepping_batches=100)
    now = m.configure_optimizers()["optimizer"]
    now.load_state_dict(checkpoint["optimizer_states"][0])  # refused without the regrouping
    for p in (m.tokenizer.video.pos, m.tokenizer.video.proj.weight, m.head.weight):
        assert torch.equal(now.state[p]["exp_avg"], older.state[p]["exp_avg"])
    assert now.param_groups[1]["weight_decay"] == 0.0 and any(
        p is m.tokenizer.video.pos for p in now.param_groups[1]["params"]
    )


def test_carrying_state_needs_a_bounded_mixer():
    assert model("ttt_linear", carry_state=True).hparams.carry_state
    assert model("lact", carry_state=True).hparams.carry_state
    with pytest.raises(ValueError, match="carry_state=true needs a mixer with a bounded state"):
        model("attention", carry_state=True)


@pytest.mark.parametrize(
    "setting,message",
    [
        ({"lr": -1.0}, "model.lr must be a number >= 0; got -1.0"),
        ({"betas": (0.9, 1.5)}, r"model.betas must be two numbers in \[0, 1\)"),
        ({"weight_decay": -1.0}, "model.weight_decay must be 0 or more"),
        ({"warmup_steps": -5}, "model.warmup_steps must be 0 or more"),
        ({"min_lr_ratio": 2.0}, r"model.min_lr_ratio must lie in \[0, 1\]"),
    ],
)
def test_optimizer_settings_out_of_range_are_refused_for_training_only(setting, message):
    """The optimizer refused a negative rate only at the first step, with a traceback; a negative
    warm-up or weight decay ran quietly as something else. A model with such settings still loads
    (a checkpoint trained with them is evaluated and embedded)."""
    built = model("ttt_linear", **setting)
    with pytest.raises(ValueError, match=message):
        built.check_optimizer_settings()
    model("ttt_linear", lr=0.0, warmup_steps=0, weight_decay=0.0).check_optimizer_settings()  # the edges are fine


def test_lact_initial_fast_weights_and_qk_affine_take_no_weight_decay():
    m = model("lact")
    skip = m._no_decay()
    mixer = "backbone.blocks.0.mixer"
    for name in ("w0", "w1", "w2", "qk_scale", "qk_offset"):
        assert id(m.get_parameter(f"{mixer}.{name}")) in skip, name
    assert id(m.get_parameter(f"{mixer}.wqkv.weight")) not in skip


def test_weight_decay_groups_survive_parameters_shown_as_flat_shards():
    """FSDP (use_orig_params) shows every parameter as a 1-D shard by the time the optimizer is built:
    the groups are decided on the shapes the model was built with."""
    m = model("lact")
    decayed_before = {id(p) for p in m.parameters() if id(p) not in m._no_decay()}
    for p in m.parameters():
        p.data = p.data.flatten()
    m._trainer = SimpleNamespace(estimated_stepping_batches=100)
    decay, no_decay = m.configure_optimizers()["optimizer"].param_groups
    assert {id(p) for p in decay["params"]} == decayed_before and decay["weight_decay"] > 0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


def test_gradient_clipping_under_fsdp_goes_through_the_root_module():
    class Root:  # what FSDP's root module offers: the norm of sharded gradients across ranks
        def clip_grad_norm_(self, max_norm):
            calls.append(max_norm)

    calls = []
    m = model("ttt_linear")
    m._trainer = SimpleNamespace(strategy=SimpleNamespace(model=Root()))
    m.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    assert calls == [1.0]


def test_a_rank_without_validation_batches_still_joins_the_one_reduction():
    """Scores are reduced once per epoch on every rank (a rank whose share of the clips was unreadable
    included), never per batch: ranks with different batch counts cannot wait on each other."""
    reduced = []
    m = model("ttt_linear")
    strategy = SimpleNamespace(reduce=lambda t, reduce_op: reduced.append(t.clone()) or t)
    m._trainer = SimpleNamespace(strategy=strategy, sanity_checking=False, is_global_zero=True)
    m.on_validation_epoch_start()
    m.on_validation_epoch_end()
    assert len(reduced) == 1 and reduced[0].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert m.unscored == {"val"}  # (no rank scored a token: said, not logged as a loss)


BACKBONE = {"_target_": "ttt_mm.backbone.Backbone", "dim": 32, "depth": 1, "mixer": MIXERS["ttt_linear"]}


def _av_batch(seconds: float) -> dict:
    spec = ReadSpec(sample_rate=16000, fps=8.0, size=32, min_seconds=0.1)
    return collate([read_item(ClipInfo(SyntheticClip(0, i)), 2.0, seconds, spec) for i in range(2)])


@pytest.mark.parametrize("mixer", ["ttt_linear", "attention", "lact"])
def test_a_window_too_short_to_score_gives_zero_losses_that_reach_every_parameter(mixer):
    """A file's last window can hold less than one step (with one row per rank, a whole batch of them):
    nothing to score, but the step must not end the run, and the loss must reach every parameter, or
    DDP's reducer on that rank skips their buckets and the ranks hang (the mixers' empty inputs reach
    none of their weights)."""
    m = SequenceModel(
        TOKENIZERS["av"], {"_target_": "ttt_mm.backbone.Backbone", "dim": 32, "depth": 1, "mixer": MIXERS[mixer]}
    )
    tokens, pred, _ = m(_av_batch(0.125))  # half a step: fewer tokens than the offset
    loss, copy, n, copied = m.losses(tokens, pred)
    assert (
        tokens.mask.shape[1] <= m.offset and float(loss.detach()) == float(copy) == 0.0 and int(n) == int(copied) == 0
    )
    loss.backward()
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())


def fit(m: SequenceModel, batches: list[dict], **settings) -> None:
    """``m`` fitted on ``batches`` in order by a bare CPU trainer with these ``settings``."""
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = L.Trainer(accelerator="cpu", enable_model_summary=False, **quiet, **settings)
    trainer.fit(m, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))


class _Snapshots(L.Callback):
    def __init__(self):
        self.weights, self.steps = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append([p.detach().clone() for p in pl_module.parameters()])
        opt = trainer.optimizers[0]
        self.steps.append(max((float(s["step"]) for s in opt.state.values() if "step" in s), default=0))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_step_that_scored_no_token_leaves_the_weights_and_the_optimizer_as_they_are(accumulate):
    """Its gradients are all zero, but AdamW would still move every weight by its momentum and decay."""
    m = SequenceModel(TOKENIZERS["av"], BACKBONE, weight_decay=0.5, warmup_steps=0)
    full, short = _av_batch(1.0), _av_batch(0.125)  # short: fewer tokens than the offset
    batches = [full] * accumulate + [short] * accumulate + [full, short][:accumulate]
    snaps = _Snapshots()
    fit(m, batches, max_steps=3, callbacks=[snaps], accumulate_grad_batches=accumulate)
    ends = [i * accumulate + accumulate - 1 for i in range(3)]  # the batch that ends each step
    first, skipped, mixed = (snaps.weights[i] for i in ends)
    assert all(torch.equal(a, b) for a, b in zip(first, skipped))  # the step of short windows only: nothing moved
    assert snaps.steps[ends[0]] == snaps.steps[ends[1]] == 1
    assert not all(torch.equal(a, b) for a, b in zip(skipped, mixed)) and snaps.steps[ends[2]] == 2


def test_a_rank_that_scored_nothing_still_steps_when_another_rank_scored(caplog):
    """Every rank decides on the count summed over ranks, so all step or none do (the averaged
    gradients are the same on each)."""
    m = model("ttt_linear")
    other_rank = torch.tensor([2.0, 4.0, 5.0, 5.0, 0.0, 0.0])  # [loss, copy, scored, copied, not finite, bad gradients]
    m._trainer = _ranks(other_rank)
    m.log = lambda *args, **kwargs: None
    for p in m.parameters():
        p.grad = torch.ones_like(p)  # (a sum's gradient, averaged over the two ranks)
    optimizer = torch.optim.AdamW(m.parameters())
    m._unstepped = torch.zeros(5)
    m.on_before_optimizer_step(optimizer)
    scale = 2 * NOMINAL_TOKENS / 5  # (the mean's: x ranks / 5 tokens, the batch's sum divided by NOMINAL_TOKENS)
    assert all(torch.allclose(p.grad, torch.full_like(p, scale)) for p in m.parameters())
    other_rank.zero_()
    m._unstepped = torch.zeros(5)
    with caplog.at_level(logging.INFO, logger="ttt_mm.module"):
        m.on_before_optimizer_step(optimizer)
    assert all(p.grad is None for p in m.parameters()) and m._unstepped is None
    assert "the step counts, in trainer.max_steps and the learning-rate schedule" in caplog.text  # (it moves on)


def test_a_loss_that_is_not_finite_on_any_rank_ends_the_run_on_every_rank():
    """(so that no rank steps on NaN, and none waits for the others at the next step's collective)"""
    m = model("ttt_linear")
    other_rank = torch.tensor([2.0, 4.0, 5.0, 5.0, 1.0, 0.0])  # another rank's batch was not finite
    m._trainer = _ranks(other_rank, global_step=3)
    m.log = lambda *args, **kwargs: None
    m._unstepped = torch.tensor([3.0, 6.0, 7.0, 7.0, 0.0])
    with pytest.raises(Diverged, match=r"^the training loss is not finite at step 3 .*lower model.lr \(now 0.002\)"):
        m.on_before_optimizer_step(torch.optim.AdamW(m.parameters()))
    assert m._unstepped is None
    other_rank.zero_()
    m._unstepped = torch.tensor([3.0, 6.0, 7.0, 7.0, 0.0])
    m.on_before_optimizer_step(torch.optim.AdamW(m.parameters()))  # (all finite: it steps)


def test_gradients_that_are_not_finite_end_the_run_though_the_loss_is():
    """An overflow in the backward pass: the loss was finite, so the step went on; clipping turned the
    gradients to NaN, the step every weight, and `last.ckpt` could keep them for a resume."""
    m = model("ttt_linear")
    m._trainer = _ranks(torch.zeros(6), global_step=4)
    m.log = lambda *args, **kwargs: None
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    next(m.parameters()).grad[0] = math.inf
    m._unstepped = torch.tensor([3.0, 6.0, 7.0, 7.0, 0.0])
    with pytest.raises(Diverged, match=r"^the training loss is finite but its gradients are not finite at step 4 "):
        m.on_before_optimizer_step(torch.optim.AdamW(m.parameters()))
    next(m.parameters()).grad.zero_()
    m._unstepped = torch.tensor([3.0, 6.0, 7.0, 7.0, 0.0])
    m.on_before_optimizer_step(torch.optim.AdamW(m.parameters()))  # (finite: it steps)
    half = [torch.full((100,), 1e4, dtype=torch.float16)]  # (finite, though their norm overflows float16)
    assert m._gradients_not_finite([SimpleNamespace(grad=g) for g in half]).item() == 0.0
    m._trainer.precision_plugin = SimpleNamespace(scaler=object())  # float16's loss scaling skips such steps
    next(m.parameters()).grad[0] = math.nan
    m._unstepped = torch.tensor([3.0, 6.0, 7.0, 7.0, 0.0])
    m.on_before_optimizer_step(torch.optim.AdamW(m.parameters()))


def test_the_copy_baseline_copies_the_same_slot_one_step_back_whatever_is_predicted():
    backbone = {"_target_": "ttt_mm.backbone.Backbone", "dim": 32, "depth": 1, "mixer": MIXERS["ttt_linear"]}
    step, token = (
        SequenceModel(TOKENIZERS["av"], backbone),
        SequenceModel(TOKENIZERS["av"], backbone, predict="next_token"),
    )
    batch = _av_batch(1.0)
    tokens = step.tokenizer(batch)
    P = step.tokenizer.tokens_per_step
    targets = tokens.targets

    # by hand: every target from the second step on, guessed by the same slot's target one step back
    by_hand = token_loss(targets[:, P:], targets[:, :-P], step.tokenizer.target_widths(tokens.modality[:, P:]), "mse")
    for model in (step, token):
        s = model.losses(tokens, targets.new_zeros(targets.shape))
        assert float(s.copy / s.copied) == pytest.approx(float(by_hand.mean()), rel=1e-6)  # not the neighbouring token
    assert int(token.losses(tokens, targets).copied) < int(token.losses(tokens, targets).scored)  # (its own count)


def test_norms_biases_and_what_the_mixers_name_take_no_weight_decay_in_a_fresh_optimizer():
    m = model("ttt_linear", weight_decay=0.3)
    m._trainer = SimpleNamespace(estimated_stepping_batches=100)
    decayed, exempt = m.configure_optimizers()["optimizer"].param_groups
    assert decayed["weight_decay"] == 0.3 and exempt["weight_decay"] == 0.0
    assert {id(p) for p in exempt["params"]} == m._no_decay() and decayed["params"]


def test_the_rate_warms_up_from_its_first_step_then_falls_to_its_floor():
    m = model("ttt_linear", warmup_steps=4, min_lr_ratio=0.1)
    factors = [m._lr_factor(step, 100) for step in range(5)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0] and factors[4] == pytest.approx(1.0, abs=1e-3)  # no step at 0
    assert m._lr_factor(100, 100) == pytest.approx(0.1) and m._lr_factor(52, 100) == pytest.approx(0.55)
    short = model("ttt_linear", warmup_steps=50)  # a run shorter than the warm-up: half of it warms up
    assert short._lr_factor(4, 10) == 1.0 and short._lr_factor(9, 10) < 1.0


def test_a_training_step_logs_the_loss_over_the_copy_baselines_and_counts_real_tokens():
    m = SequenceModel(TOKENIZERS["av"], BACKBONE)
    batch = _av_batch(1.0)
    batch["audio_lengths"][1] //= 2  # a shorter second row: padding, not tokens
    logged = {}
    m.log = lambda name, value, **kw: logged.setdefault(name, value)
    m._trainer = _ranks(torch.zeros(6))
    out = m.training_step(batch, 0)
    m.on_before_optimizer_step(torch.optim.AdamW(m.parameters()))  # (the step's mean, over its batches and ranks)
    tokens, pred, _ = m(batch)
    s = m.losses(tokens, pred)
    assert logged["train/loss"] == pytest.approx(float(s.loss.detach() / s.scored), rel=1e-5)
    ratio = float(s.loss.detach() * s.copied / (s.copy * s.scored))
    assert logged["train/loss_ratio_copy"] == pytest.approx(ratio, rel=1e-5)
    assert int(out["tokens"]) == int(tokens.mask.sum()) < tokens.mask.numel()
    m._unstepped = torch.tensor([2.0, 0.0, 5.0, 5.0, 0.0])  # a still picture: the copy is exact
    logged.clear()
    m.on_before_optimizer_step(torch.optim.AdamW(m.parameters()))
    # (its ratio reached 1e12; left unlogged, the loggers repeated the last step's)
    assert logged["train/loss"] == 0.4 and math.isnan(logged["train/loss_ratio_copy"])
    m._unstepped = torch.ones(5)  # (sums of a fit stopped between its batches and its step)
    m.on_train_start()
    assert m._unstepped is None  # (the next fit's first step would count them)


def _ranks(other_rank: Tensor, global_step: int = 0, accumulate: int = 1) -> SimpleNamespace:
    """A trainer of two ranks, the other's sums ``other_rank``."""
    return SimpleNamespace(
        strategy=SimpleNamespace(reduce=lambda t, reduce_op: t + other_rank),
        global_step=global_step,
        current_epoch=0,
        accumulate_grad_batches=accumulate,
        world_size=2,
    )


@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_steps_gradient_is_that_of_the_mean_over_every_token_it_scored(accumulate):
    """Each batch's loss was its own mean: with accumulation a short window (or one that scored nothing)
    counted as much as a full batch, and halved the step's gradient."""
    torch.manual_seed(0)
    m = SequenceModel(TOKENIZERS["av"], BACKBONE)
    full, short = _av_batch(1.0), _av_batch(0.5)
    batches = [full, short] if accumulate == 2 else [full]
    expected = deepcopy(m)
    sums = [expected.losses(*expected(b)[:2]) for b in batches]
    (sum(s.loss for s in sums) / sum(s.scored for s in sums)).backward()
    seen = []
    step = m.on_before_optimizer_step

    def record(optimizer):
        step(optimizer)
        seen.append([p.grad.clone() for p in m.parameters()])

    m.on_before_optimizer_step = record
    fit(m, batches, max_steps=1, accumulate_grad_batches=accumulate)
    for got, want in zip(seen[0], (p.grad for p in expected.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_a_redrawn_schedule_says_how_the_rate_moves_or_that_it_does_not_at_this_step():
    assert _rate_change(2e-4, 1.3e-3) == "goes from 0.0002 to 0.0013"
    assert _rate_change(2e-3, 2e-3 * (1 + 1e-9)) == "is 0.002 at this step under both"  # (as the log shows it)


def test_a_restarted_evaluation_pass_voids_what_was_scored_before_it_and_padding_is_not_scored():
    """The loader marks the first batch of a pass it starts again (a decoder crashed on a file):
    the files scored before it are scored again, not twice; and the batches a process repeats while
    others evaluate (under FSDP) are not scored at all."""
    m = model("ttt_linear").eval()
    spec = ReadSpec(("audio",))
    first, second = (
        collate([read_item(ClipInfo(SyntheticClip(0, index)), 0.0, 1.0, spec)] * 2) | {"window_index": torch.zeros(2)}
        for index in (1, 2)
    )
    with torch.no_grad():
        m._start_scoring()
        m._score(second)
        alone = m._eval_sums.clone()
        m._start_scoring()
        m._score(first)
        m._score(second | {"restarted": True})
        restarted = m._eval_sums.clone()
        m._score(first | {"padding": True})  # run for FSDP's gathers, not scored (`EvenPasses`)
    assert torch.equal(restarted, alone) and torch.equal(m._eval_sums, alone)
