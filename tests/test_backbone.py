"""The Backbone stack: streaming state across calls, intermediates, checkpointing, config errors."""

import re
from functools import partial

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ttt_mm.backbone import Backbone, Restart, state_tensors
from ttt_mm.layers import AttentionLayer, LaCTLayer, TTTLayer

CONFIGS = [
    ("ttt_linear", "transformer"),
    ("ttt_mlp", "transformer"),
    ("attention", "transformer"),
    ("ttt_linear", "mamba"),
    ("ttt_mlp", "mamba"),
    ("lact", "transformer"),
    ("lact", "mamba"),
]


def mixer_factory(name: str, variant: str = "transformer", num_heads: int = 4):
    """What conf/model/<name>.yaml builds: a partial the backbone calls with dim=."""
    if name == "attention":
        return partial(AttentionLayer, num_heads=num_heads)
    if name == "lact":  # chunks of 8 and a window of 6: the cuts below fall inside both
        return partial(LaCTLayer, num_heads=num_heads, chunk_size=8, window=6, fast_heads=2)
    mamba = variant == "mamba"
    inner = name.removeprefix("ttt_")
    return partial(TTTLayer, num_heads=num_heads, inner=inner, mini_batch_size=8, use_gate=mamba, share_qk=mamba)


def tiny(mixer, variant, **kw):
    return Backbone(dim=32, depth=2, mixer=mixer_factory(mixer, variant), variant=variant, **kw)


@pytest.mark.parametrize("mixer,variant", CONFIGS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"])
def test_streaming_in_pieces_equals_one_pass(mixer, variant, dtype, tol):
    torch.manual_seed(0)
    model = tiny(mixer, variant).to(dtype).eval()
    x = torch.randn(2, 53, 32, dtype=dtype)
    # Muon's Newton-Schulz steps multiply a perturbation of a near-zero singular value by up to
    # 4.08 ** 5 ~ 1e3: float32 rounding of differently grouped partial sums moves LaCT's fast weights
    # by up to ~2e-4 (twenty seeds). The float64 run at 1e-10 is the exactness check.
    state_tol = 1e-3 if mixer == "lact" and dtype == torch.float32 else tol
    with torch.no_grad():
        full, full_state = model(x)
        outs, state = [], None
        for a, b in [(0, 1), (1, 6), (6, 6), (6, 7), (7, 40), (40, 53)]:  # (6, 6): an empty call
            y, state = model(x[:, a:b], state)
            outs.append(y)
    assert (torch.cat(outs, 1) - full).abs().max().item() <= tol
    assert len(state_tensors(state)) >= 4
    for a, b in zip(state_tensors(state), state_tensors(full_state), strict=True):
        assert (a - b).abs().max().item() <= state_tol


@pytest.mark.parametrize("mixer,variant", CONFIGS)
def test_streaming_in_random_pieces_equals_one_pass(mixer, variant):
    """Cuts anywhere (empty calls included), not only the hand-picked ones above."""
    torch.manual_seed(0)
    model = tiny(mixer, variant).double().eval()
    x = torch.randn(2, 53, 32, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        full, _ = model(x)
        for _ in range(2):
            cuts = sorted(torch.randint(0, 54, (6,), generator=gen).tolist()) + [53]
            outs, state, start = [], None, 0
            for end in cuts:
                y, state = model(x[:, start:end], state)
                outs.append(y)
                start = end
            assert (torch.cat(outs, 1) - full).abs().max().item() <= 1e-10, cuts


@pytest.mark.parametrize("mixer", ["ttt_linear", "ttt_mlp"])
def test_ttt_state_has_a_fixed_size(mixer):
    model = tiny(mixer, "mamba").eval()
    with torch.no_grad():
        _, short = model(torch.randn(1, 17, 32))
        _, long = model(torch.randn(1, 300, 32))
    assert [t.shape for t in state_tensors(short)] == [t.shape for t in state_tensors(long)]


def test_intermediates_agree_with_forward():
    model = tiny("ttt_linear", "transformer").eval()
    x = torch.randn(1, 20, 32)
    with torch.no_grad():
        y, _ = model(x)
        y2, hidden, _ = model.forward_intermediates(x)
        _, last_only, _ = model.forward_intermediates(x, layers=(-1,))
    assert torch.equal(y, y2)
    assert len(hidden) == 2 and torch.equal(last_only[0], hidden[-1])
    assert torch.allclose(model.norm(hidden[-1]), y)
    with pytest.raises(ValueError, match=r"layers must be block indices from -2 to 1; got \[2\]"):
        model.forward_intermediates(x, layers=(0, 2))  # (not block 0 again, wrapped)


def test_activation_checkpointing_gives_the_same_gradients():
    x = torch.randn(2, 24, 32)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = tiny("ttt_linear", "mamba", checkpoint_activations=ckpt).train()
        y, _ = model(x)
        y.square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("variant", ["transformer", "mamba"])  # (mamba: the conv's cache too)
def test_detached_state_carries_values_but_no_graph(variant):
    model = tiny("ttt_linear", variant)
    _, state = model(torch.randn(1, 10, 32))
    assert any(t.requires_grad for t in state_tensors(state))
    detached = state.detach()
    assert not any(t.requires_grad for t in state_tensors(detached))
    assert all(torch.equal(a, b) for a, b in zip(state_tensors(state), state_tensors(detached)))


def test_bf16_autocast_16k_tokens_through_the_backbone_stays_finite():
    model = Backbone(dim=32, depth=1, mixer=partial(TTTLayer, num_heads=2)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = model(torch.randn(1, 16384, 32))
    assert torch.isfinite(y.float()).all()
    assert all(t.dtype == torch.float32 for t in state.blocks[0].mixer.core.params)


@pytest.mark.parametrize("mixer,variant", CONFIGS)
def test_bf16_mixed_training_step_runs_and_gives_float32_gradients(mixer, variant):
    """As Lightning's bf16-mixed runs a step: the forward under autocast, the backward after it (the
    hand-written backward passes then meet bfloat16 activations and float32 weights)."""
    torch.manual_seed(0)
    model = tiny(mixer, variant)
    x = torch.randn(2, 40, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = model(x)
    y.float().square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"mixer": "mamba2"}, "unknown mixer 'mamba2'"),
        ({"variant": "rwkv"}, "unknown variant"),
        ({"depth": 0}, "^depth must be positive; got 0$"),
        ({"depth": 2.0}, "^depth must be a whole number; got 2.0$"),  # (range() refused it, later)
        ({"mlp_ratio": "4"}, "^mlp_ratio must be a number; got '4'$"),
        ({"mlp_ratio": -1.0}, "^mlp_ratio must be positive; got -1.0$"),  # (a negative tensor size, later)
        ({"mlp_ratio": float("inf")}, "^mlp_ratio must be finite; got inf$"),
        ({"mlp_ratio": 0.01}, r"^mlp_ratio \(0.01\) leaves the MLP no hidden unit at dim 32$"),  # (trained without one)
    ],
)
def test_bad_configuration_is_a_clear_error(kw, message):
    with pytest.raises(ValueError, match=message):
        Backbone(**{"dim": 32, "depth": 2, "mixer": mixer_factory("ttt_linear"), **kw})


def test_the_backbone_asks_its_mixers_about_state_and_weight_decay():
    ttt, attention = tiny("ttt_mlp", "mamba"), tiny("attention", "transformer")
    assert ttt.bounded_state and not attention.bounded_state
    assert attention.no_weight_decay() == []
    names = {n for n, p in ttt.named_parameters() if any(p is q for q in ttt.no_weight_decay())}
    per_block = {"W1", "b1", "W2", "b2", "ln_weight", "ln_bias", "token_scale_delta"}
    assert names == {f"blocks.{i}.mixer.{n}" for i in range(2) for n in per_block}


def test_every_block_gets_its_own_mixer_built_with_the_backbone_width():
    made = []

    def factory(dim):
        made.append(dim)
        return AttentionLayer(dim, num_heads=2)

    model = Backbone(dim=16, depth=3, mixer=factory)
    assert made == [16, 16, 16] and len({id(b.mixer) for b in model.blocks}) == 3


@pytest.mark.parametrize("mixer,variant", CONFIGS)
@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # (a norm's, under autocast)
def test_an_input_of_the_wrong_shape_or_batch_is_refused_by_the_backbone_and_each_mixer(mixer, variant):
    """Each failed deep inside a layer (a reshape, RMSNorm, a conv), or not at all."""
    model = tiny(mixer, variant)
    _, state = model(torch.randn(2, 8, 32))
    block = model.blocks[0]
    for module, module_state in ((model, state), (block.mixer, state.blocks[0].mixer)):
        with pytest.raises(ValueError, match=r"^the state holds 2 batch rows; the input has 3 \(continue"):
            module(torch.randn(3, 8, 32), module_state)
        for shape in ((8, 32), (2, 8, 16)):
            with pytest.raises(
                ValueError, match=rf"^the input must be \[batch, tokens, 32\]; got {re.escape(str(shape))}$"
            ):
                module(torch.randn(*shape))
    with pytest.raises(ValueError, match="^the state is of 1 blocks; this backbone has 2$"):
        model(torch.randn(2, 8, 32), type(state)(state.blocks[:1]))
    with pytest.raises(ValueError, match="^the state is of 1 blocks; this backbone has 2$"):  # (said: zip() ...)
        model.check_state(type(state)(state.blocks[:1]))
    with pytest.raises(TypeError, match="^state must be a BackboneState .*; got tuple$"):
        model(torch.randn(2, 8, 32), (1, 2))
    with pytest.raises(ValueError, match=r"^restart must be \[batch\] = \[2\] \(a flag per row\); got \(1,\)$"):
        model(torch.randn(2, 8, 32), state, restart=torch.tensor([True]))  # (blamed the state's rows)
    with pytest.raises(ValueError, match=r"^restart must be a bool tensor \(a flag per row\); got torch.float32$"):
        model(torch.randn(2, 8, 32), state, restart=torch.tensor([0.3, 0.0]))  # (0.3 restarted its row)
    with pytest.raises(ValueError, match="^the input must be floating point .*; got torch.int64$"):
        model(torch.randint(0, 5, (2, 8, 32)))
    for module in (model, block.mixer):  # (a matmul's "expected m1 and m2 to have the same dtype")
        with pytest.raises(ValueError, match=r"^the input is torch.bfloat16 and the weights torch.float32: move"):
            module(torch.randn(2, 8, 32, dtype=torch.bfloat16))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # (autocast casts each op's inputs: any dtype goes)
            assert module(torch.randn(2, 8, 32, dtype=torch.bfloat16))[0].shape == (2, 8, 32)


@pytest.mark.parametrize("mixer,variant", CONFIGS)
def test_explicit_initial_state_equals_none(mixer, variant):
    model = tiny(mixer, variant).eval()
    x = torch.randn(2, 21, 32)
    with torch.no_grad():
        y0, s0 = model(x)
        y1, s1 = model(x, model.initial_state(2))
    assert torch.allclose(y0, y1, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(state_tensors(s0), state_tensors(s1), strict=True))


def test_restarted_rows_start_afresh_and_the_others_go_on():
    model = tiny("ttt_linear", "mamba").eval()
    a, b = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    with torch.no_grad():
        _, state = model(a)
        y, _ = model(b, state, restart=torch.tensor([True, False]))
        fresh, _ = model(b[:1])
        carried, _ = model(torch.cat([a[1:], b[1:]], 1))
    assert torch.allclose(y[:1], fresh, atol=1e-5)
    assert torch.allclose(y[1:], carried[:, 16:], atol=1e-5)
    with torch.no_grad():  # every row at once (a batch in which each row starts a new clip)
        all_fresh, _ = model(b, state, restart=torch.tensor([True, True]))
    assert torch.allclose(all_fresh, model(b)[0], atol=1e-6)
    with pytest.raises(ValueError, match="middle of the mixer.s restart unit"):
        _, mid = model(a[:, :5])
        model(b, mid, restart=torch.tensor([True, False]))


def test_attention_restarts_every_row_or_none_and_refuses_some_plainly():
    """Its cache holds each row's whole past, so rows cannot be swapped one at a time; any restart but
    all rows failed in a broadcast deep in the merge, even one restarting no row."""
    model = tiny("attention", "transformer").eval()
    a, b = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    with torch.no_grad():
        _, state = model(a)
        kept, _ = model(b, state, restart=torch.tensor([False, False]))
        carried, _ = model(torch.cat([a, b], 1))
        fresh, _ = model(b, state, restart=torch.tensor([True, True]))
        assert torch.allclose(kept, carried[:, 16:], atol=1e-5)
        assert torch.allclose(fresh, model(b)[0], atol=1e-6)
        with pytest.raises(ValueError, match="^restart: attention's cache grows .* restart every row or none"):
            model(b, state, restart=torch.tensor([True, False]))


def test_a_state_at_a_mini_batch_boundary_goes_on_with_another_mini_batch_size_and_restarts():
    """At a boundary a TTT state holds nothing tied to its mini-batch size, so a model with another one
    goes on from it, and restarts rows of it (its recorded size once made the merge refuse)."""
    torch.manual_seed(0)
    other = Backbone(dim=32, depth=2, mixer=partial(TTTLayer, num_heads=4, mini_batch_size=4), variant="transformer")
    a, b = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    with torch.no_grad():
        _, state = tiny("ttt_linear", "transformer")(a)  # 16 tokens: two whole mini-batches of 8
        y, _ = other(b, state, restart=torch.tensor([True, False]))
        assert torch.allclose(y[:1], other(b[:1])[0], atol=1e-5)
        assert torch.allclose(y[1:], other(b, state)[0][1:], atol=1e-5)


def test_a_restart_of_no_row_keeps_the_state_and_uses_every_parameter():
    model = tiny("ttt_linear", "mamba")
    a, b = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    _, state = model(a)
    state = state.detach()
    y, _ = model(b, state, restart=torch.tensor([False, False]))
    assert torch.equal(y, model(b, state)[0])
    y.square().mean().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused  # data-parallel training needs every parameter in each step's graph
    _, mid = model(a[:, :5])
    model(b, mid.detach(), restart=torch.tensor([False, False]))  # no restart: a mid-mini-batch state is fine


@pytest.mark.parametrize("name", ["ttt_linear", "lact"])
def test_a_restart_moves_the_mask_to_the_state_s_device_once(name):
    """The mask comes from the CPU; moved for each of the state's tensors, every training step waited
    for the device once per tensor (48 times at depth 4 with LaCT)."""

    class MaskCopies(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and args[0].dtype == torch.bool:
                MaskCopies.count += 1
            return func(*args, **(kwargs or {}))

    model = tiny(name, "mamba").to("meta")
    state = model.initial_state(2)
    assert len([t for t in state_tensors(state) if t.device.type == "meta"]) > 8
    rows = Restart(torch.tensor([True, False]))  # (as the backbone's forward makes it, once for every block)
    with MaskCopies():
        restarted = [block.restarted(s, rows) for block, s in zip(model.blocks, state.blocks, strict=True)]
    assert MaskCopies.count == 1
    assert [t.device for t in state_tensors(restarted)] == [t.device for t in state_tensors(state)]


@pytest.mark.parametrize("checkpointed", [False, True])
def test_a_restarted_row_trains_the_initial_inner_weights(checkpointed):
    model = tiny("ttt_linear", "transformer", checkpoint_activations=checkpointed)
    _, state = model(torch.randn(2, 16, 32))
    y, _ = model(torch.randn(2, 16, 32), state.detach(), restart=torch.tensor([True, False]))
    y[:1].square().mean().backward()  # only the restarted row's output
    W = model.blocks[0].mixer.W
    assert W.grad is not None and W.grad.abs().sum() > 0


def test_a_block_is_pre_norm_residual_mixer_then_mlp():
    """``x + mixer(norm(x))``, then ``+ mlp(norm(.))``: the order that streaming and shapes leave free."""
    torch.manual_seed(0)
    model = Backbone(dim=32, depth=1, mixer=partial(AttentionLayer, num_heads=4)).eval()
    block, x = model.blocks[0], torch.randn(2, 9, 32)
    with torch.no_grad():
        h = x + block.mixer(block.mixer_norm(x))[0]
        by_hand = h + block.mlp(block.mlp_norm(h))
        assert torch.allclose(block(x)[0], by_hand, atol=1e-6)
