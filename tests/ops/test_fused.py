"""The Triton kernels against the PyTorch core: outputs, final state and every input gradient, for
TTT-Linear and TTT-MLP.

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set in the root
conftest), so these tests check the kernels' arithmetic on any machine; speed is for the GPU benchmark.
"""

import pytest
import torch

from ttt_mm.ops import TTTState, ttt_linear, ttt_mlp
from ttt_mm.ops.ttt import fused

pytest.importorskip("triton")

K, F = 16, 16


def inputs(B=2, H=2, T=5 * K + 3, dtype=torch.float32):
    q, k, v = (torch.randn(B, H, T, F, dtype=dtype) for _ in range(3))
    lr = torch.rand(B, H, T, dtype=dtype) * 0.5
    W, b = torch.randn(H, F, F) * 0.3, torch.randn(H, F) * 0.1
    ln = (1 + 0.1 * torch.randn(H, F), 0.1 * torch.randn(H, F))
    tau = torch.linspace(-0.1, 1.0, K)  # negative entries are clamped to 0: the clamp's gradient is tested too
    return [q, k, v, lr, W, b, *ln, tau]


def core(args, kernel, state=None):
    q, k, v, lr, W, b, ln_w, ln_b, tau = args
    return ttt_linear(q, k, v, lr, W, b, ln_w, ln_b, mini_batch_size=K, token_scale=tau, state=state, kernel=kernel)


def close(a, b, tol):
    return (a - b).abs().max().item() <= tol * (1 + b.abs().max().item())


@pytest.fixture(params=[16, 2], ids=["one_span", "spans_of_2"])
def checkpoint(request, monkeypatch):
    """Checkpoints every 16 mini-batches (one span here) or every 2 (several spans, the last one short)."""
    monkeypatch.setattr(fused, "CHECKPOINT", request.param)
    return request.param


@pytest.fixture(params=[True, False], ids=["spans_in_parallel", "one_pass"])
def spans(request, monkeypatch):
    """The forward's two launches (the recurrence, then the outputs span by span, as on a GPU with rows to
    spare) or its single pass (as on a GPU full of rows)."""
    monkeypatch.setattr(fused, "parallel_spans", lambda q: request.param)
    return request.param


def assert_kernels_agree(run, args, names, pos):
    """``run(leaves, kernel)`` with the PyTorch core and with the kernels, on copies of ``args`` that need
    gradients and under the same random upstream gradient of the outputs and the final state: outputs,
    state and every input gradient must agree."""
    results = {}
    for kernel in ("torch", "triton"):
        leaves = [x.clone().requires_grad_(True) for x in args]
        out, state = run(leaves, kernel)
        upstream = torch.Generator().manual_seed(1)
        loss = sum((t * torch.randn(t.shape, generator=upstream)).sum() for t in (out, *state.params, *state.grads))
        loss.backward()
        results[kernel] = (out, state, [x.grad for x in leaves])
    (out_t, st_t, grads_t), (out_f, st_f, grads_f) = results["torch"], results["triton"]
    assert st_f.pos == st_t.pos == pos
    assert close(out_f, out_t, 1e-5)
    for a, b in zip(st_f.params + st_f.grads, st_t.params + st_t.grads):
        assert close(a, b, 1e-5)
    for name, a, b in zip(names.split(), grads_f, grads_t, strict=True):
        assert a is not None and torch.isfinite(a).all(), name
        assert close(a, b, 1e-4), f"d{name}: {(a - b).abs().max().item():.2e}"


def test_forward_and_backward_match_pytorch_core(checkpoint, spans):
    assert_kernels_agree(core, inputs(), "q k v lr W b ln_w ln_b tau", pos=3)


def test_the_kernels_scan_only_whole_mini_batches():
    q, k, v, lr, W, b, ln_w, ln_b, tau = inputs(B=1, H=1)
    flat = [x[0, :, :0] for x in (q, k, v, lr)]
    with pytest.raises(ValueError, match="whole mini-batches of 16; got 0 tokens"):
        fused.scan(*flat, tau, ln_w, ln_b, (W, b))


@torch.no_grad()
@pytest.mark.filterwarnings("ignore:overflow encountered in exp")
def test_inference_matches_pytorch_core(checkpoint, spans):
    """Without gradients the single pass stores no checkpoints, and the two launches store theirs in a
    temporary: outputs and final state as the PyTorch core's, for both cores."""
    args = inputs(T=5 * K)
    for run in (lambda kernel: core(args, kernel), lambda kernel: mlp(args[:4], mlp_params(), kernel, tau=args[-1])):
        torch.manual_seed(0)
        out_t, state_t = run("torch")
        torch.manual_seed(0)
        out_f, state_f = run("triton")
        assert close(out_f, out_t, 1e-5)
        for a, b in zip(state_f.params, state_t.params, strict=True):
            assert close(a, b, 1e-5)


def test_streaming_through_the_kernels_matches_one_call():
    args = inputs(T=4 * K + 5)
    whole, whole_state = core(args, "triton")
    pieces, state, t = [], None, 0
    for n in (5, 2 * K + 3, 1, K + 1, 11):  # pieces ending mid-mini-batch, a single token, whole runs
        q, k, v, lr = (x[:, :, t : t + n] for x in args[:4])
        out, state = core([q, k, v, lr, *args[4:]], "triton", state)
        pieces.append(out)
        t += n
    assert t == args[0].shape[2]
    assert close(torch.cat(pieces, dim=2), whole, 1e-5)
    for a, b in zip(state.params + state.grads, whole_state.params + whole_state.grads):
        assert close(a, b, 1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_keep_a_float32_state(dtype):
    args = inputs(T=3 * K)
    low = [x.to(dtype) if i < 4 else x for i, x in enumerate(args)]
    out, state = core(low, "triton")
    ref, ref_state = core([x.to(dtype).float() if i < 4 else x for i, x in enumerate(args)], "torch")
    assert out.dtype == dtype and all(p.dtype == torch.float32 for p in state.params)
    assert close(out.float(), ref, 2e-2)
    for a, b in zip(state.params, ref_state.params):
        assert close(a, b, 1e-3)


def test_kernel_selection(monkeypatch):
    args = inputs(T=K)
    calls = []
    scan = fused.scan
    monkeypatch.setattr(fused, "scan", lambda *a: calls.append(1) or scan(*a))
    core(args, None)  # CPU tensors: the PyTorch core
    assert calls == []
    core(args, "triton")
    assert calls == [1]
    with pytest.raises(ValueError, match="powers of two.*K=16$"):  # (TTT-Linear's refusal names no MLP width)
        narrow = [x[..., :8] if i < 3 else x for i, x in enumerate(args)]
        ttt_linear(
            *narrow[:4], torch.zeros(2, 8, 8), torch.zeros(2, 8), torch.ones(2, 8), torch.zeros(2, 8), kernel="triton"
        )
    with pytest.raises(ValueError, match="MLP width 24"):
        mlp(args[:4], mlp_params(D=24), "triton")
    monkeypatch.delenv("TRITON_INTERPRET")  # (CPU tensors outside the interpreter: Triton's "0 active drivers")
    with pytest.raises(ValueError, match="CUDA tensors, or on the CPU in Triton's interpreter: TRITON_INTERPRET=1"):
        core(args, "triton")
    with pytest.raises(ValueError, match="kernel must be"):
        core(args, "cuda")
    assert isinstance(core(args, "torch")[1], TTTState)


def test_shapes_over_what_fits_on_chip_are_refused_by_name():
    """A TTT-Linear head over `fused.LINEAR_MAX_F`, a TTT-MLP over `fused.MLP_MAX_F` (or over
    `fused.MLP_MAX_KF` with its mini-batches) or mini-batches over `fused.MAX_K` would not compile within
    a GPU's shared memory: ``kernel="triton"`` refuses them by name
    (``None`` runs the PyTorch core on them)."""
    wide = fused.LINEAR_MAX_F * 2
    q = torch.zeros(1, 1, K, wide)
    lr = torch.zeros(1, 1, K)
    W, b, ln = torch.zeros(1, wide, wide), torch.zeros(1, wide), torch.ones(1, wide)
    with pytest.raises(ValueError, match=f"head dim <= {fused.LINEAR_MAX_F} .*got torch.float32, head dim {wide}"):
        ttt_linear(q, q, q, lr, W, b, ln, b, mini_batch_size=K, kernel="triton")
    F_mlp = 2 * fused.MLP_MAX_F
    q = torch.zeros(1, 1, K, F_mlp)
    params = (torch.zeros(1, F_mlp, 4 * F_mlp), torch.zeros(1, 4 * F_mlp), torch.zeros(1, 4 * F_mlp, F_mlp))
    with pytest.raises(
        ValueError, match=f"head dim <= {fused.MLP_MAX_F}, MLP width <= 4 x head dim .*head dim {F_mlp}"
    ):
        ttt_mlp(
            q,
            q,
            q,
            lr,
            *params,
            torch.zeros(1, F_mlp),
            torch.ones(1, F_mlp),
            torch.zeros(1, F_mlp),
            mini_batch_size=K,
            kernel="triton",
        )
    long_K = 2 * fused.MAX_K
    q, lr = torch.zeros(1, 1, long_K, F), torch.zeros(1, 1, long_K)
    with pytest.raises(ValueError, match=f"K <= {fused.MAX_K},.*K={long_K}"):
        ttt_linear(
            q,
            q,
            q,
            lr,
            torch.zeros(1, F, F),
            torch.zeros(1, F),
            torch.ones(1, F),
            torch.zeros(1, F),
            mini_batch_size=long_K,
            kernel="triton",
        )
    assert fused.supported(torch.zeros(1, 1, K, fused.LINEAR_MAX_F), fused.MAX_K)
    args = inputs(T=K)
    with pytest.raises(ValueError, match="MLP width <= 4 x head dim.*MLP width 128"):  # its [K, D] tiles grow too
        mlp(args[:4], mlp_params(D=8 * F), "triton")
    assert fused.supported(torch.zeros(1, 1, K, F_mlp // 2), K, 2 * F_mlp)
    assert not fused.supported(torch.zeros(1, 1, K, F_mlp), K, F_mlp)  # a narrower MLP of the same head dim
    assert not fused.supported(torch.zeros(1, 1, K, F_mlp // 2), fused.MAX_K, 2 * F_mlp)  # wide with long mini-batches


def test_wide_mlps_train_in_three_pass_tf32():
    """On a GPU, 16-bit inputs multiply in single-pass TF32, except a TTT-MLP wider than
    `fused.MLP_SINGLE_PASS_MAX_F` in training, whose backward fits in shared memory only in three-pass
    (and whose forward matches it); float32 inputs always take three-pass, and the interpreter exact products."""

    def prec(dtype, F, hidden, training, cuda=True):
        return fused.launch_options(dtype, cuda, F, K, hidden, training)["PREC"]

    assert prec(torch.bfloat16, 64, 256, training=True) == "tf32x3"
    assert prec(torch.bfloat16, 64, 256, training=False) == "tf32"
    assert prec(torch.bfloat16, 32, 128, training=True) == "tf32"
    assert prec(torch.bfloat16, 64, None, training=True) == "tf32"
    assert prec(torch.float32, 32, 128, training=False) == "tf32x3"
    assert prec(torch.bfloat16, 64, 256, training=True, cuda=False) == "ieee"
    assert fused.launch_options(torch.bfloat16, True, 64, K, 256, True)["D"] == 256


def test_the_scan_launches_training_kernels_only_for_training(monkeypatch):
    """What `test_wide_mlps_train_in_three_pass_tf32` decides must reach the launch: the scan asks for
    training kernels exactly when gradients are needed (the interpreter's products are exact either way)."""
    seen = []
    options = fused.launch_options
    monkeypatch.setattr(fused, "launch_options", lambda *a: seen.append(a[-1]) or options(*a))
    args = inputs(T=2 * K)
    with torch.no_grad():
        mlp(args[:4], mlp_params(), "triton")
    mlp(args[:4], [p.requires_grad_(True) for p in mlp_params()], "triton")[0].sum().backward()
    assert seen == [False, True]


def mlp_params(H=2, D=4 * F):
    """``W1, b1, W2, b2`` and the inner LayerNorm's weight and bias."""
    return [
        torch.randn(H, F, D) * 0.3,
        torch.randn(H, D) * 0.1,
        torch.randn(H, D, F) * 0.3,
        torch.randn(H, F) * 0.1,
        1 + 0.1 * torch.randn(H, F),
        0.1 * torch.randn(H, F),
    ]


def mlp(seq, params, kernel, state=None, tau=None):
    return ttt_mlp(*seq, *params, mini_batch_size=K, token_scale=tau, state=state, kernel=kernel)


@pytest.mark.filterwarnings(
    "ignore:overflow encountered in exp"
)  # the interpreter's sigmoid of very negative inputs: 0, as it should
def test_mlp_kernels_match_pytorch_core(checkpoint, spans):
    args = inputs(T=5 * K + 7)  # with spans of 2 mini-batches, the last one short

    def run(leaves, kernel):
        return mlp(leaves[:4], leaves[4:10], kernel, tau=leaves[10])

    assert_kernels_agree(run, [*args[:4], *mlp_params(), args[-1]], "q k v lr W1 b1 W2 b2 ln_w ln_b tau", pos=7)


@torch.no_grad()
@pytest.mark.filterwarnings("ignore:overflow encountered in exp")
def test_mlp_streams_through_the_kernels():
    args = inputs(T=4 * K + 7)
    params = mlp_params()
    whole, whole_state = mlp(args[:4], params, "triton", tau=args[-1])
    first, state = mlp([x[:, :, :21] for x in args[:4]], params, "triton", tau=args[-1])
    rest, state = mlp([x[:, :, 21:] for x in args[:4]], params, "triton", state, tau=args[-1])
    assert close(torch.cat([first, rest], dim=2), whole, 1e-5)
    for a, b in zip(state.params + state.grads, whole_state.params + whole_state.grads):
        assert close(a, b, 1e-5)
