"""The contract of every hand-written backward in `ttt_mm.ops`: first derivatives, in full precision.

`torch.autograd.function.once_differentiable` alone is not enough. It marks a second derivative as
an error only on a node that ``torch.autograd.grad(..., inputs=...)`` may never visit, so a second
derivative through these cores could come back silently wrong (missing this op's share) or ``None``.
And a backward that runs inside an autocast region (a loss's ``.backward()`` under
``torch.autocast``) would have its products cast to half precision against the forward's float32
tensors. `first_order_backward` refuses the first and turns autocast off for the second.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from .precision import autocast_off


def first_order_backward(backward: Callable) -> Callable:
    """Decorate an ``autograd.Function.backward``: it runs without autograd and autocast, and a call
    that asks for a graph of the gradients (``create_graph=True``) is an error."""
    once = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled():  # autograd runs a backward with grad mode on only under create_graph
            raise RuntimeError(
                f"{backward.__qualname__.rsplit('.', 1)[0]} is a hand-written backward with first derivatives "
                "only; second derivatives (create_graph=True) would be wrong. For the TTT cores pass "
                "kernel='autograd' (autograd records the whole scan)"
            )
        device = next((g.device.type for g in grads if isinstance(g, torch.Tensor)), "cpu")
        with autocast_off(device):
            return once(ctx, *grads)

    return wrapper
