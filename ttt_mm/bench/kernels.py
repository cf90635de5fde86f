"""GPU benchmark of the TTT cores and layer: Triton kernels against the PyTorch core and SDPA attention.

    python -m ttt_mm.bench kernels                 # needs CUDA; bf16, batch 1, 12 heads of 64
    python -m ttt_mm.bench kernels --quick         # the correctness check and T = 4k (and batch 8) only
    python -m ttt_mm.bench kernels --lengths 65536 --torch-max 0 --batched-length 0  # 64k alone, Triton only
    python -m ttt_mm.bench kernels --launch spans  # the forward in two launches whatever the rows (or one-pass)

Correctness comes first: on small shapes, at the run's head size and mini-batch, each Triton core is
compared with the PyTorch core (outputs, final state and every input gradient of TTT-Linear and
TTT-MLP, on float32 and on bf16 inputs), and the errors are printed.
A core that fails is still timed, and so is everything else (a row that fails prints why), so one
short GPU session gets every number it can; the exit status is then 1.
Then, in one run, for each length: the TTT-Linear and TTT-MLP cores, forward and forward+backward,
each with ``kernel="triton"`` and ``kernel="torch"`` (the PyTorch core only up to ``--torch-max``
tokens: it is slow), and the full TTT-Linear layer (projections included) against a causal SDPA
attention layer and a LaCT layer (PyTorch ops, no fused kernels; chunk, window and fast-weight heads
as in ``bench layers``) of the same width. Printed: tokens/s, peak memory above the inputs,
and the fraction of the card's dense TF32 peak FLOP/s (the kernels' products run in TF32) that the
core's matrix products represent
(TTT-Linear ``2 F (3 F + 2 K)`` FLOPs per token and head forward, about 2.5x that backward;
TTT-MLP counted the same way below).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from functools import partial
from unittest import mock

import torch

from ..layers import AttentionLayer, LaCTLayer, TTTLayer
from ..messages import first_line
from ..ops import ttt_linear, ttt_mlp
from ..ops.ttt import fused
from .arguments import add_lact_arguments, length_or_zero, positive_int

# Dense TF32 tensor-core peak FLOP/s (no sparsity; half the bf16 peak) from the vendors' data sheets,
# by device-name substring: the kernels multiply 16-bit inputs (what this benchmark times) in TF32
# (`ttt_mm.ops.ttt.fused.precision`; a TTT-MLP of head dim over 32 trains in three-pass TF32, its products
# counted once); the PyTorch core's rows are measured against the same peak for comparison.
PEAK_TF32 = {  # matched in this order: the NVL (PCIe) cards run at lower clocks
    "H200 NVL": 417.5e12,
    "H200": 494.5e12,
    "H100 SXM": 494.5e12,
    "H100 NVL": 417.5e12,
    "H100 PCIe": 378e12,
    "H100": 494.5e12,
    "A100": 156e12,
}


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_TF32.items() if k in name), None)


def core_inputs(B, H, T, F, dtype, device, grad=False, mlp=False):
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, H, T, F, device=device, generator=g).to(dtype) for _ in range(3))
    lr = (torch.rand(B, H, T, device=device, generator=g) * 0.5 / F).to(dtype)
    shapes = [(H, F, 4 * F), (H, 4 * F), (H, 4 * F, F), (H, F)] if mlp else [(H, F, F), (H, F)]
    params = [torch.randn(*s, device=device, generator=g) * 0.02 for s in shapes]
    ln = torch.ones(H, F, device=device), torch.zeros(H, F, device=device)
    return [x.requires_grad_(grad) for x in (q, k, v, lr, *params, *ln)]


def _compare(fn) -> float:
    """Largest relative error between what ``fn(kernel)`` returns with the PyTorch core and with Triton,
    each tensor's error over its own largest value (over ``1 + max``, a state whose values are all well
    under 1 passed with an error of several percent of them)."""
    reference, triton_ = fn("torch"), fn("triton")
    errors = [
        ((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item() for a, b in zip(triton_, reference, strict=True)
    ]
    return math.inf if any(math.isnan(e) for e in errors) else max(errors)  # max() would pass a NaN over


def _training(core, mlp: bool, dtype: torch.dtype, kernel: str, T: int, device: str, F: int, K: int) -> list:
    """Outputs, final state and every input gradient of one forward and backward of a core on ``dtype``
    inputs: Triton's on them as they are, PyTorch's (the reference) on the same values in float32."""
    args = core_inputs(2, 3, T, F, dtype, device, grad=True, mlp=mlp)
    if kernel == "torch":
        args = [a.detach().float().requires_grad_() for a in args]
    out, state = core(*args, mini_batch_size=K, kernel=kernel)
    (out.float().square().sum() + sum(p.square().sum() for p in state.params)).backward()
    return [out, *state.params, *(a.grad for a in args)]


# T = K * CHECK_MINI_BATCHES + 5: 37 whole mini-batches in the kernel (3 weight checkpoints), 5 tokens
# after them in PyTorch (the benchmark's lengths compile their own kernels, so one T is enough).
CHECK_MINI_BATCHES = 37
# largest relative error passed: float32 inputs multiply in three-pass TF32 (float32 accuracy); bf16 ones
# in single-pass TF32, with bf16 outputs, gradients and gradient of the output (8 bits: up to 1.1e-2 in
# Triton's interpreter, whose products are exact)
TOLERANCES = {torch.float32: 1e-3, torch.bfloat16: 2e-2}
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bf16"}


def checks(F: int = 64, K: int = 16) -> list[tuple[str, object, float]]:
    """(what, function of kernel, T and device, tolerance): TTT-Linear at the run's head size ``F`` and
    mini-batch ``K``, TTT-MLP also at ``F = 32`` (it trains in single-pass TF32 on 16-bit inputs up to
    `fused.MLP_SINGLE_PASS_MAX_F`, in three-pass above), each on float32 and on bf16 inputs (the timed
    rows' and mixed-precision training's)."""
    rows = []
    for dtype, tolerance in TOLERANCES.items():
        cases = [("TTT-Linear", ttt_linear, False, F)] + [("TTT-MLP", ttt_mlp, True, f) for f in sorted({32, F})]
        for what, core, mlp, f in cases:
            fn = partial(_training, core, mlp, dtype, F=f, K=K)
            rows.append((f"{what} fwd+bwd, F={f}, K={K}, {DTYPE_NAMES[dtype]}", fn, tolerance))
    return rows


def check(device: str, F: int = 64, K: int = 16) -> dict[str, str]:
    """Each Triton core against the PyTorch core on small shapes (`checks`), with the forward in two
    launches and in one whatever the run's ``--launch`` (the check's few rows alone would take two, and
    the batched rows timed take one): "what, launch" -> the largest relative error, or the exception,
    with "FAIL" where it is over the row's tolerance. Never raises: one failure must not cost the
    timings of the rest (a GPU session is short)."""
    results = {}
    for launch in ("spans", "one-pass"):
        for what, fn, tolerance in checks(F, K):
            try:
                with forced_launch(launch):
                    err = _compare(partial(fn, T=K * CHECK_MINI_BATCHES + 5, device=device))
                results[f"{what}, {launch}"] = f"{err:.2e}" + ("" if err <= tolerance else " FAIL")
            except Exception as exc:  # e.g. Triton's OutOfResources at compile time
                results[f"{what}, {launch}"] = f"FAIL {type(exc).__name__}: {first_line(exc)}"
    return results


LAUNCHES = ("auto", "spans", "one-pass")


def forced_launch(launch: str):
    """The Triton forward's launches for this run: ``"auto"`` lets `fused.parallel_spans` choose by rows,
    ``"spans"`` and ``"one-pass"`` force two launches or one, to compare them at the same shape."""
    if launch not in LAUNCHES:
        raise ValueError(f"launch must be one of {LAUNCHES}; got {launch!r}")
    if launch == "auto":
        return contextlib.nullcontext()
    return mock.patch.object(fused, "parallel_spans", lambda q: launch == "spans")


def layer_core(F: int, K: int, device: str) -> str:
    """The core a TTT-Linear layer of head width ``F`` and mini-batch ``K`` runs on ``device`` (``kernel=None``):
    the layer row names it, since where Triton cannot run it the layer falls back to the PyTorch scan
    with a log line alone, and its row would time that against attention."""
    return "triton" if device == "cuda" and fused.supported(torch.empty(0, F), K) else "torch"


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best time of ``fn()`` over ``repeats`` calls after a warm-up, and its peak memory above the start."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, (torch.cuda.max_memory_allocated() - base) / 2**20


def _forward(core, inputs, K: int, kernel: str) -> None:
    with torch.no_grad():
        core(*inputs, mini_batch_size=K, kernel=kernel)


def _layer_forward(layer, x) -> None:
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        layer(x)


def _fwd_bwd(core, inputs, K: int, kernel: str) -> None:
    """Forward and backward to fresh gradient tensors, as a training step after ``zero_grad()`` makes them
    (``.backward()`` would add into the previous repeat's, a read that a step does not pay for)."""
    out, _ = core(*inputs, mini_batch_size=K, kernel=kernel)
    torch.autograd.grad(out.float().square().mean(), inputs)


LENGTHS = [4096, 16384, 65536, 262144]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ttt_mm.bench kernels", description=__doc__.split("\n")[0])
    p.add_argument("--lengths", nargs="+", type=positive_int, help=f"batch-1 lengths (default: {LENGTHS})")
    p.add_argument(
        "--batched-length", type=length_or_zero, default=4096, help="T of the extra batch-8 rows (0: leave them out)"
    )
    p.add_argument("--heads", type=positive_int, default=12)
    p.add_argument("--head-dim", type=positive_int, default=64)
    p.add_argument("--mini-batch", type=positive_int, default=16)
    p.add_argument(
        "--torch-max",
        type=length_or_zero,
        default=16384,
        help="longest T for the (slow) PyTorch core (0: leave it out)",
    )
    p.add_argument("--repeats", type=positive_int, default=3)
    add_lact_arguments(p)
    p.add_argument(
        "--quick",
        action="store_true",
        help="correctness check and T = 4096 only (and the batch-8 rows: --batched-length 0 leaves them out)",
    )
    p.add_argument(
        "--launch",
        choices=LAUNCHES,
        default="auto",
        help="the Triton forward: two launches where rows are few (auto), always two (spans), or one pass",
    )
    args = p.parse_args(argv)
    if args.quick and args.lengths:
        p.error("--quick times T = 4096 alone; give --lengths or --quick, not both")
    with forced_launch(args.launch):
        return _run(args)


def cases(args) -> list[tuple[int, int]]:
    """The (batch, length) rows to time: batch 1 at each length, then the batch-8 rows, if any."""
    lengths = [4096] if args.quick else args.lengths or LENGTHS
    return [(1, T) for T in dict.fromkeys(lengths)] + ([(8, args.batched_length)] if args.batched_length else [])


def _run(args) -> int:
    """The check and the table; the exit status."""
    if not torch.cuda.is_available():
        print("the kernels benchmark needs a CUDA device", file=sys.stderr)
        return 2
    device, name = "cuda", torch.cuda.get_device_name()
    H, F, K = args.heads, args.head_dim, args.mini_batch
    results = check(device, F, K)
    within = " and ".join(f"{DTYPE_NAMES[d]} inputs (within {t:g})" for d, t in TOLERANCES.items())
    print(f"# {name}, torch {torch.__version__}, forward launches: {args.launch}; Triton vs PyTorch core on")
    print(f"# {within}, max relative error:")
    for what, result in results.items():
        print(f"#   {what}: {result}")
    failed = any("FAIL" in r for r in results.values())
    if failed:
        print("error: a Triton core does not match the PyTorch core; its rows below are timed anyway", file=sys.stderr)
    peak = peak_flops(name)
    flops_fwd = 2 * F * (3 * F + 2 * K) * H  # per token: K W, Q W, the update (F x F); Q K^T, M G (K x K)
    D = 4 * F  # TTT-MLP per token: 6 products with W1 or W2 (k, q, update; 2 F D each), G2 W2^T, 4 K x K ones
    flops_mlp = (6 * 2 * F * D + 2 * F * D + 2 * K * (2 * F + 2 * D)) * H
    print(f"# timed: bf16 inputs, best of {args.repeats} calls after a warm-up")
    print("| what | B | T | tokens/s | ms | peak MiB | % TF32 peak |")
    print("|---|---|---|---|---|---|---|")

    failed_rows = []

    def row(what, B, T, fn, flops_per_token):
        """Times ``fn`` and prints its row; a failure (out of memory, a compile error) prints instead."""
        try:
            seconds, mib = timed(fn, args.repeats)
        except Exception as exc:
            failed_rows.append(what)
            with contextlib.suppress(RuntimeError):  # after a device fault every CUDA call fails: go on printing
                torch.cuda.empty_cache()
            print(f"| {what} | {B} | {T} | failed: {type(exc).__name__}: {str(exc)[:120]!r} | - | - | - |", flush=True)
            return
        frac = f"{100 * flops_per_token * B * T / seconds / peak:.2f}" if peak and flops_per_token else "-"
        print(f"| {what} | {B} | {T} | {B * T / seconds:,.0f} | {seconds * 1e3:.2f} | {mib:.0f} | {frac} |", flush=True)

    for B, T in cases(args):
        for kernel in ("triton", "torch"):
            if kernel == "torch" and args.torch_max < T:
                continue
            for name, core, mlp, flops in (
                ("TTT-Linear", ttt_linear, False, flops_fwd),
                ("TTT-MLP", ttt_mlp, True, flops_mlp),
            ):
                inputs = core_inputs(B, H, T, F, torch.bfloat16, device, mlp=mlp)
                row(f"{name} core fwd ({kernel})", B, T, partial(_forward, core, inputs, K, kernel), flops)
                inputs = core_inputs(B, H, T, F, torch.bfloat16, device, grad=True, mlp=mlp)
                row(f"{name} core fwd+bwd ({kernel})", B, T, partial(_fwd_bwd, core, inputs, K, kernel), 3.5 * flops)
                del inputs
        dim = H * F
        for what, layer in (
            (f"TTT-Linear layer fwd ({layer_core(F, K, device)})", TTTLayer(dim, H, inner="linear", mini_batch_size=K)),
            ("attention layer fwd", AttentionLayer(dim, H)),
            (
                "LaCT layer fwd",
                LaCTLayer(dim, H, chunk_size=args.lact_chunk, window=args.lact_window, fast_heads=args.lact_fast_heads),
            ),
        ):
            layer = layer.to(device)
            x = torch.randn(B, T, dim, device=device)
            row(what, B, T, partial(_layer_forward, layer, x), None)
            del layer, x
        torch.cuda.empty_cache()
    return 1 if failed or failed_rows else 0
