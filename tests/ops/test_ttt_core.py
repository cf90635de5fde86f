"""The fast TTT cores against the token-by-token reference, across splits, in autograd and under autocast."""

import pytest
import torch

from ttt_mm.ops import TTTState, ttt_linear, ttt_mlp
from ttt_mm.ops.ttt import core
from ttt_mm.ops.ttt.naive import linear_model, mlp_model, ttt_naive

INNER = {"linear": (ttt_linear, linear_model), "mlp": (ttt_mlp, mlp_model)}


def make_inputs(inner, B=2, H=2, T=37, F=8, K=8, dtype=torch.float64, scale_lr=0.5):
    """Random inputs with non-trivial inner LayerNorm and bias, so that no term vanishes."""
    q, k, v = (torch.randn(B, H, T, F, dtype=dtype) for _ in range(3))
    lr = torch.rand(B, H, T, dtype=dtype) * scale_lr
    if inner == "linear":
        params = (torch.randn(H, F, F, dtype=dtype) * 0.3, torch.randn(H, F, dtype=dtype) * 0.1)
    else:
        params = (
            torch.randn(H, F, 4 * F, dtype=dtype) * 0.3,
            torch.randn(H, 4 * F, dtype=dtype) * 0.1,
            torch.randn(H, 4 * F, F, dtype=dtype) * 0.3,
            torch.randn(H, F, dtype=dtype) * 0.1,
        )
    ln = (1 + 0.1 * torch.randn(H, F, dtype=dtype), 0.1 * torch.randn(H, F, dtype=dtype))
    return (q, k, v, lr), params, ln


def run(inner, inputs, params, ln, K, token_scale=None, state=None):
    fast, _ = INNER[inner]
    return fast(*inputs, *params, *ln, mini_batch_size=K, token_scale=token_scale, state=state)


def max_err(a: TTTState, b: TTTState) -> float:
    assert a.pos == b.pos
    return max((x - y).abs().max().item() for x, y in zip(a.params + a.grads, b.params + b.grads))


@pytest.mark.parametrize("inner,tol", [("linear", 1e-10), ("mlp", 1e-8)])
@pytest.mark.parametrize("T", [37, 32, 5], ids=lambda t: f"T{t}")
@pytest.mark.parametrize("custom_scale", [False, True], ids=["tau_default", "tau_custom"])
@pytest.mark.parametrize("scan_chunk", [core.SCAN_CHUNK, 2], ids=["one_scan", "scans_of_2"])
def test_matches_token_by_token_reference(inner, tol, T, custom_scale, scan_chunk, monkeypatch):
    """Scans of 2 mini-batches: each scan must go on from the weights the previous one left."""
    monkeypatch.setattr(core, "SCAN_CHUNK", scan_chunk)
    K = 8
    inputs, params, ln = make_inputs(inner, T=T, K=K)
    # A learned token scale can go negative: the spec clamps it at zero.
    token_scale = torch.linspace(-0.2, 1.0, K, dtype=torch.float64) if custom_scale else None
    out, state = run(inner, inputs, params, ln, K, token_scale)
    ref_out, ref_state = ttt_naive(INNER[inner][1], *inputs, params, *ln, mini_batch_size=K, token_scale=token_scale)
    assert out.shape == ref_out.shape
    assert (out - ref_out).abs().max().item() <= tol
    assert max_err(state, ref_state) <= tol


def random_splits(T, K, gen):
    """Cut points mixing single tokens, pieces that end mid-mini-batch and long pieces."""
    cuts, t = [], 0
    kinds = [1, K // 2 + 1, 3 * K + 3, K - 1]
    while t < T:
        n = kinds[int(torch.randint(len(kinds), (1,), generator=gen))]
        t = min(T, t + n)
        cuts.append(t)
    return cuts


@pytest.mark.parametrize("inner", ["linear", "mlp"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"])
def test_any_split_gives_the_same_outputs_and_state(inner, dtype, tol):
    K, T = 8, 83
    inputs, params, ln = make_inputs(inner, T=T, K=K, dtype=dtype)
    out, state = run(inner, inputs, params, ln, K)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        pieces, s, start = [], None, 0
        for end in random_splits(T, K, gen):
            piece = tuple(x[:, :, start:end] for x in inputs)
            o, s = run(inner, piece, params, ln, K, state=s)
            pieces.append(o)
            start = end
        assert (torch.cat(pieces, dim=2) - out).abs().max().item() <= tol
        assert max_err(s, state) <= tol


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_a_state_with_an_open_mini_batch_refuses_another_mini_batch_size(inner):
    inputs, params, ln = make_inputs(inner, T=12)
    _, open_state = run(inner, inputs, params, ln, 8)  # 4 tokens into the second mini-batch of 8
    assert (open_state.pos, open_state.mini_batch_size) == (4, 8)
    with pytest.raises(ValueError, match="holds 4 tokens of a mini-batch of 8, which mini_batch_size=16 cannot finish"):
        run(inner, inputs, params, ln, 16, state=open_state)
    _, closed = run(inner, tuple(x[:, :, :8] for x in inputs), params, ln, 8)
    assert (closed.pos, closed.mini_batch_size) == (0, None)  # nothing open: any K goes on from it
    assert run(inner, inputs, params, ln, 16, state=closed)[1].mini_batch_size == 16  # 12 tokens open


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_gradcheck_through_outputs_and_state(inner):
    """Every tensor input gets correct gradients, including through a state carried from a call that
    ended mid-mini-batch."""
    K = 4
    (q, k, v, lr), params, ln = make_inputs(inner, B=1, H=1, T=7, F=3, K=K)
    token_scale = torch.rand(K, dtype=torch.float64) + 0.1
    _, first = run(inner, (q[..., :2, :], k[..., :2, :], v[..., :2, :], lr[..., :2]), params, ln, K)
    assert first.pos == 2
    leaves = [x.clone().requires_grad_() for x in (q, k, v, lr, *params, *ln, token_scale, *first.params, *first.grads)]
    n = len(params)

    def f(q, k, v, lr, *rest):
        p, l_, ts, carried = rest[:n], rest[n : n + 2], rest[n + 2], rest[n + 3 :]
        fresh, _ = INNER[inner][0](q, k, v, lr, *p, *l_, mini_batch_size=K, token_scale=ts)
        state = TTTState(tuple(carried[:n]), tuple(carried[n:]), 2)
        cont, s = INNER[inner][0](q, k, v, lr, *p, *l_, mini_batch_size=K, token_scale=ts, state=state)
        return fresh, cont, *s.params, *s.grads

    assert torch.autograd.gradcheck(f, leaves, fast_mode=True)


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_a_detached_state_carries_the_values_but_no_graph(inner):
    """Carried across training windows, a state must not keep the previous window's graph alive,
    through its weights or its open gradient sums."""
    inputs, params, ln = make_inputs(inner, T=12)
    _, state = run(inner, tuple(x.requires_grad_() for x in inputs), params, ln, 8)
    assert state.pos == 4 and all(t.requires_grad for t in state.params + state.grads)
    detached = state.detach()
    assert all(not t.requires_grad and t.grad_fn is None for t in detached.params + detached.grads)
    assert (detached.pos, detached.mini_batch_size) == (4, 8) and max_err(detached, state) == 0


@pytest.mark.slow
def test_bf16_autocast_16k_tokens_stays_finite_and_float32():
    inputs, params, ln = make_inputs("linear", B=1, H=2, T=16384, F=16, K=16, dtype=torch.float32, scale_lr=0.05)
    inputs = tuple(x.bfloat16() for x in inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = run("linear", inputs, params, ln, K=16)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in state.params + state.grads)


def test_empty_sequence_returns_the_state_unchanged():
    inputs, params, ln = make_inputs("linear", T=11)
    _, state = run("linear", inputs, params, ln, K=8)
    empty = tuple(x[:, :, :0] for x in inputs)
    out, same = run("linear", empty, params, ln, K=8, state=state)
    assert out.shape == (2, 2, 0, 8)
    assert same.pos == state.pos and max_err(same, state) == 0


@pytest.mark.parametrize("K", [0, -8, 8.0, True])
def test_a_mini_batch_size_that_is_not_a_whole_number_of_tokens_is_refused(K):
    inputs, params, ln = make_inputs("linear")
    with pytest.raises(ValueError, match=rf"^mini_batch_size must be a whole number >= 1; got {K!r}$"):
        run("linear", inputs, params, ln, K=K)


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_integer_inputs_are_refused(inner):
    """The core worked in float32 and rounded its outputs back to the integers' dtype, without a word."""
    (q, k, v, lr), params, ln = make_inputs(inner)
    ints = tuple(x.round().long() for x in (q, k, v))
    with pytest.raises(ValueError, match=r"^q, k, v must be floating point; got torch.int64$"):
        run(inner, (*ints, lr), params, ln, K=8)


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_a_state_of_another_batch_or_model_is_refused_with_both_shapes(inner):
    """It failed in a reshape deep inside the scan, with numbers of flattened rows."""
    inputs, params, ln = make_inputs(inner, B=2, T=12)
    _, state = run(inner, inputs, params, ln, K=8)
    one_row = tuple(x[:1] for x in inputs)
    with pytest.raises(ValueError, match=r"inner weights are \[\(2, 2, 8, .*these inputs continue \[\(1, 2, 8, "):
        run(inner, one_row, params, ln, K=8, state=state)
    other_inner = make_inputs("mlp" if inner == "linear" else "linear", B=2, T=12)[1]
    with pytest.raises(ValueError, match="continue a sequence with the batch and the model it was started with"):
        run("mlp" if inner == "linear" else "linear", inputs, other_inner, ln, K=8, state=state)


def test_a_state_whose_pending_step_alone_is_of_another_shape_is_refused():
    """A hand-built state (or one spliced from two batches) names the group that is wrong."""
    inputs, params, ln = make_inputs("linear", B=2, T=12)
    _, state = run("linear", inputs, params, ln, K=8)
    spliced = TTTState(state.params, tuple(g[:1] for g in state.grads), state.pos, state.mini_batch_size)
    with pytest.raises(ValueError, match=r"the state's pending steps are \[\(1, 2, 8, 8\).*continue \[\(2, 2, 8, 8\)"):
        run("linear", inputs, params, ln, K=8, state=spliced)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: {**a, "lr": a["lr"][..., :-1]}, "lr must be"),
        (lambda a: {**a, "k": a["k"][:, :1]}, "q, k, v must all be"),
        (lambda a: {**a, "ln_weight": a["ln_weight"][:1]}, "ln_weight and ln_bias"),
        (lambda a: {**a, "W": a["W"][:, :4]}, r"inner weights must be \(2, 8, 8\), \(2, 8\) .*got \(2, 4, 8\)"),
        (lambda a: {**a, "W": a["W"][..., :4]}, r"inner weights must be .*got \(2, 8, 4\)"),
        (lambda a: {**a, "token_scale": torch.ones(3, dtype=torch.float64)}, "token_scale must be"),
    ],
)
def test_bad_shapes_are_rejected_with_the_numbers(change, message):
    (q, k, v, lr), (W, b), (lw, lb) = make_inputs("linear")
    args = {"q": q, "k": k, "v": v, "lr": lr, "W": W, "b": b, "ln_weight": lw, "ln_bias": lb, "token_scale": None}
    args = change(args)
    ts = args.pop("token_scale")
    with pytest.raises(ValueError, match=message):
        ttt_linear(**args, mini_batch_size=8, token_scale=ts)
