"""Sliding-window attention over a cache and new tokens against dense masked softmax attention."""

import pytest
import torch

import ttt_mm.ops.window_attention as module
from ttt_mm.ops.rope import apply_rope, rope_rotation
from ttt_mm.ops.window_attention import window_attention

H, F = 3, 8


def dense(q, k, v, cache_k, cache_v, cached, rotation):
    """Every new token against all cache slots and new tokens, masked to its window and to filled slots."""
    T, P = q.shape[1], cache_k.shape[2]
    keys = apply_rope(torch.cat([cache_k.transpose(1, 2), k], dim=1), rotation).transpose(1, 2)  # [B, H, P + T, F]
    values = torch.cat([cache_v.transpose(1, 2), v], dim=1).transpose(1, 2)
    queries = apply_rope(q, rotation[P:]).transpose(1, 2)
    t = torch.arange(T)[:, None] + P  # the query's slot
    s = torch.arange(P + T)[None]
    allowed = (s <= t) & (s >= t - P)  # itself and the P slots before
    filled = s[None] >= (P - cached)[:, None, None]  # [B, 1, P + T]
    mask = (allowed[None] & filled)[:, None]  # [B, 1, T, P + T]
    scores = (queries @ keys.transpose(-1, -2) * F**-0.5).masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ values).transpose(1, 2)


def inputs(T, window, cached, dtype=torch.float64):
    B, P = len(cached), window - 1
    gen = torch.Generator().manual_seed(T * 100 + window)
    q, k, v = (torch.randn(B, T, H, F, generator=gen, dtype=dtype, requires_grad=True) for _ in range(3))
    cache_k, cache_v = (torch.randn(B, H, P, F, generator=gen, dtype=dtype, requires_grad=True) for _ in range(2))
    rotation = rope_rotation(torch.arange(-P, T), F)
    return q, k, v, cache_k, cache_v, torch.tensor(cached), rotation


# (T, window, query block range, cached per row): many blocks reaching several blocks back; fewer
# new tokens than the cache; a window of the token alone; a block longer than the input; rows
# whose caches are filled to different lengths (a sequence's start), empty and full
CASES = {
    "blocks_of_4_full": (23, 9, (4, 4), [8, 8]),
    "blocks_of_4_partly_filled": (23, 9, (4, 4), [0, 5]),
    "full_partly_filled_full": (23, 9, (4, 4), [8, 3, 8]),
    "fewer_tokens_than_the_cache": (3, 9, (4, 4), [8, 2]),
    "window_1": (11, 1, (4, 4), [0, 0]),
    "one_short_block": (5, 6, (64, 256), [5, 3]),
}


@pytest.mark.parametrize("case", list(CASES))
# one row per product; a few; all rows that share a mask in one product
@pytest.mark.parametrize("score_bytes", [1, 6000, 2**30], ids=["row_by_row", "few_rows", "all_rows"])
def test_outputs_and_every_gradient_are_dense_masked_attention(case, score_bytes, monkeypatch):
    T, window, blocks, cached = CASES[case]
    monkeypatch.setattr(module, "QUERY_BLOCK_RANGE", blocks)
    monkeypatch.setattr(module, "SCORE_BYTES", score_bytes)
    args = inputs(T, window, cached)
    o = window_attention(*args)
    expected = dense(*args)
    assert o.shape == (len(cached), T, H, F)
    assert (o - expected).abs().max().item() <= 1e-12
    cotangent = torch.randn_like(o)
    differentiable = args[:5]
    grads = torch.autograd.grad((o * cotangent).sum(), differentiable)
    ref = torch.autograd.grad((expected * cotangent).sum(), differentiable)
    for name, a, b in zip(("q", "k", "v", "cache_k", "cache_v"), grads, ref):
        assert a.shape == b.shape and (a.numel() == 0 or (a - b).abs().max().item() <= 1e-12), name


def test_unfilled_cache_slots_change_nothing():
    """Slots before a row's filled ones hold garbage that must not reach the output or get a gradient."""
    q, k, v, cache_k, cache_v, cached, rotation = inputs(6, 9, [3, 8])
    o = window_attention(q, k, v, cache_k, cache_v, cached, rotation)
    with torch.no_grad():
        noisy_k, noisy_v = cache_k.clone(), cache_v.clone()
        noisy_k[0, :, :5] += 100.0
        noisy_v[0, :, :5] -= 100.0
    assert torch.equal(window_attention(q, k, v, noisy_k, noisy_v, cached, rotation)[0], o[0])
    dk, dv = torch.autograd.grad(o.square().sum(), (cache_k, cache_v))
    assert dk[0, :, :5].abs().max() == 0 and dv[0, :, :5].abs().max() == 0
    assert dk[0, :, 5:].abs().max() > 0 and dk[1].abs().min() > 0


def test_low_precision_inputs_give_their_dtype_computed_in_float32():
    """Against float32 attention on the same (rounded) inputs, the only error left is the output's
    rounding to bfloat16 (half an ulp: at most 2^-8 relative); attention computed in bfloat16 misses that.
    The gradients likewise: within one ulp (2^-7 relative) of float32 ones, where the measured error is at
    most half of that; computed in bfloat16 they are off by up to 7 to 1700 ulps."""
    args = inputs(40, 17, [16, 16], dtype=torch.float32)
    low = [t.detach().bfloat16().requires_grad_() for t in args[:5]]
    o = window_attention(*low, *args[5:])
    assert o.dtype == torch.bfloat16
    reference_in = [t.detach().float().requires_grad_() for t in low]
    reference = dense(*reference_in, *args[5:])
    assert ((o.float() - reference.detach()).abs() <= 2**-8 * reference.detach().abs() + 1e-6).all()
    cotangent = torch.randn(o.shape).bfloat16()
    grads = torch.autograd.grad((o * cotangent).sum(), low)
    ref_grads = torch.autograd.grad((reference * cotangent.float()).sum(), reference_in)
    for name, a, b in zip(("q", "k", "v", "cache_k", "cache_v"), grads, ref_grads):
        assert a.dtype == torch.bfloat16, name
        assert ((a.float() - b).abs() <= 2**-7 * b.abs() + 1e-6).all(), name


def test_no_new_token_gives_no_output():
    """Like the TTT and LaCT cores, an empty call is allowed (it divided by zero laying out blocks)."""
    q, k, v, cache_k, cache_v, cached, _ = inputs(0, 9, [8, 3])
    out = window_attention(q, k, v, cache_k, cache_v, cached, rope_rotation(torch.arange(-8, 0), F))
    assert out.shape == (2, 0, H, F) and out.dtype == q.dtype


def test_shapes_that_do_not_fit_are_a_clear_error():
    q, k, v, cache_k, cache_v, cached, rotation = inputs(6, 9, [8, 8])
    with pytest.raises(ValueError, match="caches"):
        window_attention(q, k, v, cache_k[:, :, 1:], cache_v, cached, rotation)
    with pytest.raises(ValueError, match="rotation"):
        window_attention(q, k, v, cache_k, cache_v, cached, rotation[1:])


def test_rows_go_through_few_large_products_off_the_cpu():
    """The CPU groups rows so that a group's scores stay in cache; a GPU wants one large product."""
    layout = [2048, 255, 8, [255], torch.float32]  # T, P, H, cached, dtype: 2.6 MB of scores per row
    on_cpu = module._Blocks(*layout[:4], torch.device("cpu"), layout[4])
    elsewhere = module._Blocks(*layout[:4], torch.device("meta"), layout[4])
    assert len(on_cpu.groups) == 8 and [(r0, r1) for r0, r1, _ in elsewhere.groups] == [(0, 8)]
