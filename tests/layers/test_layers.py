"""Mixer layers: the TTT layer against the official release's layer written out by hand; streaming,
causality, gradients."""

import copy
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from ttt_mm.backbone import state_tensors
from ttt_mm.layers import AttentionLayer, LaCTLayer, TTTLayer
from ttt_mm.layers.conv import CausalDepthwiseConv
from ttt_mm.ops.rope import apply_rope, rope_rotation
from ttt_mm.ops.ttt.naive import linear_model, mlp_model, ttt_naive

LAYERS = {
    "ttt_linear": lambda: TTTLayer(32, 4, "linear", mini_batch_size=4),
    "ttt_mlp": lambda: TTTLayer(32, 4, "mlp", mini_batch_size=4),
    "ttt_mamba": lambda: TTTLayer(32, 4, "linear", mini_batch_size=4, use_gate=True, share_qk=True),
    "attention": lambda: AttentionLayer(32, 4),
}


def perturb(module):
    """Move zero-initialised parameters off zero so every term of the layer is exercised."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def rope_by_hand(x, positions, theta=10000.0):
    """x [B, H, T, F]: rotate pairs (2i, 2i+1) by angle pos * theta^(-2i/F)."""
    out = x.clone()
    Fd = x.shape[-1]
    for i in range(Fd // 2):
        ang = positions.double() * theta ** (-2 * i / Fd)
        c, s = torch.cos(ang), torch.sin(ang)
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i], out[..., 2 * i + 1] = a * c - b * s, a * s + b * c
    return out


def causal_conv_by_hand(x, conv):
    """Depthwise causal conv on x [B, T, C] with zero history."""
    w = conv.conv.weight  # [C, 1, k]
    padded = F.pad(x.transpose(1, 2), (w.shape[-1] - 1, 0))
    return F.conv1d(padded, w, conv.conv.bias, groups=x.shape[-1]).transpose(1, 2)


@pytest.mark.parametrize("name", ["ttt_linear", "ttt_mlp", "ttt_mamba"])
def test_ttt_layer_is_spec_section_4(name):
    layer = perturb(LAYERS[name]()).double()
    B, T, C, H, K = 2, 13, 32, 4, 4
    Fd = C // H
    x = torch.randn(B, T, C, dtype=torch.float64)

    def heads(t):
        return t.view(B, T, H, Fd).transpose(1, 2)

    if layer.share_qk:
        Wqk, Wv = layer.wqkv.weight.split(C)
        q = causal_conv_by_hand(x @ Wqk.T, layer.conv_q)
        k = causal_conv_by_hand(x @ Wqk.T, layer.conv_k)
    else:
        Wq, Wk, Wv = layer.wqkv.weight.split(C)
        q, k = x @ Wq.T, x @ Wk.T
    v = x @ Wv.T
    pos_in_mb = torch.arange(T) % K
    q, k, v = rope_by_hand(heads(q), pos_in_mb), rope_by_hand(heads(k), pos_in_mb), heads(v)
    lr = layer.base_lr * torch.sigmoid(x @ layer.lr_gate.weight.T + layer.lr_gate.bias) / Fd  # [B, T, H]
    tau = (1.0 / torch.arange(1, K + 1, dtype=torch.float64) + layer.token_scale_delta).clamp_min(0)
    model = linear_model if layer.inner == "linear" else mlp_model
    o, _ = ttt_naive(
        model,
        q,
        k,
        v,
        lr.transpose(1, 2),
        layer.inner_params(),
        layer.ln_weight,
        layer.ln_bias,
        mini_batch_size=K,
        token_scale=tau,
    )
    o = F.layer_norm(o.transpose(1, 2).reshape(B, T, C), (C,), layer.post_norm.weight, layer.post_norm.bias, eps=1e-6)
    if layer.use_gate:
        o = F.gelu(x @ layer.wg.weight.T, approximate="tanh") * o
    expected = o @ layer.wo.weight.T

    with torch.no_grad():
        y, _ = layer(x)
    assert (y - expected).abs().max().item() <= 1e-10


def test_paper_defaults():
    lin, mlp = TTTLayer(64, 4, "linear"), TTTLayer(64, 4, "mlp")
    assert (lin.base_lr, mlp.base_lr, lin.mini_batch_size) == (1.0, 0.1, 16)
    assert mlp.W1.shape == (4, 16, 64) and mlp.W2.shape == (4, 64, 16)
    assert torch.all(lin.token_scale_delta == 0) and torch.all(lin.ln_weight == 1) and torch.all(lin.b == 0)
    assert abs(lin.W.std().item() - 0.02) < 0.005


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"])
def test_streaming_in_pieces_equals_one_pass(name, dtype, tol):
    layer = perturb(LAYERS[name]()).to(dtype)
    x = torch.randn(2, 41, 32, dtype=dtype)
    with torch.no_grad():
        full, full_state = layer(x)
        outs, state = [], None
        for a, b in [(0, 1), (1, 3), (3, 10), (10, 11), (11, 37), (37, 41)]:
            y, state = layer(x[:, a:b], state)
            outs.append(y)
    assert (torch.cat(outs, 1) - full).abs().max().item() <= tol
    assert len(state_tensors(state)) >= 2
    for a, b in zip(state_tensors(state), state_tensors(full_state), strict=True):
        assert (a - b).abs().max().item() <= tol


RESETTABLE = {
    **{n: LAYERS[n] for n in ("ttt_linear", "ttt_mlp", "ttt_mamba")},
    "lact": lambda: LaCTLayer(32, 4, chunk_size=8, window=4),
}


@pytest.mark.parametrize("name", list(RESETTABLE))
def test_reset_parameters_redraws_every_weight_and_restores_every_constant(name):
    layer, fresh = perturb(RESETTABLE[name]()), RESETTABLE[name]()
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    layer.reset_parameters()
    for n, p in layer.named_parameters():
        made = dict(fresh.named_parameters())[n]
        if torch.all(made == made.flatten()[0]):  # a constant as built (zeros, ones): exactly that again
            assert torch.equal(p, made), n
        else:  # drawn: drawn again
            assert not torch.equal(p, before[n]), n


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_16_bit_layers_token_scale_is_the_specs_unrounded(dtype, monkeypatch):
    """``1/(p+1)`` worked out in a bf16 layer's own dtype was off by up to 0.3% before the core cast it."""
    import ttt_mm.layers.ttt as ttt_module

    seen, core = {}, ttt_module.ttt_linear
    monkeypatch.setattr(ttt_module, "ttt_linear", lambda *a, **kw: seen.update(kw) or core(*a, **kw))
    layer = TTTLayer(32, 2, "linear", mini_batch_size=16).to(dtype)
    with torch.no_grad():
        layer(torch.randn(1, 4, 32, dtype=dtype))
    spec = 1.0 / torch.arange(1, 17, dtype=torch.float32)
    assert seen["token_scale"].dtype == torch.float32
    assert torch.equal(seen["token_scale"], spec)


@pytest.mark.parametrize("name", ["ttt_linear", "ttt_mlp"])
def test_a_float64_layer_starts_from_its_own_weights_unrounded(name):
    layer = perturb(LAYERS[name]()).double()
    with torch.no_grad():
        for p in layer.inner_params():
            p.add_(1e-9 * torch.randn_like(p))  # below float32's resolution
    state = layer.initial_state(2)
    assert all(p.dtype == torch.float64 for p in state.core.params)
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(layer(x)[0], layer(x, state)[0])


@pytest.mark.parametrize("name", list(LAYERS))
def test_causal_and_every_parameter_learns(name):
    layer = perturb(LAYERS[name]()).double()
    x = torch.randn(1, 19, 32, dtype=torch.float64, requires_grad=True)
    y, _ = layer(x)
    t = 9
    (grad,) = torch.autograd.grad(y[0, t].sum(), x, retain_graph=True)
    assert grad[0, t + 1 :].abs().max() == 0, "output depends on future inputs"
    assert grad[0, : t + 1].abs().max() > 0
    y.pow(2).sum().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname


def test_rope_rotates_interleaved_pairs():
    x = torch.randn(1, 8, 2, 8, dtype=torch.float64)
    rotation = rope_rotation(torch.arange(8), 8)
    got = apply_rope(x, rotation)
    want = rope_by_hand(x.transpose(1, 2), torch.arange(8)).transpose(1, 2)
    assert (got - want).abs().max() < 1e-12
    assert math.isclose(rotation.abs().min().item(), 1.0, rel_tol=1e-12)


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^dim \(30\) must split into num_heads \(4\) heads of even width"):
        TTTLayer(30, 4)
    with pytest.raises(ValueError, match="inner must be"):
        TTTLayer(32, 4, inner="rnn")
    with pytest.raises(ValueError, match="^mini_batch_size must be positive; got 0$"):  # (a division by zero, later)
        TTTLayer(32, 4, mini_batch_size=0)
    with pytest.raises(ValueError, match="base_lr must be 0 or more"):
        TTTLayer(32, 4, base_lr=-1.0)
    with pytest.raises(ValueError, match="num_heads must be positive"):
        AttentionLayer(32, 0)


@pytest.mark.parametrize("made,taken", [("ttt_mamba", "ttt_linear"), ("ttt_linear", "ttt_mamba")])
def test_a_ttt_state_with_or_without_convolution_caches_goes_on_only_in_its_own_kind(made, taken):
    """A share_qk layer took a state without its q and k caches as a fresh convolution, a plain
    layer one with caches, and both answered otherwise than going on from their own state."""
    x = torch.randn(2, 8, 32)
    _, state = LAYERS[made]()(x)
    layer = LAYERS[taken]()
    message = "this share_qk layer continues" if layer.share_qk else "this layer has none"
    with pytest.raises(ValueError, match=message):
        layer(x, state)
    with pytest.raises(ValueError, match=message):
        layer.check_state(state)


def test_an_attention_cache_of_other_heads_is_refused_by_name():
    """A cache of 4 heads passed check_state in a layer of 8, whose forward then failed in torch.cat."""
    x = torch.randn(2, 5, 32)
    _, cache = AttentionLayer(32, 4)(x)
    wider = AttentionLayer(32, 8)
    message = r"^the cache holds keys \(2, 4, 5, 8\) and values \(2, 4, 5, 8\); this layer caches \[2, 8, tokens, 4\]"
    for call in (lambda: wider.check_state(cache), lambda: wider(x, cache)):
        with pytest.raises(ValueError, match=message):
            call()
    AttentionLayer(32, 4).check_state(cache)  # (its own kind, of any length, goes on)


@pytest.mark.parametrize("name", [*LAYERS, "lact"])
def test_another_mixers_state_is_refused_by_its_type(name):
    """A KVCache given to a TTT layer failed with "'KVCache' object has no attribute 'core'"."""
    make = LAYERS.get(name) or (lambda: LaCTLayer(32, 4, chunk_size=4, window=4, fast_heads=2))
    other = AttentionLayer(32, 4) if name != "attention" else TTTLayer(32, 4, mini_batch_size=4)
    x = torch.randn(2, 8, 32)
    _, state = other(x)
    with pytest.raises(
        TypeError, match=rf"^state must be a \w+ \(what this layer returned\) or None; got {type(state).__name__}$"
    ):
        make()(x, state)


@pytest.mark.parametrize("name", [*LAYERS, "lact"])
def test_a_state_of_a_float64_layer_goes_on_in_the_float32_layers_own_dtype(name):
    """LaCT kept a float64 window cache for good, in a float32 layer, where the others cast."""
    make = LAYERS.get(name) or (lambda: LaCTLayer(32, 4, chunk_size=4, window=4, fast_heads=2))
    layer = make()
    x = torch.randn(2, 10, 32)
    _, wide = copy.deepcopy(layer).double()(x[:, :6].double())
    y, state = layer(x[:, 6:], wide)
    assert y.dtype == torch.float32
    assert {t.dtype for t in state_tensors(state) if t.is_floating_point()} == {torch.float32}


@pytest.mark.parametrize("layer", [TTTLayer, AttentionLayer, LaCTLayer])
def test_every_mixer_checks_its_heads_and_rope_base_when_built(layer):
    """(attention failed at its first call on heads of odd width; a base of 0 or less trained on NaN)"""
    with pytest.raises(
        ValueError, match=r"^dim \(30\) must split into num_heads \(10\) heads of even width .*; got 3$"
    ):
        layer(30, 10)
    for theta in (0.0, -5.0):
        with pytest.raises(ValueError, match=f"^rope_theta must be positive; got {theta}$"):
            layer(32, 2, rope_theta=theta)
    with pytest.raises(ValueError, match="^dim must be positive; got 0$"):
        layer(0, 2)
    with pytest.raises(ValueError, match="^num_heads must be a whole number; got '2'$"):  # (Python's TypeError)
        layer(32, "2")
    with pytest.raises(ValueError, match="^rope_theta must be a number; got '1e4'$"):
        layer(32, 2, rope_theta="1e4")


def test_pieces_are_cache_sized_on_the_cpu_and_long_elsewhere():
    from ttt_mm.layers.pieces import DEVICE_PIECE_TOKENS, piece_tokens

    assert piece_tokens(torch.empty(1), 2048) == 2048
    assert piece_tokens(torch.empty(1, device="meta"), 2048) == DEVICE_PIECE_TOKENS >= 8 * 2048
    assert piece_tokens(torch.empty(1, device="meta"), 10**6) == 10**6


@pytest.mark.parametrize("name", [*LAYERS, "lact"])
def test_a_layer_runs_forward_streamed_and_backward_on_the_meta_device(name):
    """What a GPU needs beyond the CPU: no value of a device tensor read on the host (each read waits
    for the device) and no tensors of two devices mixed. Meta tensors have no values: either raises."""
    make = LAYERS.get(name, lambda: LaCTLayer(32, 4, chunk_size=4, window=6, fast_heads=2))
    layer = make().to("meta")
    x = torch.randn(2, 7, 32, device="meta", requires_grad=True)
    y, state = layer(x)
    more, _ = layer(x[:, :3], state)
    (y.sum() + more.sum()).backward()
    assert x.grad.device.type == "meta" and x.grad.shape == x.shape
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in layer.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["ttt_linear", "lact"])
def test_a_compiled_layer_streams_as_the_eager_one_without_a_graph_per_call(name, monkeypatch):
    """The cores' Python loops were traced: every split of a sequence compiled their helpers anew until
    torch.compile's recompile limit, then ran them eagerly with a warning."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    torch._dynamo.reset()
    make = LAYERS.get(name, lambda: LaCTLayer(32, 4, chunk_size=4, window=6, fast_heads=2))
    layer = make().eval()
    compiled = torch.compile(layer, backend="eager")  # tracing is what is tested, not code generation
    x = torch.randn(2, 24, 32)
    try:
        with torch.no_grad():
            whole, _ = layer(x)
            for cut in (5, 11, 13):
                first, state = compiled(x[:, :cut])
                rest, _ = compiled(x[:, cut:], state)
                torch.testing.assert_close(torch.cat([first, rest], dim=1), whole, atol=1e-6, rtol=0)
    finally:
        torch._dynamo.reset()


@pytest.mark.slow
def test_the_ops_kept_out_of_compilation_stay_under_the_recompile_limit_together():
    """Every op's wrapper shared one code object, which dynamo compiles at each call: a TTT backbone and
    a LaCT layer compiled in one process (forward, streamed, backward, autocast) hit its limit of 8."""
    import torch._dynamo

    from ttt_mm.backbone import Backbone

    torch._dynamo.reset()
    x = torch.randn(2, 24, 32)
    models = [
        Backbone(32, 2, partial(TTTLayer, num_heads=4, mini_batch_size=4)),
        LaCTLayer(32, 4, chunk_size=8, window=8),
    ]
    try:
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            for model in models:
                compiled = torch.compile(model, backend="eager")
                first, state = compiled(x[:, :10])
                compiled(x[:, 10:], state)[0].square().sum().backward()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    compiled(x)
    finally:
        torch._dynamo.reset()


def test_a_convolution_without_taps_is_refused():
    """A kernel of 0 carried a cache of -1 steps: its shape failed far from its cause."""
    with pytest.raises(ValueError, match="^kernel_size must be positive; got 0$"):
        CausalDepthwiseConv(8, 0)
