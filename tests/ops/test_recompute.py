"""Saved tensors of a recomputed output: rebuilt once in the backward, same gradients, nothing else touched."""

import weakref

import pytest
import torch

from ttt_mm.ops.recompute import recomputed


def features(x):
    """A cheap op whose three outputs are views of one tensor, as the LaCT fast-path inputs are."""
    out = torch.stack([x.sin(), x.cos(), x.exp()])
    return out[0], out[1], out[2]


def loss_and_grads(x, w, recompute):
    a, b, c = features(x)
    calls = []

    def rebuild():
        calls.append(1)
        return features(x.detach())[0]

    if recompute:
        with recomputed(a, rebuild):
            y = (a * w).sum() + (b[1:] * c[:-1] * w[1:]).sum() + (w * w).sum()  # products save a, b, c and w
    else:
        y = (a * w).sum() + (b[1:] * c[:-1] * w[1:]).sum() + (w * w).sum()
    assert calls == []  # the forward recomputes nothing
    grads = torch.autograd.grad(y, (x, w))
    return grads, len(calls)


def test_gradients_are_unchanged_and_the_output_is_rebuilt_once():
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    plain, _ = loss_and_grads(x, w, recompute=False)
    rebuilt, calls = loss_and_grads(x, w, recompute=True)
    assert calls == 1  # a, b and c were saved as places in one storage, rebuilt once for all three
    for p, r in zip(plain, rebuilt, strict=True):
        assert torch.equal(p, r)


def test_a_recompute_that_builds_something_else_is_an_error():
    x = torch.randn(4, requires_grad=True)
    a, _, _ = features(x)
    with recomputed(a, lambda: x.detach()[:2].clone()):
        y = (a * a).sum()
    with pytest.raises(RuntimeError, match="did not rebuild"):
        y.backward()


def test_what_the_backward_does_not_reach_is_freed_with_its_outputs():
    """An op inside the context that keeps its own output (exp does), on a branch the backward never
    runs (as a layer's returned state is in a step that drops it): dropping the output frees it."""
    x = torch.randn(6, requires_grad=True)
    a, _, _ = features(x)
    with recomputed(a, lambda: features(x.detach())[0]):
        unused = (a * x).exp()
        y = (a * x).sum()
    alive = weakref.ref(unused)
    y.backward()
    del unused
    assert alive() is None
