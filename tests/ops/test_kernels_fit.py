"""The Triton kernels compiled for Hopper (sm_90) on this machine, no GPU needed: the largest shapes that
`fused.supported` admits fit an H100's shared memory, with the options the scan launches them with.

A kernel over that limit fails only when first launched on a GPU (Triton's ``OutOfResources``), in the
middle of someone's training run; this is the nearest check the CPU can run. Compiling takes Triton's
whole GPU pipeline (ptxas included), in a fresh interpreter: under ``TRITON_INTERPRET=1``, which the
tests set without a GPU, kernels are interpreted, not compiled.
"""

import inspect
import json
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from ttt_mm.ops.ttt import fused

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

pytestmark = pytest.mark.slow

H100_SHARED_BYTES = 227 * 1024  # the most one program may use (opt-in), also an H200's
# in the inputs' dtype; the rest float32, as the layers pass them (their step sizes ``lr`` included)
TOKEN_ARGS = {"q", "k", "v", "out", "dout", "dq", "dk", "dv"}


def shared_bytes(kernel, dtype: torch.dtype, options: dict, **extra) -> int:
    """Shared memory of ``kernel`` compiled for sm_90 with ``options`` (as `fused.launch_options` gives them)."""
    options = {**options, **extra}
    launch = {k: options.pop(k) for k in ("num_warps", "num_stages") if k in options}
    pointer = {torch.bfloat16: "*bf16", torch.float32: "*fp32"}[dtype]
    signature, aligned = {}, {}
    for i, name in enumerate(inspect.signature(kernel.fn).parameters):
        if name in options:
            signature[name] = "constexpr"
        elif name in ("M", "n_ckpt"):
            signature[name] = "i32"
        else:
            signature[name] = pointer if name in TOKEN_ARGS else "*fp32"
            aligned[(i,)] = [["tt.divisibility", 16]]  # as a launch specialises PyTorch's allocations
    source = ASTSource(fn=kernel, signature=signature, constexprs=options, attrs=aligned)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=launch).metadata.shared


# (kernels, inputs' dtype, head dim, MLP width, mini-batch size, training): the largest admitted shape of
# each core, in each precision its kernels compile to (float32 inputs take three-pass TF32, as the training
# of a TTT-MLP over `fused.MLP_SINGLE_PASS_MAX_F` does)
NARROW, WIDE = fused.MLP_SINGLE_PASS_MAX_F, fused.MLP_MAX_F
CASES = [
    ("linear", torch.bfloat16, fused.LINEAR_MAX_F, None, fused.MAX_K, True),
    ("linear", torch.float32, fused.LINEAR_MAX_F, None, fused.MAX_K, True),
    ("mlp", torch.bfloat16, NARROW, 4 * NARROW, fused.MLP_MAX_KF // NARROW, True),
    ("mlp", torch.float32, NARROW, 4 * NARROW, fused.MLP_MAX_KF // NARROW, True),
    ("mlp", torch.bfloat16, WIDE, 4 * WIDE, fused.MLP_MAX_KF // WIDE, True),
    ("mlp", torch.float32, WIDE, 4 * WIDE, fused.MLP_MAX_KF // WIDE, True),
    ("mlp", torch.bfloat16, WIDE, 4 * WIDE, fused.MLP_MAX_KF // WIDE, False),  # inference: a single-pass forward
    ("mlp", torch.float32, WIDE, 4 * WIDE, fused.MLP_MAX_KF // WIDE, False),
]


def measure(core: str, dtype: torch.dtype, F: int, hidden: int | None, K: int, training: bool) -> dict[str, int]:
    """Shared bytes of the kernels of one case, launched as the scan would launch them on a GPU."""
    options = fused.launch_options(dtype, True, F, K, hidden, training)
    fwd, bwd = (fused._mlp_fwd, fused._mlp_bwd) if core == "mlp" else (fused._linear_fwd, fused._linear_bwd)
    one_pass = fused.MLP_ONE_PASS_NUM_STAGES if core == "mlp" else fused.LINEAR_ONE_PASS_NUM_STAGES
    used = {
        "forward": shared_bytes(fwd, dtype, options, SAVE=training, READOUT=True, SPANS=False, num_stages=one_pass),
        "recurrence": shared_bytes(
            fwd, dtype, options, SAVE=True, READOUT=False, SPANS=False, num_stages=fused.SPANS_NUM_STAGES
        ),
        "spans": shared_bytes(
            fwd, dtype, options, SAVE=False, READOUT=True, SPANS=True, num_stages=fused.SPANS_NUM_STAGES
        ),
    }
    if training:
        used["backward"] = shared_bytes(bwd, dtype, fused.backward_options(options))
    return used


@pytest.fixture(scope="module")
def compiled() -> list[dict[str, int]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.parametrize(("case"), range(len(CASES)), ids=["-".join(map(str, c)) for c in CASES])
def test_largest_admitted_kernels_fit_in_shared_memory(compiled, case):
    core, dtype, F, hidden, K, training = CASES[case]
    assert fused.supported(torch.zeros(1, 1, K, F, dtype=dtype), K, hidden)
    assert K == fused.MAX_K or not fused.supported(torch.zeros(1, 1, K, F, dtype=dtype), 2 * K, hidden)
    used = compiled[case]
    assert len(used) == 3 + training
    assert all(0 < n <= H100_SHARED_BYTES for n in used.values()), used


if __name__ == "__main__":  # the compiles take minutes of one core each; the test process only waits
    with ProcessPoolExecutor(max(1, min(len(CASES), os.cpu_count() or 1))) as pool:
        print(json.dumps(list(pool.map(measure, *zip(*CASES)))))
