"""The TTT layer as in the paper's official release (ttt-lm-pytorch): projections, RoPE, learned inner
step size, the core, post-norm, gate."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..messages import check_count
from ..ops import TTTState, ttt_linear, ttt_mlp
from ..ops.precision import exact_dtype
from ..ops.rope import apply_rope, rope_rotation
from .conv import CausalDepthwiseConv
from .mixer import INIT_STD, RestartUnit, check_input, rope_head_width
from .pieces import in_pieces, piece_tokens

# Tokens per internal step of a long forward pass on the CPU (a multiple of any usual mini-batch size;
# other devices take longer pieces: `piece_tokens`).
PIECE_TOKENS = 2048


@dataclass
class TTTLayerState:
    """Everything a TTT layer carries between calls: the core's state and, with ``share_qk``, the
    caches of the q and k convolutions."""

    core: TTTState
    conv_q: Tensor | None = None
    conv_k: Tensor | None = None

    def detach(self) -> TTTLayerState:
        def conv(c):
            return None if c is None else c.detach()

        return replace(self, core=self.core.detach(), conv_q=conv(self.conv_q), conv_k=conv(self.conv_k))


class TTTLayer(nn.Module):
    """Sequence mixer whose hidden state is a linear map or a 2-layer MLP trained while reading
    (the mixer protocol, `ttt_mm.layers.Mixer`: ``forward(x, state)``, `initial_state`, `check_state`,
    `bounded_state`, `restart_unit`, `no_weight_decay`).

    Args:
        dim: model width ``C``; ``num_heads`` heads of ``F = C / num_heads``.
        inner: ``"linear"`` (TTT-Linear) or ``"mlp"`` (TTT-MLP, hidden width ``4F``).
        mini_batch_size: ``K``, tokens per inner gradient step.
        base_lr: inner learning-rate scale; ``None`` is the paper's 1.0 (linear) or 0.1 (mlp).
        use_gate: multiply the output by ``gelu_tanh(x Wg)``.
        share_qk: one projection for q and k followed by separate depthwise causal convs
            (the "mamba" backbone variant).
        conv_kernel: kernel of those convs.
        rope_theta: base of the rotary embedding of q and k (at the position inside the mini-batch).
    """

    bounded_state = True
    """The state is the inner weights and one mini-batch of sums: a fixed size whatever the length."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        inner: Literal["linear", "mlp"] = "linear",
        mini_batch_size: int = 16,
        base_lr: float | None = None,
        use_gate: bool = False,
        share_qk: bool = False,
        conv_kernel: int = 4,
        rope_theta: float = 10000.0,
    ):
        super().__init__()
        check_count(mini_batch_size=mini_batch_size)
        if share_qk:
            check_count(conv_kernel=conv_kernel)
        if base_lr is not None and not 0 <= base_lr < math.inf:  # (0: the inner model never learns, an ablation)
            raise ValueError(f"base_lr must be 0 or more; got {base_lr}")
        if inner not in ("linear", "mlp"):
            raise ValueError(f"inner must be 'linear' or 'mlp'; got {inner!r}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, rope_head_width(dim, num_heads, rope_theta)
        self.inner, self.mini_batch_size = inner, mini_batch_size
        self.restart_unit = RestartUnit(mini_batch_size, "TTT mini-batches", "mini_batch_size", required=True)
        self.base_lr = (1.0 if inner == "linear" else 0.1) if base_lr is None else base_lr
        self.share_qk, self.use_gate = share_qk, use_gate
        H, Fd, K = num_heads, self.head_dim, mini_batch_size

        # q, k, v projections in one matrix (q and v only with share_qk): one large product is
        # cheaper than three on a CPU, and the same function as separate Wq, Wk, Wv.
        self.wqkv = nn.Linear(dim, (2 if share_qk else 3) * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.wg = nn.Linear(dim, dim, bias=False) if use_gate else None
        self.conv_q = CausalDepthwiseConv(dim, conv_kernel) if share_qk else None
        self.conv_k = CausalDepthwiseConv(dim, conv_kernel) if share_qk else None
        self.lr_gate = nn.Linear(dim, H)  # a_h and c_h of all heads
        self.token_scale_delta = nn.Parameter(torch.zeros(K))
        if inner == "linear":
            self.W = nn.Parameter(torch.empty(H, Fd, Fd))
            self.b = nn.Parameter(torch.zeros(H, Fd))
        else:
            self.W1 = nn.Parameter(torch.empty(H, Fd, 4 * Fd))
            self.b1 = nn.Parameter(torch.zeros(H, 4 * Fd))
            self.W2 = nn.Parameter(torch.empty(H, 4 * Fd, Fd))
            self.b2 = nn.Parameter(torch.zeros(H, Fd))
        self.inner_shapes = [tuple(p.shape) for p in self.inner_params()]  # (FSDP may flatten the weights)
        self.ln_weight = nn.Parameter(torch.ones(H, Fd))
        self.ln_bias = nn.Parameter(torch.zeros(H, Fd))
        self.post_norm = nn.LayerNorm(dim, eps=1e-6)
        self.rope_theta = rope_theta
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialisation as released: weights ~ N(0, 0.02); biases and the token-scale offset 0; the inner
        LayerNorm and the output norm the identity (the q/k convolutions as ``nn.Conv1d``'s)."""
        for lin in (self.wqkv, self.wo, self.wg, self.lr_gate):
            if lin is not None:
                nn.init.normal_(lin.weight, std=INIT_STD)
        nn.init.zeros_(self.lr_gate.bias)
        for p in self.inner_params():
            if p.dim() == 3:
                nn.init.normal_(p, std=INIT_STD)
            else:
                nn.init.zeros_(p)
        nn.init.zeros_(self.token_scale_delta)
        nn.init.ones_(self.ln_weight)
        nn.init.zeros_(self.ln_bias)
        self.post_norm.reset_parameters()
        for conv in (self.conv_q, self.conv_k):
            if conv is not None:
                conv.conv.reset_parameters()

    def inner_params(self) -> tuple[Tensor, ...]:
        """The inner model's initial weights, in the order the core takes them."""
        return (self.W, self.b) if self.inner == "linear" else (self.W1, self.b1, self.W2, self.b2)

    def no_weight_decay(self) -> list[nn.Parameter]:
        """The inner model's initial weights, its LayerNorm and the token-scale offset: decaying them
        would pull the inner model towards zero rather than regularise the projections."""
        return [*self.inner_params(), self.ln_weight, self.ln_bias, self.token_scale_delta]

    def check_state(self, state: TTTLayerState) -> None:
        """Raises ValueError when ``state`` is of another inner model, head count or q/k convolution
        (``share_qk``: a state without its caches would restart them silently), or part way through a
        mini-batch of another size."""
        state.core.check_shapes(self.inner_shapes, state.core.params[0].shape[0])
        caches = [c for c in (state.conv_q, state.conv_k) if c is not None]
        if self.share_qk:
            want = (state.core.params[0].shape[0], self.conv_q.kernel_size - 1, self.dim)
            if len(caches) != 2 or any(tuple(c.shape) != want for c in caches):
                got = [None if c is None else tuple(c.shape) for c in (state.conv_q, state.conv_k)]
                raise ValueError(
                    f"this share_qk layer continues q and k convolution caches of {want}; the state holds {got}"
                )
        elif caches:
            raise ValueError("the state holds q and k convolution caches (share_qk=True); this layer has none")
        state.core.check_continued_with(self.mini_batch_size)

    def initial_state(self, batch_size: int) -> TTTLayerState:
        """The state before the first token, as explicit tensors (``None`` passed to ``forward`` means the
        same). It stays attached to the initial weights, so a stream restarted in training trains them."""
        inner = self.inner_params()
        dtype = exact_dtype(inner[0].dtype)  # as the core's own
        core = TTTState.initial(inner, batch_size, dtype)
        conv = None
        if self.share_qk:
            w = self.wqkv.weight
            conv = w.new_zeros(batch_size, self.conv_q.kernel_size - 1, self.dim)
        return TTTLayerState(core, conv, None if conv is None else conv.clone())

    def forward(self, x: Tensor, state: TTTLayerState | None = None) -> tuple[Tensor, TTTLayerState]:
        """``x [B, T, C]`` (the block's normed input) -> ``y [B, T, C]`` and the state after ``x``.

        Long inputs are processed a piece at a time (``PIECE_TOKENS`` on the CPU) with the state carried,
        which gives the same result (the layer streams exactly) while every temporary stays small.
        """
        check_input(x, self.dim, state, TTTLayerState, self.wqkv.weight)
        if state is not None:
            self.check_state(state)
        return in_pieces(self._forward, x, state, piece_tokens(x, PIECE_TOKENS))

    def _forward(self, x: Tensor, state: TTTLayerState | None) -> tuple[Tensor, TTTLayerState]:
        B, T, C = x.shape
        H, Fd = self.num_heads, self.head_dim
        conv_q = conv_k = None
        if self.share_qk:
            qk, v = self.wqkv(x).chunk(2, dim=-1)
            q, conv_q = self.conv_q(qk, None if state is None else state.conv_q)
            k, conv_k = self.conv_k(qk, None if state is None else state.conv_k)
            qk = torch.stack([q, k], dim=2).unflatten(-1, (H, Fd)).flatten(2, 3)  # [B, T, 2H, F]
        else:
            qkv = self.wqkv(x).unflatten(-1, (3 * H, Fd))  # [B, T, 3H, F]
            qk, v = qkv.split([2 * H, H], dim=2)  # split, not slices: its backward fills no zeros
            v = v.flatten(2)

        pos = 0 if state is None else state.core.pos  # RoPE uses the position inside the mini-batch
        rotation = rope_rotation(torch.arange(self.mini_batch_size, device=x.device), Fd, self.rope_theta)
        qk = apply_rope(qk, rotation[(pos + torch.arange(T, device=x.device)) % self.mini_batch_size])
        q, k = qk.transpose(1, 2).chunk(2, dim=1)  # [B, H, T, F] each
        v = v.unflatten(-1, (H, Fd)).transpose(1, 2)

        gate = self.lr_gate(x).to(torch.promote_types(x.dtype, torch.float32))  # float32 at least under autocast
        lr = self.base_lr / self.head_dim * torch.sigmoid(gate).transpose(1, 2)  # [B, H, T]
        delta = self.token_scale_delta  # (its 1/(p+1) in float32 at least: a bf16 layer's would be off by 0.3%)
        scale_dtype = torch.promote_types(delta.dtype, torch.float32)
        token_scale = 1.0 / torch.arange(1, self.mini_batch_size + 1, device=x.device, dtype=scale_dtype) + delta
        core = ttt_linear if self.inner == "linear" else ttt_mlp
        o, core_state = core(
            q,
            k,
            v,
            lr,
            *self.inner_params(),
            self.ln_weight,
            self.ln_bias,
            mini_batch_size=self.mini_batch_size,
            token_scale=token_scale,
            state=None if state is None else state.core,
        )
        o = o.transpose(1, 2).reshape(B, T, C)
        if torch.is_grad_enabled() and o.requires_grad:  # keep o alone for the backward, not also LN(o)
            y = checkpoint(self._output, o, x, use_reentrant=False)
        else:
            y = self._output(o, x)
        return y, TTTLayerState(core_state, conv_q, conv_k)

    def _output(self, o: Tensor, x: Tensor) -> Tensor:
        """Post-norm, gate and output projection of the heads' concatenated outputs ``o [B, T, C]``."""
        o = self.post_norm(o)
        if self.use_gate:
            o = F.gelu(self.wg(x), approximate="tanh") * o
        return self.wo(o)
