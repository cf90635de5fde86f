"""The hand-written backward of the PyTorch scans (`ttt_mm.ops.ttt.backward`) against autograd through the
token-by-token reference, in float64: outputs, final state and every input gradient."""

import pytest
import torch
from hydra.utils import instantiate
from test_train import compose_train
from test_ttt_core import INNER, make_inputs

from ttt_mm.ops import TTTState
from ttt_mm.ops.ttt import core
from ttt_mm.ops.ttt.naive import ttt_naive

TOL = 1e-10


def weighted_sum(out, state: TTTState, seed=1):
    """A loss with a random upstream gradient for the outputs and every tensor of the final state."""
    gen = torch.Generator().manual_seed(seed)
    return sum(
        (t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in (out, *state.params, *state.grads)
    )


def leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def split_args(inner, xs):
    n = 2 if inner == "linear" else 4
    return xs[:4], xs[4 : 4 + n], xs[4 + n : 6 + n], xs[6 + n]


def reference_grads(inner, inputs, params, ln, tau, K):
    """Gradients of `weighted_sum` through `ttt_naive` on the whole sequence."""
    xs = leaves(*inputs, *params, *ln, tau)
    (q, k, v, lr), p, (lw, lb), ts = split_args(inner, xs)
    out, state = ttt_naive(INNER[inner][1], q, k, v, lr, p, lw, lb, mini_batch_size=K, token_scale=ts)
    weighted_sum(out, state).backward()
    return out.detach(), [x.grad for x in xs]


def graph_ops(t: torch.Tensor) -> set[str]:
    """The names of every autograd node that ``t`` depends on."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [n for n, _ in node.next_functions]
    return {type(n).__name__ for n in seen}


def assert_close(got, want, tol=TOL):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        err = (a - b).abs().max().item()
        assert err <= tol * max(1.0, b.abs().max().item()), f"input {i}: max error {err:.3g}"


def test_the_hand_written_backward_is_the_one_used_on_the_cpu():
    inputs, params, ln = make_inputs("linear", T=40, K=8)
    xs = leaves(*inputs, *params, *ln)
    out, _ = INNER["linear"][0](*xs, mini_batch_size=8)
    names = graph_ops(out)
    assert "LinearScanBackward" in names
    assert "NativeLayerNormBackwardBackward0" not in names  # autograd did not record the scan


@pytest.mark.parametrize("inner", ["linear", "mlp"])
@pytest.mark.parametrize(
    "T,span,scan_chunk",
    [(37, 3, core.SCAN_CHUNK), (64, 16, core.SCAN_CHUNK), (83, 1, core.SCAN_CHUNK), (64, 3, 2)],
    ids=["T37-span3", "T64-span16", "T83-span1", "T64-span3-scans_of_2"],
)
def test_gradients_match_the_token_by_token_reference(inner, T, span, scan_chunk, monkeypatch):
    """T not a multiple of K, and spans that do not divide the mini-batch count; scans of 2 mini-batches
    (spans cut at their ends), each going on from the weights the previous one left."""
    monkeypatch.setattr(core, "SCAN_CHUNK", scan_chunk)
    K = 8
    inputs, params, ln = make_inputs(inner, B=2, H=2, T=T, F=6, K=K)
    tau = torch.linspace(-0.2, 1.0, K, dtype=torch.float64)  # the clamp at 0 is in the graph too
    want_out, want = reference_grads(inner, inputs, params, ln, tau, K)
    xs = leaves(*inputs, *params, *ln, tau)
    (q, k, v, lr), p, (lw, lb), ts = split_args(inner, xs)
    out, state = INNER[inner][0](
        q, k, v, lr, *p, lw, lb, mini_batch_size=K, token_scale=ts, kernel="torch", checkpoint_span=span
    )
    weighted_sum(out, state).backward()
    assert (out - want_out).abs().max().item() <= TOL
    assert_close([x.grad for x in xs], want)


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_gradients_through_uneven_streamed_pieces_match_the_reference(inner):
    """The sequence in pieces that start and end mid-mini-batch, the state carried (attached) from each
    piece to the next: the gradients of every input, through every state passed in, equal one pass."""
    K, T = 8, 59
    inputs, params, ln = make_inputs(inner, B=1, H=2, T=T, F=6, K=K)
    tau = torch.linspace(0.1, 1.0, K, dtype=torch.float64)
    want_out, want = reference_grads(inner, inputs, params, ln, tau, K)
    xs = leaves(*inputs, *params, *ln, tau)
    (q, k, v, lr), p, (lw, lb), ts = split_args(inner, xs)
    outs, state, start = [], None, 0
    for end in (5, 30, 31, 59):  # 5 tokens, then 3 to close the mini-batch + 3 whole + 1, 1 token, the rest
        o, state = INNER[inner][0](
            q[:, :, start:end],
            k[:, :, start:end],
            v[:, :, start:end],
            lr[:, :, start:end],
            *p,
            lw,
            lb,
            mini_batch_size=K,
            token_scale=ts,
            state=state,
            checkpoint_span=2,
        )
        outs.append(o)
        start = end
    out = torch.cat(outs, dim=2)
    weighted_sum(out, state).backward()
    assert (out - want_out).abs().max().item() <= TOL
    assert_close([x.grad for x in xs], want)


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_gradients_reach_a_state_passed_in(inner):
    """The weights and open gradient sums of a state that ended mid-mini-batch, as leaves: their gradients
    equal those of autograd through the same PyTorch steps (the reference path)."""
    K, T = 8, 45
    inputs, params, ln = make_inputs(inner, B=2, H=2, T=T, F=6, K=K)
    _, first = INNER[inner][0](*(x[:, :, :3] for x in inputs), *params, *ln, mini_batch_size=K)
    assert first.pos == 3
    grads = {}
    for kernel in ("autograd", "torch"):
        xs = leaves(*inputs, *params, *ln, *first.params, *first.grads)
        n = len(params)
        (q, k, v, lr), p, (lw, lb) = xs[:4], xs[4 : 4 + n], xs[4 + n : 6 + n]
        carried = TTTState(tuple(xs[6 + n : 6 + 2 * n]), tuple(xs[6 + 2 * n :]), first.pos)
        out, state = INNER[inner][0](
            q, k, v, lr, *p, lw, lb, mini_batch_size=K, state=carried, kernel=kernel, checkpoint_span=2
        )
        weighted_sum(out, state).backward()
        grads[kernel] = [x.grad for x in xs]
    n = len(params)
    ignored = range(4, 4 + n)  # the initial weights: a state passed in replaces them
    assert all((g is None) == (i in ignored) for i, g in enumerate(grads["torch"]))
    assert_close([g for i, g in enumerate(grads["torch"]) if i not in ignored],
                 [g for i, g in enumerate(grads["autograd"]) if i not in ignored])  # fmt: skip


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_training_keeps_only_the_inputs_and_the_weights_at_span_starts(inner):
    """Memory does not grow with the mini-batches' activations: what the scan saves for its backward is one
    compact copy of q, k, v - k and lr, plus one set of inner weights per span."""
    K, T, span = 16, 2048, 16
    inputs, params, ln = make_inputs(inner, B=1, H=2, T=T, F=8, K=K, dtype=torch.float32)
    xs = leaves(*inputs, *params, *ln)
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        INNER[inner][0](*xs, mini_batch_size=K, checkpoint_span=span)
    q = inputs[0]
    per_token = 3 * q.shape[-1] + 3  # k and q rows with their constant-1 column, v - k, lr
    weights = sum(p[0].numel() + p.shape[-1] for p in params[::2]) * q.shape[1]  # + bias rows, per head
    bound = 4 * (q.shape[1] * T * per_token + (T // K // span) * weights) * 1.05
    assert sum(saved.values()) <= bound


def test_default_backbone_trains_through_the_hand_written_backward(tmp_path):
    """The default training config's backbone, on the CPU, records the hand-written scan in its graph."""
    cfg = compose_train(tmp_path, [])
    model = instantiate(cfg.model, _recursive_=False)
    x = torch.randn(1, 64, model.backbone.dim, requires_grad=True)
    y, _ = model.backbone(x)
    assert "LinearScanBackward" in graph_ops(y)


def test_a_span_below_one_is_rejected():
    inputs, params, ln = make_inputs("linear", T=16, K=8)
    with pytest.raises(ValueError, match="checkpoint_span"):
        INNER["linear"][0](*inputs, *params, *ln, mini_batch_size=8, checkpoint_span=0)
