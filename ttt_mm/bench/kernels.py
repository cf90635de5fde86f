"""GPU benchmark of the TTT cores and layer: Triton kernels against the PyTorch core and SDPA attention.

    python -m ttt_mm.bench kernels                 # needs CUDA; bf16, batch 1, 12 heads of 64
    python -m ttt_mm.bench kernels --quick         # the correctness check and T = 4k only

Correctness comes first: on small shapes the Triton cores must match the PyTorch core (float32:
outputs, final state and every input gradient of TTT-Linear and TTT-MLP) or nothing is timed.
Then, in one run, for each length: the TTT-Linear and TTT-MLP cores, forward and forward+backward,
each with ``kernel="triton"`` and ``kernel="torch"`` (the PyTorch core only up to ``--torch-max``
tokens: it is slow), and the full TTT-Linear layer (projections included) against a causal SDPA
attention layer and a LaCT layer (PyTorch ops, no fused kernels; chunk and window as in ``bench
layers``) of the same width. Printed: tokens/s, peak memory above the inputs,
and the fraction of the card's dense bf16 peak FLOP/s that the core's matrix products represent
(TTT-Linear ``2 F (3 F + 2 K)`` FLOPs per token and head forward, about 2.5x that backward;
TTT-MLP counted the same way below).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

import torch

from ..layers import AttentionLayer, LaCTLayer, TTTLayer
from ..ops import ttt_linear, ttt_mlp
from ..ops.ttt import fused

# Dense bf16 tensor-core peak FLOP/s (no sparsity) from the vendors' data sheets, by device-name substring.
PEAK_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
}


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def core_inputs(B, H, T, F, dtype, device, grad=False, mlp=False):
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, H, T, F, device=device, generator=g).to(dtype) for _ in range(3))
    lr = (torch.rand(B, H, T, device=device, generator=g) * 0.5 / F).to(dtype)
    shapes = [(H, F, 4 * F), (H, 4 * F), (H, 4 * F, F), (H, F)] if mlp else [(H, F, F), (H, F)]
    params = [torch.randn(*s, device=device, generator=g) * 0.02 for s in shapes]
    ln = torch.ones(H, F, device=device), torch.zeros(H, F, device=device)
    return [x.requires_grad_(grad) for x in (q, k, v, lr, *params, *ln)]


def check(device: str) -> float:
    """Largest relative error of the Triton cores against the PyTorch core, float32."""
    worst = 0.0
    for T in (16 * 37 + 5, 16 * 4):
        results = []
        for kernel in ("torch", "triton"):
            args = core_inputs(2, 3, T, 64, torch.float32, device, grad=True)
            out, state = ttt_linear(*args, kernel=kernel)
            (out.square().sum() + state.params[0].square().sum() + state.params[1].sum()).backward()
            # TTT-MLP trains with the kernel up to F x 4F = 8192 (head dim 32); at 64 only its forward runs
            args_mlp = core_inputs(2, 3, T, 32, torch.float32, device, grad=True, mlp=True)
            out_mlp, state_mlp = ttt_mlp(*args_mlp, kernel=kernel)
            (out_mlp.square().sum() + sum(p.square().sum() for p in state_mlp.params)).backward()
            with torch.no_grad():
                out_wide, _ = ttt_mlp(*core_inputs(2, 3, T, 64, torch.float32, device, mlp=True), kernel=kernel)
            results.append(
                [out, *state.params, *(a.grad for a in args), out_mlp, *state_mlp.params, *(a.grad for a in args_mlp)]
                + [out_wide]
            )
        for a, b in zip(*results):
            worst = max(worst, ((a - b).abs().max() / (1 + b.abs().max())).item())
    return worst


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


def _fwd_bwd(core, inputs, K: int, kernel: str) -> None:
    out, _ = core(*inputs, mini_batch_size=K, kernel=kernel)
    out.float().square().mean().backward()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ttt_mm.bench kernels", description=__doc__.split("\n")[0])
    p.add_argument("--lengths", nargs="+", type=int, default=[4096, 16384, 65536, 262144])
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--mini-batch", type=int, default=16)
    p.add_argument("--torch-max", type=int, default=16384, help="longest T for the (slow) PyTorch core")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lact-chunk", type=int, default=2048, help="LaCT tokens per fast-weight update")
    p.add_argument("--lact-window", type=int, default=256, help="LaCT attention window (tokens)")
    p.add_argument("--quick", action="store_true", help="correctness check and T = 4096 only")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("the kernels benchmark needs a CUDA device", file=sys.stderr)
        return 2
    device, name = "cuda", torch.cuda.get_device_name()
    err = check(device)
    print(f"# {name}, torch {torch.__version__}; Triton vs PyTorch core, float32, max relative error {err:.2e}")
    if err > 1e-3:
        print("error: the Triton core does not match the PyTorch core; not timing it", file=sys.stderr)
        return 1
    H, F, K = args.heads, args.head_dim, args.mini_batch
    peak = peak_flops(name)
    flops_fwd = 2 * F * (3 * F + 2 * K) * H  # per token: K W, Q W, the update (F x F); Q K^T, M G (K x K)
    D = 4 * F  # TTT-MLP per token: 6 products with W1 or W2 (k, q, update; 2 F D each), G2 W2^T, 4 K x K ones
    flops_mlp = (6 * 2 * F * D + 2 * F * D + 2 * K * (2 * F + 2 * D)) * H
    lengths = [4096] if args.quick else args.lengths
    cases = [(1, T) for T in lengths] + [(8, 4096)]
    print("| what | B | T | tokens/s | ms | peak MiB | % bf16 peak |")
    print("|---|---|---|---|---|---|---|")

    def report(what, B, T, seconds, mib, flops_per_token):
        frac = f"{100 * flops_per_token * B * T / seconds / peak:.2f}" if peak and flops_per_token else "-"
        print(f"| {what} | {B} | {T} | {B * T / seconds:,.0f} | {seconds * 1e3:.2f} | {mib:.0f} | {frac} |", flush=True)

    for B, T in cases:
        for kernel in ("triton", "torch"):
            if kernel == "torch" and args.torch_max < T:
                continue
            for name, core, mlp, flops in (
                ("TTT-Linear", ttt_linear, False, flops_fwd),
                ("TTT-MLP", ttt_mlp, True, flops_mlp),
            ):
                inputs = core_inputs(B, H, T, F, torch.bfloat16, device, mlp=mlp)
                with torch.no_grad():
                    s, mib = timed(partial(core, *inputs, mini_batch_size=K, kernel=kernel), args.repeats)
                report(f"{name} core fwd ({kernel})", B, T, s, mib, flops)
                inputs = core_inputs(B, H, T, F, torch.bfloat16, device, grad=True, mlp=mlp)
                if kernel == "triton" and not fused.supported(inputs[0], K, 4 * F if mlp else None, training=True):
                    what = f"{name} core fwd+bwd (triton: F x 4F over its backward's limit, trains with torch)"
                    print(f"| {what} | {B} | {T} | - | - | - | - |", flush=True)
                    continue
                s, mib = timed(partial(_fwd_bwd, core, inputs, K, kernel), args.repeats)
                report(f"{name} core fwd+bwd ({kernel})", B, T, s, mib, 3.5 * flops)
        dim = H * F
        for what, layer in (
            ("TTT-Linear layer fwd", TTTLayer(dim, H, inner="linear", mini_batch_size=K)),
            ("attention layer fwd", AttentionLayer(dim, H)),
            ("LaCT layer fwd", LaCTLayer(dim, H, chunk_size=args.lact_chunk, window=args.lact_window)),
        ):
            layer = layer.to(device)
            x = torch.randn(B, T, dim, device=device)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                s, mib = timed(partial(layer, x), args.repeats)
            report(what, B, T, s, mib, None)
            del layer, x
        torch.cuda.empty_cache()
    return 0
