"""Tokens/s and peak memory of one mixer layer (TTT-Linear, TTT-MLP, attention, LaCT) against sequence length.

    python -m ttt_mm.bench layers                      # CPU, fp32 forward, no grad
    python -m ttt_mm.bench layers --device cuda --dtype bf16
    python -m ttt_mm.bench layers --train               # forward + backward (training cost per length)

On the CPU each measurement runs in a fresh subprocess so that its peak resident memory (``VmHWM``)
belongs to that layer and length alone; on CUDA the allocator's peak is used. The table's last column
divides each layer's tokens/s by the attention layer's at the same length in the same round (below),
and reports the median of those ratios: a spell of the host that slows one row of a round is then
one round's ratio, not the whole column's. The lines after the table (cost per token at each length
over 4k's) are medians of ratios within rounds too.

Every timed sample does the same amount of work at every length: ``--work`` tokens (64k by default)
as independent sequences of length ``T``, each with its own data. A short length is then not timed in
a lucky fraction of a second that a long one cannot fit into, so "cost per token against T" compares
like with like on a shared, noisy machine. For the same reason the measurements are taken in
``--rounds`` round-robin passes over all layers and lengths, and each row reports its median round:
a slow (or unusually fast) spell of the machine then moves one round of every row, not one row.

LaCT runs with chunks of ``--lact-chunk`` tokens (2048: as released, and about 7 s of 128 px
audio-visual tokens, the stream these lengths stand for) and an attention window of
``--lact-window`` tokens (256: about 1 s of such tokens; attention's cost grows with the window
and would otherwise dominate the layer), with ``--lact-fast-heads`` fast-weight heads (4, as released:
width 128 each at width 512) and the layer's other defaults (momentum, Muon).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

import torch

from ..layers import AttentionLayer, LaCTLayer, TTTLayer
from .arguments import add_lact_arguments, positive_int
from .memory import reset_peak, resident_mib

LAYERS = ("ttt_linear", "ttt_mlp", "attention", "lact")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Written before each timed CPU sample (its sequences each read fresh inputs) to evict the caches:
# otherwise a short input stays resident in L3 across repeats and short lengths look faster per token
# than long ones for that reason alone.
CACHE_FLUSH_BYTES = 256 * 2**20


def build(name: str, args: argparse.Namespace) -> torch.nn.Module:
    if name == "attention":
        return AttentionLayer(args.dim, args.heads)
    if name == "lact":
        return LaCTLayer(
            args.dim, args.heads, chunk_size=args.lact_chunk, window=args.lact_window, fast_heads=args.lact_fast_heads
        )
    return TTTLayer(args.dim, args.heads, inner=name.removeprefix("ttt_"), mini_batch_size=args.mini_batch)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_ratio(rows: list[dict], attention: list[dict] | None) -> str:
    """`_speed_ratio` of a row over attention's at its length, formatted; "-" where attention has no row
    at that length."""
    return "-" if attention is None else _ratio(_speed_ratio(rows, attention))


def _speed_ratio(rows: list[dict], ref: list[dict]) -> float:
    """The median over rounds of a row's tokens/s over another's in the same round (of an even number of
    rounds the lower middle one, the slower): a spell of the host that slows one row of a round moves
    one round's ratio, where a ratio of the rows' median rounds, which may be other rounds, carried it."""
    within = sorted(r["tokens_per_s"] / a["tokens_per_s"] for r, a in zip(rows, ref, strict=True))
    return within[(len(within) - 1) // 2]


def _ratio(x: float) -> str:
    """Two decimals, or as many as three significant digits need below 0.1 (TTT-MLP on a GPU: 0.00412)."""
    return f"{x:.{2 if x >= 0.1 else 2 - math.floor(math.log10(x))}f}" if x > 0 else "0"


def measure(name: str, T: int, args: argparse.Namespace) -> dict:
    """Time per sequence of one sample (``max(1, work // T)`` sequences of ``T`` tokens), and the peak
    memory of one sequence above the inputs and weights, in this process.

    A short warm-up first, then one untimed sequence: its rise above what is resident after the
    warm-up is the peak (the memory a sequence needs; a warm-up at full length would have left it
    resident), and it faults in the memory the timed sequences then reuse, as a long run's steps do
    (timed, a sample of one sequence paid for that alone: 20-40% at 4k on the CPU)."""
    torch.manual_seed(0)
    device, dtype = args.device, DTYPES[args.dtype]
    layer = build(name, args).to(device).train(args.train)
    count = max(1, args.work // T)
    xs = torch.randn(count, args.batch, T, args.dim, device=device).unbind(0)
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)

    def step(inp):
        with autocast:  # the forward only, as mixed-precision training runs it
            y, _ = layer(inp)
        if args.train:  # (into the warm-up's gradients: resident like the weights, out of the peak of a sequence)
            y.float().square().mean().backward()

    scratch = torch.ones(CACHE_FLUSH_BYTES // 4) if device == "cpu" else None  # resident before the baseline
    with torch.set_grad_enabled(args.train):
        # warm-up: lazy init, kernel selection; on CUDA at the full length, so that Triton compiles the
        # kernels for these shapes (and LaCT runs an update) before the peak is measured; on the CPU at
        # most half of it (a full-length warm-up left the peak resident: 0 MiB for T <= 256)
        step(xs[0] if device == "cuda" else xs[0][:, : max(1, min(T // 2, 256))])
        _sync(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:  # the rise above what is resident now (the warm-up's peak may lie above it)
            base = resident_mib("VmRSS" if reset_peak() else "VmHWM") * 2**20
        step(xs[0])  # untimed: the peak of one sequence
        _sync(device)
        peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else resident_mib("VmHWM") * 2**20 - base
        if scratch is not None:  # start the sample from DRAM, as a stream does, at every length
            scratch.fill_(1.0)
        t0 = time.perf_counter()
        for x in xs:
            step(x)
        _sync(device)
        seconds = (time.perf_counter() - t0) / count
    return {
        "layer": name,
        "T": T,
        "seconds": seconds,
        "tokens_per_s": args.batch * T / seconds,
        "peak_mib": max(0, peak) / 2**20,
    }


def run_isolated(name: str, T: int, argv: list[str], env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, "-m", "ttt_mm.bench", "layers", *argv, "--worker", name, str(T)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {name} T={T} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def live_memory(name: str, T: int, argv: list[str]) -> float:
    """Peak resident memory of one sequence with glibc returning every block of 64 KiB or more to the
    system when it is freed. The timed pass's ``peak MiB`` also counts memory that the allocator keeps
    after a free and cannot reuse for a later, differently sized tensor (it grows with the number of
    distinct temporaries, not with what is alive at once); this pass counts what is alive. Untimed:
    returning memory to the system makes every allocation a page-faulting ``mmap``."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    return run_isolated(name, T, [*argv, "--work", str(T)], env)["peak_mib"]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ttt_mm.bench layers", description=__doc__.split("\n")[0])
    p.add_argument("--layers", nargs="+", choices=LAYERS, default=list(LAYERS))
    p.add_argument("--lengths", nargs="+", type=positive_int, default=[1024, 4096, 16384, 65536])
    p.add_argument("--dim", type=positive_int, default=512)
    p.add_argument("--heads", type=positive_int, default=8)
    p.add_argument("--mini-batch", type=positive_int, default=16)
    add_lact_arguments(p)
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    p.add_argument("--rounds", type=positive_int, default=5, help="round-robin passes; each row reports its median")
    p.add_argument("--work", type=positive_int, default=65536, help="tokens per timed sample (sequences of T tokens)")
    p.add_argument("--train", action="store_true", help="time forward + backward instead of forward alone")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="intra-op threads of each timed process (torch's default)"
    )
    p.add_argument("--worker", nargs=2, metavar=("LAYER", "T"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.layers, args.lengths = list(dict.fromkeys(args.layers)), list(dict.fromkeys(args.lengths))  # each once
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.threads is not None:  # the workers parse the same arguments: each timed process uses as many
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    for name in args.layers:  # (a width the heads do not divide, say: said once, not in a row of every length)
        try:
            with torch.device("meta"):
                build(name, args)
        except Exception as exc:  # (what the layer's own checks raise, or any other constructor error)
            print(f"python -m ttt_mm.bench layers: error: {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    gpu = f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""
    precision = f"{args.dtype} autocast of the forward" if args.dtype != "fp32" else args.dtype
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, {args.device}{gpu} {precision}, dim {args.dim}, heads {args.heads}, "
        f"K {args.mini_batch}, LaCT chunk {args.lact_chunk} window {args.lact_window} fast heads "
        f"{args.lact_fast_heads}, batch {args.batch}, {'forward+backward' if args.train else 'forward, no grad'}, "
        f"samples of {args.work} tokens (ms: per sequence of T), median of {args.rounds} rounds, load average "
        f"{os.getloadavg()[0]:.2f} (a busy host slows the TTT rows far more than attention's: compare ratios from "
        "a quiet one)"
    )
    rounds: dict[tuple[str, int], list[dict]] = {}
    failed: dict[tuple[str, int], str] = {}  # a row that failed once (out of memory, say) is not retried
    for r in range(args.rounds):
        for T in args.lengths:
            for name in args.layers:
                if (name, T) in failed:
                    continue
                try:
                    row = run_isolated(name, T, argv) if args.device == "cpu" else measure(name, T, args)
                except Exception as exc:  # the other rows still count: a GPU session is short
                    last_line = (str(exc).strip().splitlines() or [""])[-1]
                    failed[name, T] = f"{type(exc).__name__}: {last_line[:200]}"
                    print(f"  round {r + 1}: {name:<10} T={T:>6}: failed: {failed[name, T]}", file=sys.stderr)
                    if args.device == "cuda":
                        torch.cuda.empty_cache()
                    continue
                print(
                    f"  round {r + 1}: {name:<10} T={T:>6}: {row['tokens_per_s']:>10,.0f} tok/s",
                    file=sys.stderr,
                    flush=True,
                )
                rounds.setdefault((name, T), []).append(row)
    # median; of an even number of rounds the slower middle one (two rounds: the slower, not the best); a
    # row that failed in any round is a failed row (not also a median of the rounds it passed)
    rows = [sorted(rs, key=lambda row: row["seconds"])[len(rs) // 2] for k, rs in rounds.items() if k not in failed]
    for r in rows:  # CPU: the memory that is live at the peak, beside what the process held (see live_memory)
        try:
            r["live_mib"] = live_memory(r["layer"], r["T"], argv) if args.device == "cpu" else r["peak_mib"]
        except RuntimeError as exc:  # the timed rows still print
            r["live_mib"] = math.nan
            print(f"  live memory of {r['layer']} T={r['T']}: failed: {exc}", file=sys.stderr)
    attention = {T: rs for (name, T), rs in rounds.items() if name == "attention" and (name, T) not in failed}
    ratios = {key: _median_ratio(rs, attention.get(key[1])) for key, rs in rounds.items() if key not in failed}
    print(
        f"| {'layer':<10} | {'T':>6} | {'tokens/s':>11} | {'ms':>9} | {'peak MiB':>8} | {'live MiB':>8} "
        f"| {'x attention':>11} |"
    )
    print(f"|{'-' * 12}|{'-' * 8}|{'-' * 13}|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 13}|")
    for r in rows:
        ratio = ratios[r["layer"], r["T"]]
        print(
            f"| {r['layer']:<10} | {r['T']:>6} | {r['tokens_per_s']:>11,.0f} | {r['seconds'] * 1e3:>9.1f} "
            f"| {r['peak_mib']:>8.1f} | {r['live_mib']:>8.1f} | {ratio:>11} |"
        )
    for (name, T), why in failed.items():
        print(f"| {name:<10} | {T:>6} | failed: {why} |")
    for name in args.layers:
        per = {T: rs for (layer, T), rs in rounds.items() if layer == name and (layer, T) not in failed}
        if not per:
            continue
        ref = 4096 if 4096 in per else min(per)
        for T in sorted(t for t in per if t > ref):
            cost = 1 / _speed_ratio(per[T], per[ref])  # (per token: the same batch at both lengths)
            print(f"{name}: cost per token at T={T} is {cost:.2f}x that at T={ref}")
    return 1 if failed else 0
