"""The LaCT layer against its formulation written out by hand; streaming, causality, gradients, state."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import ttt_mm.layers.lact as lact_module
import ttt_mm.ops.window_attention as window_attention_module
from ttt_mm.backbone import state_tensors
from ttt_mm.layers import LaCTLayer
from ttt_mm.ops.lact import features
from ttt_mm.ops.lact.naive import lact_naive
from ttt_mm.ops.rope import apply_rope, rope_rotation

DIM, HEADS = 32, 4
# (chunk, window): the window covers a chunk and the chunk does not divide it; a window smaller than
# the chunk; the chunk divides the window; attention to the token itself only
SHAPES = {"c4_w6": (4, 6), "c8_w3": (8, 3), "c3_w9": (3, 9), "c4_w1": (4, 1)}


def make(chunk=4, window=6, momentum=True, muon=True, dtype=torch.float64):
    """A small layer with every zero-initialised parameter moved off zero, so that every term counts."""
    layer = LaCTLayer(DIM, HEADS, chunk_size=chunk, window=window, fast_heads=2, momentum=momentum, muon=muon)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer.to(dtype)


def by_hand(layer: LaCTLayer, x):
    """The layer from its definition: full-length masked softmax attention at absolute positions, and
    the token-by-token LaCT reference for the fast weights."""
    B, T, C = x.shape
    H, Fh, Hf, Df = layer.num_heads, layer.head_dim, layer.fast_heads, layer.fast_dim
    q, k, v = (x @ w.T for w in layer.wqkv.weight.split(C))

    rotation = rope_rotation(torch.arange(T), Fh)
    qh, kh = (apply_rope(t.view(B, T, H, Fh), rotation).transpose(1, 2) for t in (q, k))
    vh = v.view(B, T, H, Fh).transpose(1, 2)
    t, s = torch.arange(T)[:, None], torch.arange(T)[None]
    allowed = (s <= t) & (s > t - layer.window)
    scores = (qh @ kh.transpose(-1, -2) / Fh**0.5).masked_fill(~allowed, float("-inf"))
    attn = (scores.softmax(-1) @ vh).transpose(1, 2).reshape(B, T, C)

    def fast_heads(t):
        return t.view(B, T, Hf, Df).transpose(1, 2)

    def l2(t):  # as released: x / (|x| + 1e-5)
        return t / (t.norm(dim=-1, keepdim=True) + 1e-5)

    fq = l2(fast_heads(F.silu(q * layer.qk_scale[0] + layer.qk_offset[0])))
    fk = l2(fast_heads(F.silu(k * layer.qk_scale[1] + layer.qk_offset[1])))
    fv = fast_heads(F.silu(v))
    base = torch.log(torch.expm1(torch.tensor(1e-3, dtype=x.dtype)))  # softplus(base) = 1e-3
    lr = F.softplus(x @ layer.lr_proj.weight.T + layer.lr_proj.bias + base).view(B, T, Hf, 3).transpose(1, 2)
    gate = None
    if layer.momentum:
        gate = torch.sigmoid(x @ layer.momentum_proj.weight.T + layer.momentum_proj.bias).transpose(1, 2)
    o, _ = lact_naive(fq, fk, fv, lr, layer.w0, layer.w1, layer.w2, gate, chunk_size=layer.chunk_size, muon=layer.muon)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * layer.fast_norm.weight
    scale = F.silu(x @ layer.fast_scale_proj.weight.T + layer.fast_scale_proj.bias).transpose(1, 2)
    fast = (o * scale.unsqueeze(-1)).transpose(1, 2).reshape(B, T, C)
    return (attn + fast) @ layer.wo.weight.T


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("T", [13, 3], ids=["T13", "T3_shorter_than_a_chunk"])
def test_layer_is_the_formulation_written_out_by_hand(shape, T):
    chunk, window = SHAPES[shape]
    layer = make(chunk, window)
    x = torch.randn(2, T, DIM, dtype=torch.float64)
    with torch.no_grad():
        y, state = layer(x)
        expected = by_hand(layer, x)
    assert (y - expected).abs().max().item() <= 1e-12
    assert state.fast.count.tolist() == [T % chunk] * 2


VARIANTS = {"plain": (False, False), "momentum_only": (True, False), "muon_only": (False, True)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_without_momentum_or_muon_it_is_still_the_formulation(variant):
    momentum, muon = VARIANTS[variant]
    layer = make(momentum=momentum, muon=muon)
    assert (layer.momentum_proj is None) == (not momentum)
    x = torch.randn(1, 11, DIM, dtype=torch.float64)
    with torch.no_grad():
        y, state = layer(x)
        expected = by_hand(layer, x)
    assert (y - expected).abs().max().item() <= 1e-12
    assert (state.fast.velocity is None) == (not momentum)


def test_gradients_match_the_formulation_written_out_by_hand():
    """Every parameter's gradient and the input's, through the blocked attention (its hand-written
    backward included) and the fast weights."""
    layer = make(chunk=4, window=6)
    x = torch.randn(2, 13, DIM, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(2, 13, DIM, dtype=torch.float64)
    params = [x, *layer.parameters()]
    y, _ = layer(x)
    grads = torch.autograd.grad((y * cotangent).sum(), params)
    expected = torch.autograd.grad((by_hand(layer, x) * cotangent).sum(), params)
    for (name, _), a, b in zip([("x", x), *layer.named_parameters()], grads, expected):
        assert (a - b).abs().max().item() <= 1e-10 * (1 + b.abs().max().item()), name


def random_cuts(T, gen):
    cuts, t = [], 0
    while t < T:
        t = min(T, t + [1, 2, 5, 9][int(torch.randint(4, (1,), generator=gen))])
        cuts.append(t)
    return cuts


@pytest.mark.parametrize("shape", list(SHAPES))
# float32: chunks of 4 tokens give rank-4 updates of 16 x 16 weights, whose null directions (rounding
# noise) Newton-Schulz inflates ~500x; real chunks are far longer than the weights are wide
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-3)], ids=["f64", "f32"])
def test_streaming_in_random_pieces_equals_one_pass(shape, dtype, tol):
    layer = make(*SHAPES[shape], dtype=dtype)
    x = torch.randn(2, 41, DIM, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        full, full_state = layer(x)
        for _ in range(2):
            outs, state, start = [], None, 0
            for end in random_cuts(41, gen):
                y, state = layer(x[:, start:end], state)
                outs.append(y)
                start = end
            assert (torch.cat(outs, 1) - full).abs().max().item() <= tol
            for a, b in zip(state_tensors(state), state_tensors(full_state), strict=True):
                assert a.shape == b.shape and (a.numel() == 0 or (a - b).abs().max().item() <= tol)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_streams_in_random_pieces_as_one_pass(variant):
    momentum, muon = VARIANTS[variant]
    layer = make(4, 6, momentum=momentum, muon=muon)
    x = torch.randn(2, 29, DIM, dtype=torch.float64)
    with torch.no_grad():
        full, _ = layer(x)
        outs, state, start = [], None, 0
        for end in random_cuts(29, torch.Generator().manual_seed(1)):
            y, state = layer(x[:, start:end], state)
            outs.append(y)
            start = end
    assert (torch.cat(outs, 1) - full).abs().max().item() <= 1e-10


def test_long_inputs_processed_in_pieces_give_the_same_result(monkeypatch):
    layer = make(chunk=4, window=6)
    x = torch.randn(1, 37, DIM, dtype=torch.float64)
    with torch.no_grad():
        whole, _ = layer(x)
        monkeypatch.setattr(lact_module, "PIECE_TOKENS", 6)  # pieces of 8 tokens: two chunks
        pieces, _ = layer(x)
    assert (pieces - whole).abs().max().item() <= 1e-12


@pytest.mark.parametrize("split", [7, 10], ids=["partly_filled_cache", "full_cache"])
def test_many_attention_blocks_and_feature_tiles_streamed_are_the_formulation(split, monkeypatch):
    """Query blocks of 4 and feature tiles of 5 tokens, over two calls: outputs and every gradient as
    written by hand. After 7 tokens the second call's first blocks reach into a partly filled cache
    (8 slots) and are masked to its filled slots; after 10 the cache is full and the band alone masks them."""
    monkeypatch.setattr(window_attention_module, "QUERY_BLOCK_RANGE", (4, 4))
    monkeypatch.setattr(features, "TILE_TOKENS", 5)
    layer = make(chunk=4, window=9)
    x = torch.randn(2, 37, DIM, dtype=torch.float64, requires_grad=True)
    first, state = layer(x[:, :split])
    rest, _ = layer(x[:, split:], state)
    y = torch.cat([first, rest], dim=1)
    expected = by_hand(layer, x)
    assert (y - expected).abs().max().item() <= 1e-12
    cotangent = torch.randn_like(y)
    params = [x, *layer.parameters()]
    grads = torch.autograd.grad((y * cotangent).sum(), params)
    ref = torch.autograd.grad((expected * cotangent).sum(), params)
    for (name, _), a, b in zip([("x", x), *layer.named_parameters()], grads, ref):
        assert (a - b).abs().max().item() <= 1e-10 * (1 + b.abs().max().item()), name


def test_no_output_depends_on_a_later_token_and_every_parameter_learns():
    layer = make(chunk=4, window=3)
    x = torch.randn(1, 19, DIM, dtype=torch.float64, requires_grad=True)
    y, _ = layer(x)
    for t in (9, 13):  # second token of a chunk, with earlier chunks outside the window
        (grad,) = torch.autograd.grad(y[0, t].sum(), x, retain_graph=True)
        assert grad[0, t + 1 :].abs().max() == 0, "output depends on future inputs"
        assert grad[0, t - 2 : t + 1].abs().amin(-1).min() > 0  # the window
        assert grad[0, : t - t % 4 - 4].abs().max() > 0  # chunks before the window, via the fast weights
    y.pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name


def test_initial_state_is_the_same_as_none_and_trains_the_initial_weights():
    layer = make()
    x = torch.randn(2, 10, DIM, dtype=torch.float64)
    y_none, s_none = layer(x)
    y_init, s_init = layer(x, layer.initial_state(2))
    assert torch.equal(y_none, y_init)
    for a, b in zip(state_tensors(s_none), state_tensors(s_init), strict=True):
        assert torch.equal(a, b)
    (w0_grad,) = torch.autograd.grad(s_init.fast.weights[0].sum(), layer.w0)
    assert w0_grad.abs().max() > 0


def test_the_places_each_call_plans_from_stay_on_the_cpu_whatever_the_device():
    """Chunk and window positions are read on the host every call: held on a GPU, each call (each
    piece of a long input) would wait for the device to catch up."""
    layer = make().to("meta")
    state = layer.initial_state(2)
    assert state.fast.weights[0].device.type == "meta"
    assert state.cached.device.type == "cpu" and state.fast.count.device.type == "cpu"
    _, after = layer(torch.randn(2, 7, DIM, dtype=torch.float64, device="meta"), state)
    assert after.cached.device.type == "cpu" and after.fast.count.tolist() == [3, 3]  # (chunks of 4)


def merge_rows(old, fresh, rows):
    """What the backbone's ``Block.restarted`` does: ``torch.where`` on every tensor of the state."""
    if isinstance(old, torch.Tensor):
        return torch.where(rows.view(-1, *[1] * (old.dim() - 1)), fresh, old)
    if dataclasses.is_dataclass(old):
        return dataclasses.replace(
            old,
            **{f.name: merge_rows(getattr(old, f.name), getattr(fresh, f.name), rows) for f in dataclasses.fields(old)},
        )
    if isinstance(old, tuple):
        return tuple(merge_rows(a, b, rows) for a, b in zip(old, fresh, strict=True))
    assert old is None and fresh is None
    return None


def test_a_restarted_row_continues_as_a_fresh_sequence_while_the_others_go_on():
    layer = make(chunk=4, window=6)
    x = torch.randn(3, 16, DIM, dtype=torch.float64)
    restart = torch.tensor([False, True, False])
    with torch.no_grad():
        _, state = layer(x[:, :7])  # 7 tokens: every row is mid-chunk and its cache is not yet full
        state = merge_rows(state, layer.initial_state(3), restart)
        y, after = layer(x[:, 7:], state)
        for b in range(3):
            s = None if restart[b] else layer(x[b : b + 1, :7])[1]
            y_alone, s_alone = layer(x[b : b + 1, 7:], s)
            assert (y[b : b + 1] - y_alone).abs().max().item() <= 1e-12
            for a, c in zip(state_tensors(after), state_tensors(s_alone), strict=True):
                assert torch.allclose(a[b : b + 1], c, rtol=0, atol=1e-12)


def test_an_empty_input_returns_the_state_unchanged():
    layer = make()
    with torch.no_grad():
        _, state = layer(torch.randn(2, 7, DIM, dtype=torch.float64))
        y, same = layer(torch.randn(2, 0, DIM, dtype=torch.float64), state)
    assert y.shape == (2, 0, DIM)
    for a, b in zip(state_tensors(same), state_tensors(state), strict=True):
        assert torch.equal(a, b)


def test_an_empty_batch_runs_forward_and_backward():
    layer = make()
    x = torch.randn(0, 9, DIM, dtype=torch.float64, requires_grad=True)
    y, state = layer(x)
    y.sum().backward()
    assert y.shape == (0, 9, DIM) and x.grad.shape == x.shape and state.keys.shape[0] == 0


def test_state_size_does_not_depend_on_the_length():
    layer = make(chunk=4, window=6)
    shapes = set()
    with torch.no_grad():
        for T in (1, 9, 50):
            _, state = layer(torch.randn(2, T, DIM, dtype=torch.float64))
            shapes.add(tuple(tuple(t.shape) for t in state_tensors(state)))
    assert len(shapes) == 1


def test_bf16_autocast_stays_finite_with_a_float32_state():
    layer = make(chunk=64, window=64, dtype=torch.float32)
    x = torch.randn(1, 300, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = layer(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert all(t.dtype in (torch.float32, torch.int64) and torch.isfinite(t).all() for t in state_tensors(state))


def test_a_fresh_float16_layer_has_finite_gradients_close_to_float32s():
    """At initialisation the fast weights' outputs are small (RMS about 1e-2): the gated norm's backward
    took their inverse RMS cubed, past float16's range (inf in every gradient but the output's)."""
    torch.manual_seed(0)
    layer = LaCTLayer(DIM, HEADS, chunk_size=4, window=6, fast_heads=2)
    x = torch.randn(2, 13, DIM)
    grads = {}
    for dtype in (torch.float32, torch.float16):
        copy = LaCTLayer(DIM, HEADS, chunk_size=4, window=6, fast_heads=2).to(dtype)
        copy.load_state_dict(layer.state_dict())
        inputs = x.to(dtype, copy=True).requires_grad_()
        copy(inputs)[0].float().square().sum().backward()
        grads[dtype] = [inputs.grad] + [p.grad for p in copy.parameters() if p.grad is not None]
    assert len(grads[torch.float16]) == len(grads[torch.float32]) > 10
    for full, half in zip(grads[torch.float32], grads[torch.float16]):
        assert torch.isfinite(half).all()
        assert (half.float() - full).norm() <= 0.02 * full.norm() + 1e-3


def test_the_fast_weight_initial_values_and_qk_affine_are_exempt_from_weight_decay():
    layer = LaCTLayer(DIM, HEADS, fast_heads=2)
    exempt = {id(p) for p in layer.no_weight_decay()}
    assert exempt == {id(p) for p in (layer.w0, layer.w1, layer.w2, layer.qk_scale, layer.qk_offset)}
    # at initialisation every step size is the base step size
    x = torch.zeros(1, 1, DIM)
    assert torch.allclose(F.softplus(layer.lr_proj(x) + layer.lr_offset), torch.full((1, 1, 6), 1e-3))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"dim": 30}, "num_heads"),
        ({"dim": 24, "num_heads": 4, "fast_heads": 5}, "fast_heads"),
        ({"chunk_size": 0}, "^chunk_size must be positive; got 0$"),
        ({"window": 0}, "^window must be positive; got 0$"),
        ({"base_lr": 0.0}, "^base_lr must be positive; got 0.0$"),
        ({"base_lr": float("inf")}, "^base_lr must be finite; got inf$"),  # (every output NaN)
        ({"fast_heads": 0}, "fast_heads must be positive"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs, message):
    args = {"dim": DIM, "num_heads": HEADS, **kwargs}
    with pytest.raises(ValueError, match=message):
        LaCTLayer(**args)


@pytest.mark.parametrize(
    "made,message",
    [
        ({"window": 9}, "the state caches 8 tokens \\(made with window=9\\); this layer has window=6"),
        ({"momentum": False}, "the state was made with momentum=False; this layer has momentum=True"),
        ({"batch": 3}, "the state holds 3 batch rows; the input has 2"),
        ({"fast_heads": 4}, r"the state's fast weights are \[\(2, 4, 8, 8\).* continue \[\(2, 2, 16, 16\)"),
        ({"fast_hidden_mult": 2.0}, r"the state's fast weights are \[\(2, 2, 32, 16\)"),
        (
            {"num_heads": 2},
            r"the state caches attention heads of shape \(2, 16\) \(heads, width\); this layer has \(4, 8\)",
        ),
    ],
    ids=["window", "momentum", "batch", "fast_heads", "fast_width", "heads"],
)
def test_a_state_of_other_settings_is_refused_by_name(made, message):
    """Passed to forward or checked (a carried state restored into another layer): it failed deep in
    the window attention, with the shapes of RoPE's rotation (another head count: the check passed it)."""
    settings = {"window": 6, "fast_heads": 2, **made}
    batch = settings.pop("batch", 2)
    other = LaCTLayer(DIM, settings.pop("num_heads", HEADS), chunk_size=4, **settings)
    state = other.initial_state(batch)
    layer = LaCTLayer(DIM, HEADS, chunk_size=4, window=6, fast_heads=2)
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(2, 5, DIM), state)
    if batch == 2:
        with pytest.raises(ValueError, match=message):
            layer.check_state(state)


@pytest.mark.parametrize("chunk,learns", [(4, True), (12, False)], ids=["chunks_inside_the_window", "window_long"])
def test_with_a_carried_state_step_sizes_learn_only_from_updates_inside_the_window(chunk, learns):
    """Training windows of 12 tokens with the state carried (detached) between them. The step sizes
    learn from an update only when later tokens of the same window use it: chunks of 4 give two such
    updates per window; a chunk as long as the window always completes at its end and teaches them
    nothing (the reason the config's chunk is a quarter of the training window)."""
    layer = make(chunk=chunk, window=6)
    x = torch.randn(2, 36, DIM, dtype=torch.float64)
    state = None
    for window in x.split(12, dim=1):
        layer.zero_grad()
        y, state = layer(window, None if state is None else state.detach())
        y.square().sum().backward()
    for proj in (layer.lr_proj, layer.momentum_proj):
        grad = proj.weight.grad  # None: not in the last window's graph at all
        assert (grad is not None and grad.abs().max() > 0) == learns
    assert layer.wqkv.weight.grad.abs().max() > 0  # the rest of the layer learns either way
