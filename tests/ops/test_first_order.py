"""Every hand-written backward in `ttt_mm.ops` (`ttt_mm.ops.first_order`): a second derivative is an
error, never a silently wrong number, and a backward run inside autocast gives float32's gradients."""

import pytest
import torch
from test_lact_core import make_inputs as lact_inputs
from test_ttt_core import INNER
from test_ttt_core import make_inputs as ttt_inputs
from test_window_attention import inputs as window_inputs

from ttt_mm.ops import lact_swiglu
from ttt_mm.ops.window_attention import window_attention


def ttt(inner):
    def run(dtype):
        inputs, params, ln = ttt_inputs(inner, B=1, H=2, T=24, F=8, K=8, dtype=dtype)  # no autograd tail
        q, k, v, lr = (x.requires_grad_() for x in inputs)
        out, _ = INNER[inner][0](q, k, v, lr, *params, *ln, mini_batch_size=8, kernel="torch")
        return out, [q, k, v]

    return run


def lact(dtype):
    inputs = lact_inputs(B=1, T=13, D=8, M=8, E=8, dtype=dtype)
    q, k, v = (inputs[n].requires_grad_() for n in ("q", "k", "v"))
    out, _ = lact_swiglu(**inputs, chunk_size=4, muon=True)
    return out, [q, k, v]


def window(dtype):
    q, k, v, cache_k, cache_v, cached, rotation = window_inputs(23, 9, [8, 3], dtype)
    return window_attention(q, k, v, cache_k, cache_v, cached, rotation), [q, k, v]


CORES = {"ttt_linear": ttt("linear"), "ttt_mlp": ttt("mlp"), "lact": lact, "window_attention": window}


@pytest.mark.parametrize("core", list(CORES))
def test_a_second_derivative_is_refused_where_autograd_would_have_dropped_this_op(core):
    """``grad(..., inputs=k)`` of a first gradient: once_differentiable alone let it return a number
    missing this op's share (or None), as its error sits on a node such a call never visits."""
    out, (q, k, _) = CORES[core](torch.float64)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        (dq,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
        torch.autograd.grad(dq.sum(), k, allow_unused=True)


@pytest.mark.parametrize("core", list(CORES))
def test_a_backward_inside_autocast_gives_the_gradients_of_one_outside(core):
    grads = []
    for inside in (False, True):
        torch.manual_seed(0)  # the same inputs both times
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, leaves = CORES[core](torch.float32)
            loss = out.float().square().sum()
            if inside:
                loss.backward()
        if not inside:
            loss.backward()
        grads.append([x.grad for x in leaves])
    for outside, inside in zip(*grads, strict=True):
        assert inside.dtype == torch.float32 and torch.equal(inside, outside)
