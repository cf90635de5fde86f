"""The TTT core exactly as the spec reads, one token at a time. For tests: slow, but obviously right.

Gradients come from autograd on the literal inner loss, not from the closed form the fast paths use,
so the two are independent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .state import TTTState

EPS = 1e-6


def linear_model(params: tuple[Tensor, ...], x: Tensor) -> Tensor:
    W, b = params
    return x @ W + b


def mlp_model(params: tuple[Tensor, ...], x: Tensor) -> Tensor:
    W1, b1, W2, b2 = params
    return Fn.gelu(x @ W1 + b1, approximate="tanh") @ W2 + b2


def _ln(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return gamma * (x - mean) / torch.sqrt(var + EPS) + beta


def _inner_loss(model, theta, k_t, v_t, gamma, beta):
    return 0.5 * ((_ln(model(theta, k_t), gamma, beta) - (v_t - k_t)) ** 2).sum()


def ttt_naive(model, q, k, v, lr, params, ln_weight, ln_bias, *, mini_batch_size=16, token_scale=None):
    """Reference for ``ttt_linear`` (``model=linear_model``) and ``ttt_mlp`` (``model=mlp_model``).

    Shapes as in :func:`ttt_mm.ops.ttt_linear`; ``params`` are the initial inner weights, one set per
    head. Returns ``out [B, H, T, F]`` and the final :class:`TTTState`. When an input requires grad, the
    inner gradients are themselves differentiated (``create_graph``), so that autograd through this
    function is a reference for the fast paths' backward.
    """
    B, H, T, F = q.shape
    K = mini_batch_size
    tau = 1.0 / torch.arange(1, K + 1, dtype=q.dtype) if token_scale is None else token_scale.clamp_min(0)
    out = torch.empty_like(q)
    final_params = [[None] * H for _ in range(B)]
    final_sums = [[None] * H for _ in range(B)]
    inputs = (q, k, v, lr, *params, ln_weight, ln_bias, token_scale)
    differentiable = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs)

    def as_variable(x):  # something autograd.grad can differentiate with respect to
        return x if x.requires_grad else x.detach().requires_grad_()

    for bi in range(B):
        for h in range(H):
            gamma, beta = ln_weight[h], ln_bias[h]
            theta = tuple(p[h] for p in params)  # weights at the start of the current mini-batch
            if differentiable:
                theta = tuple(as_variable(x) for x in theta)

            sums = tuple(torch.zeros_like(p) for p in theta)
            for t in range(T):
                p = t % K
                if p == 0:
                    sums = tuple(torch.zeros_like(x) for x in theta)
                theta_in = theta if differentiable else tuple(as_variable(x.detach()) for x in theta)
                loss = _inner_loss(model, theta_in, k[bi, h, t], v[bi, h, t], gamma, beta)
                grads = torch.autograd.grad(loss, theta_in, create_graph=differentiable)
                sums = tuple(s + lr[bi, h, t] * g for s, g in zip(sums, grads))
                theta_t = tuple(x - tau[p] * s for x, s in zip(theta, sums))
                out[bi, h, t] = q[bi, h, t] + _ln(model(theta_t, q[bi, h, t]), gamma, beta)
                if p == K - 1:
                    theta = theta_t
            if T % K == 0:
                sums = tuple(torch.zeros_like(x) for x in theta)
            final_params[bi][h], final_sums[bi][h] = theta, sums

    def stack(rows, i):
        return torch.stack([torch.stack([r[i] for r in row]) for row in rows])

    n = len(params)
    state = TTTState(
        tuple(stack(final_params, i) for i in range(n)), tuple(stack(final_sums, i) for i in range(n)), T % K, K
    )
    return out, state
