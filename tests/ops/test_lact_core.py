"""The fast LaCT core against the token-by-token reference: outputs, state and every input gradient,
with and without momentum and Muon; streaming over any split; causality; restarted rows."""

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from ttt_mm.ops import LaCTState, lact_swiglu
from ttt_mm.ops.lact import step
from ttt_mm.ops.lact.muon import NEWTON_SCHULZ_STEPS, NORM_EPS, orthogonalize
from ttt_mm.ops.lact.naive import lact_naive, newton_schulz

C = 4  # chunk size of the small tests
VARIANTS = {"plain": (False, False), "momentum": (True, False), "muon": (False, True), "momentum_muon": (True, True)}


def make_inputs(B=2, H=2, T=13, D=4, M=6, E=5, dtype=torch.float64, momentum=True, seed=0):
    """Random inputs shaped as the layer makes them: unit q and k, positive step sizes, gates in [0, 1].
    D, M and E differ so that a transposed weight cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    q, k = F.normalize(randn(B, H, T, D), dim=-1), F.normalize(randn(B, H, T, D), dim=-1)
    v = randn(B, H, T, E)
    lr = torch.rand(B, H, T, 3, generator=g, dtype=dtype) * 0.5
    gate = torch.rand(B, H, T, generator=g, dtype=dtype) if momentum else None
    weights = (randn(H, M, D) / D**0.5, randn(H, E, M) / M**0.5, randn(H, M, D) / D**0.5)
    return {"q": q, "k": k, "v": v, "lr": lr, "w0": weights[0], "w1": weights[1], "w2": weights[2], "momentum": gate}


def state_tensors(s: LaCTState) -> list[torch.Tensor]:
    out = [*s.weights, *s.grads, s.count]
    if s.velocity is not None:
        out += [*s.velocity, s.gate_sum]
    return out


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def leaves(inputs):
    return {n: None if x is None else x.clone().requires_grad_() for n, x in inputs.items()}


@pytest.mark.parametrize("shape", [(4, 6, 5), (5, 5, 5)], ids=["DME", "square"])
@pytest.mark.parametrize("tile", [512, 3], ids=["one_tile", "tiles_of_3"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("T", [13, 12, 3], ids=lambda t: f"T{t}")
def test_outputs_state_and_all_gradients_match_the_reference(variant, T, tile, shape, monkeypatch):
    """T=13 ends mid-chunk, T=12 on a boundary, T=3 is shorter than one chunk; tiles of 3 tokens cut
    every chunk of the hand-written step (forward and backward) in two. Square fast weights (the
    layer's default) take Muon's one-batch path."""
    monkeypatch.setattr(step, "TILE_TOKENS", tile)
    momentum, muon = VARIANTS[variant]
    D, M, E = shape
    inputs = make_inputs(T=T, D=D, M=M, E=E, momentum=momentum)
    fast_in, ref_in = leaves(inputs), leaves(inputs)
    out, state = lact_swiglu(**fast_in, chunk_size=C, muon=muon)
    ref_out, ref_state = lact_naive(**ref_in, chunk_size=C, muon=muon)

    assert out.shape == ref_out.shape == (2, 2, T, E)
    assert (out - ref_out).abs().max().item() <= 1e-12
    assert max_diff(state_tensors(state), state_tensors(ref_state)) <= 1e-12
    assert int(state.count[0]) == T % C

    # one random cotangent through the outputs and every floating tensor of the final state
    g = torch.Generator().manual_seed(1)
    # (a chunk that just ended leaves constant zero sums: nothing to differentiate there)
    outs = [out, *[x for x in state_tensors(state) if x.requires_grad]]
    ref_outs = [ref_out, *[x for x in state_tensors(ref_state) if x.requires_grad]]
    assert len(outs) == len(ref_outs) >= 4
    cotangents = [torch.randn(x.shape, generator=g, dtype=x.dtype) for x in outs]
    names = [n for n, x in fast_in.items() if x is not None]
    grads = torch.autograd.grad(outs, [fast_in[n] for n in names], cotangents, allow_unused=True)
    ref_grads = torch.autograd.grad(ref_outs, [ref_in[n] for n in names], cotangents, allow_unused=True)
    for name, a, b in zip(names, grads, ref_grads):
        assert a is not None and b is not None, name
        assert b.abs().max() > 0, f"the reference gives {name} no gradient"
        assert (a - b).abs().max().item() <= 1e-10 * (1 + b.abs().max().item()), name


def random_splits(T, chunk, gen):
    """Cut points mixing single tokens, pieces that end mid-chunk and pieces spanning several chunks."""
    cuts, t = [], 0
    kinds = [1, chunk // 2 + 1, 3 * chunk + 1, chunk - 1, chunk]
    while t < T:
        t = min(T, t + kinds[int(torch.randint(len(kinds), (1,), generator=gen))])
        cuts.append(t)
    return cuts


def run_in_pieces(inputs, cuts, **kw):
    outs, state, start = [], None, 0
    for end in cuts:
        piece = {n: x if n.startswith("w") or x is None else x[:, :, start:end] for n, x in inputs.items()}
        o, state = lact_swiglu(**piece, state=state, **kw)
        outs.append(o)
        start = end
    return torch.cat(outs, dim=2), state


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)], ids=["f64", "f32"])
def test_any_split_gives_the_same_outputs_state_and_gradients(variant, dtype, tol):
    """Chunks of 8 tokens here: with fewer tokens than the weights' sides, an update is rank-deficient and
    Newton-Schulz inflates its null directions (rounding noise) by ~500x, which float32 cannot match."""
    momentum, muon = VARIANTS[variant]
    T, chunk = 43, 8
    inputs = make_inputs(T=T, dtype=dtype, momentum=momentum)
    whole_in = leaves(inputs)
    out, state = lact_swiglu(**whole_in, chunk_size=chunk, muon=muon)
    weight = torch.randn(out.shape, dtype=dtype)
    whole_grads = torch.autograd.grad((out * weight).sum(), [whole_in["k"], whole_in["lr"], whole_in["w1"]])
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        split_in = leaves(inputs)
        pieces, s = run_in_pieces(split_in, random_splits(T, chunk, gen), chunk_size=chunk, muon=muon)
        assert (pieces - out).abs().max().item() <= tol
        assert max_diff(state_tensors(s), state_tensors(state)) <= tol
        grads = torch.autograd.grad((pieces * weight).sum(), [split_in["k"], split_in["lr"], split_in["w1"]])
        # float32 gradients through five Newton-Schulz steps carry ~2e-4 relative rounding
        grad_tol = tol if dtype == torch.float64 else 1e-3
        for a, b in zip(grads, whole_grads):
            assert (a - b).abs().max().item() <= grad_tol * (1 + b.abs().max().item())


@pytest.mark.parametrize("variant", ["momentum", "muon"])
def test_no_output_depends_on_a_later_token_even_inside_a_chunk(variant):
    momentum, muon = VARIANTS[variant]
    inputs = leaves(make_inputs(B=1, H=1, T=14, momentum=momentum))
    out, _ = lact_swiglu(**inputs, chunk_size=C, muon=muon)
    per_token = [n for n in ("q", "k", "v", "lr", "momentum") if inputs[n] is not None]
    for t in (5, 9, 12):  # second place of chunks 1 and 2, and the first of chunk 3
        grads = dict(
            zip(
                per_token,
                torch.autograd.grad(
                    out[0, 0, t].sum(), [inputs[n] for n in per_token], retain_graph=True, allow_unused=True
                ),
            )
        )
        for name, g in grads.items():
            if g is not None:
                assert g[0, 0, t + 1 :].abs().max() == 0, f"output {t} depends on a later {name}"
        assert grads["q"][0, 0, t].abs().max() > 0
        # earlier chunks shape the weights token t is answered with; its own chunk's keys do not
        start = t - t % C
        assert grads["k"][0, 0, :start].abs().max() > 0
        assert grads["k"][0, 0, start:].abs().max() == 0


@pytest.mark.parametrize(
    "pieces,restarts,counts",
    [([6], [[False, True, False]], [2, 0, 2]), ([3, 2], [[False, True, False], [False, False, True]], [1, 2, 0])],
    ids=["two_places", "three_places_in_a_cycle"],
)
def test_rows_restarted_mid_chunk_run_as_fresh_sequences(pieces, restarts, counts):
    """After some rows restart (their state replaced with the initial one by ``torch.where``), rows sit
    at different places in their chunks; each must still equal its own sequence run alone, gradients
    included. The core runs the rows place by place and puts them back by inverting that permutation:
    places [2, 0, 2] order the rows by a swap (its own inverse), places [1, 2, 0] by a 3-cycle (not)."""
    T = 17
    inputs = make_inputs(B=3, T=T, momentum=True)
    fresh = LaCTState.initial((inputs["w0"], inputs["w1"], inputs["w2"]), 3, torch.float64, momentum=True)

    def tokens(start, end, rows=slice(None)):
        return {n: x if n.startswith("w") else x[rows, :, start:end] for n, x in inputs.items()}

    state, start, since = None, 0, [0, 0, 0]  # since: where each row's own sequence starts
    for end, restart in zip(itertools.accumulate(pieces), restarts):
        _, state = lact_swiglu(**tokens(start, end), chunk_size=C, muon=True, state=state)
        mask = torch.tensor(restart)

        def merge(old, new, mask=mask):
            return torch.where(mask.view(-1, *[1] * (old.dim() - 1)), new, old)

        state = LaCTState(
            *[
                tuple(merge(o, n) for o, n in zip(a, b)) if isinstance(a, tuple) else merge(a, b)
                for a, b in zip(dataclasses.astuple(state), dataclasses.astuple(fresh))
            ]
        )
        since = [end if r else s for s, r in zip(since, restart)]
        start = end
    assert state.count.tolist() == counts
    then_in = leaves(tokens(start, T))
    out, after = lact_swiglu(**then_in, chunk_size=C, muon=True, state=state)
    cotangent = torch.randn(out.shape, dtype=out.dtype)
    k_grad, lr_grad = torch.autograd.grad((out * cotangent).sum(), [then_in["k"], then_in["lr"]])

    for b in range(3):
        alone_then = leaves(tokens(start, T, slice(b, b + 1)))
        s = None
        if since[b] < start:
            _, s = lact_swiglu(**tokens(since[b], start, slice(b, b + 1)), chunk_size=C, muon=True)
        o, s = lact_swiglu(**alone_then, chunk_size=C, muon=True, state=s)
        assert (out[b : b + 1] - o).abs().max().item() <= 1e-12
        assert max_diff([x[b : b + 1] for x in state_tensors(after)], state_tensors(s)) <= 1e-12
        grads = torch.autograd.grad((o * cotangent[b : b + 1]).sum(), [alone_then["k"], alone_then["lr"]])
        assert max_diff(grads, [k_grad[b : b + 1], lr_grad[b : b + 1]]) <= 1e-10


def test_updates_keep_every_row_at_its_initial_norm():
    inputs = make_inputs(T=4 * C, momentum=True)
    inputs["lr"] = inputs["lr"] * 20  # large steps: the rescaling has work to do
    _, state = lact_swiglu(**inputs, chunk_size=C)
    for w, w_init in zip(state.weights, (inputs["w0"], inputs["w1"], inputs["w2"])):
        assert (w - w_init).abs().max() > 0.1
        torch.testing.assert_close(w.norm(dim=-1), w_init.norm(dim=-1).expand_as(w.norm(dim=-1)), rtol=1e-4, atol=0)


@pytest.mark.parametrize("shape", [(3, 6, 4), (3, 4, 6), (2, 5, 5)], ids=["tall", "wide", "square"])
def test_newton_schulz_pushes_singular_values_near_one_and_matches_the_polynomial(shape):
    G = torch.randn(*shape, dtype=torch.float64)
    X = orthogonalize(G)
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.6 and s.max() < 1.25
    # the same singular vectors, each singular value mapped by the scalar polynomials
    U, sigma, Vh = torch.linalg.svd(G, full_matrices=False)
    x = sigma / torch.linalg.matrix_norm(G)[:, None]
    for a, b, c in NEWTON_SCHULZ_STEPS:
        x = a * x + b * x**3 + c * x**5
    assert torch.allclose(X, U @ torch.diag_embed(x) @ Vh, atol=1e-10)
    assert torch.allclose(X, torch.stack([newton_schulz(g) for g in G]), atol=1e-12)
    assert orthogonalize(torch.zeros(shape, dtype=torch.float64)).abs().max() == 0


def test_newton_schulz_coefficients_are_the_ones_lact_released():
    """The reference (`naive.newton_schulz`) and the test above read the same table, so a changed
    coefficient would go unseen there. Pinned to LaCT's release (``zeropower_via_newtonschulz5`` in
    ``lact_llm/lact_model/ttt_operation.py`` of github.com/a1600012888/LaCT: a schedule of five steps, not
    Muon's single (3.4445, -4.7750, 2.0315) repeated), with its eps."""
    assert NEWTON_SCHULZ_STEPS == (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    )
    assert NORM_EPS == 1e-7


def test_newton_schulz_brings_well_spread_singular_values_within_a_few_percent_of_one():
    """Singular values at about 0.1 to 0.4 of the Frobenius norm (random 16 x 64) all end in [0.977, 1.033]
    under the released schedule; four of its steps end at 0.918, Muon's original five at 0.68, and a
    reordered or retuned last step outside too."""
    G = torch.randn(8, 16, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = torch.linalg.svdvals(orthogonalize(G))
    assert s.min() >= 0.977 and s.max() <= 1.033


@pytest.mark.parametrize("shape", [(3, 6, 4), (3, 4, 6), (2, 5, 5)], ids=["tall", "wide", "square"])
def test_newton_schulz_hand_written_backward_matches_finite_differences(shape):
    G = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(orthogonalize, (G,))
    zero = torch.zeros(shape, dtype=torch.float64, requires_grad=True)  # a zero update: finite, zero gradient
    orthogonalize(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_state_has_the_same_shapes_whatever_the_length():
    shapes = set()
    for T in (1, 7, 40):
        _, s = lact_swiglu(**make_inputs(T=T), chunk_size=C, muon=True)
        shapes.add(tuple(tuple(x.shape) for x in state_tensors(s)))
    assert len(shapes) == 1


def test_empty_sequence_returns_the_state_unchanged():
    inputs = make_inputs(T=7)
    _, state = lact_swiglu(**inputs, chunk_size=C)
    empty = {n: x if n.startswith("w") else x[:, :, :0] for n, x in inputs.items()}
    out, same = lact_swiglu(**empty, chunk_size=C, state=state)
    assert out.shape == (2, 2, 0, 5)
    assert max_diff(state_tensors(same), state_tensors(state)) == 0


def test_bf16_autocast_runs_in_float32():
    inputs = make_inputs(B=1, T=300, D=16, M=16, E=16, dtype=torch.float32)
    inputs.update({n: inputs[n].bfloat16() for n in ("q", "k", "v")})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = lact_swiglu(**inputs, chunk_size=64, muon=True)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert all(x.dtype == torch.float32 and torch.isfinite(x).all() for x in state.weights + state.velocity)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: {**a, "lr": a["lr"][..., :2]}, "lr must be"),
        (lambda a: {**a, "k": a["k"][:, :1]}, "q, k must be"),
        (lambda a: {**a, "w1": a["w1"].mT}, "w1"),
        (lambda a: {**a, "momentum": a["momentum"][..., :-1]}, "momentum must be"),
    ],
)
def test_bad_shapes_are_rejected_with_the_numbers(change, message):
    with pytest.raises(ValueError, match=message):
        lact_swiglu(**change(make_inputs()), chunk_size=C)


def test_integer_inputs_are_refused():
    """The core worked in float32 and rounded its outputs back to the integers' dtype, without a word."""
    inputs = make_inputs()
    ints = {n: (inputs[n] * 3).round().long() for n in ("q", "k", "v")}
    with pytest.raises(ValueError, match=r"^q, k, v must be floating point; got torch.int64$"):
        lact_swiglu(**{**inputs, **ints}, chunk_size=C)


@pytest.mark.parametrize("chunk", [0, 2.5, 4.0, True])
def test_a_chunk_size_that_is_not_a_whole_number_of_tokens_is_refused(chunk):
    """2.5 failed in Python's list arithmetic; True ran as chunks of 1 (as TTT's mini_batch_size is checked)."""
    with pytest.raises(ValueError, match=rf"^chunk_size must be a whole number >= 1; got {chunk!r}$"):
        lact_swiglu(**make_inputs(), chunk_size=chunk)


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda a: {n: x[:1] if n in ("q", "k", "v", "lr", "momentum") else x for n, x in a.items()},
            r"\(1, 2, 6, 4\)",
        ),
        (lambda a: {**a, "w0": a["w0"][:, :3], "w1": a["w1"][..., :3], "w2": a["w2"][:, :3]}, r"\(2, 2, 3, 4\)"),
    ],
    ids=["batch", "fast_width"],
)
def test_a_state_of_another_batch_or_fast_weight_shape_is_refused_with_both_shapes(change, message):
    """It failed in a reshape or a broadcast deep inside the chunk step."""
    inputs = make_inputs(T=3)
    _, state = lact_swiglu(**inputs, chunk_size=C)
    with pytest.raises(ValueError, match=rf"the state's fast weights are \[\(2, 2, 6, 4\).*continue \[{message}"):
        lact_swiglu(**change(inputs), chunk_size=C, state=state)


def test_a_state_whose_momentum_buffer_alone_is_of_another_shape_is_refused():
    """It named the weights' shapes, which were right, and not the buffer that was wrong."""
    inputs = make_inputs(T=3, momentum=True)
    _, state = lact_swiglu(**inputs, chunk_size=C)
    spliced = dataclasses.replace(state, velocity=tuple(w[:, :1] for w in state.velocity))
    with pytest.raises(
        ValueError, match=r"the state's momentum buffers are \[\(2, 1, 6, 4\).*continue \[\(2, 2, 6, 4\)"
    ):
        lact_swiglu(**inputs, chunk_size=C, state=spliced)


def test_a_state_without_momentum_cannot_continue_with_momentum():
    inputs = make_inputs(T=5, momentum=True)
    _, plain = lact_swiglu(**{**inputs, "momentum": None}, chunk_size=C)
    with pytest.raises(ValueError, match="momentum"):
        lact_swiglu(**inputs, chunk_size=C, state=plain)
