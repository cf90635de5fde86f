"""Compiles the C files beside it into one library with the system C compiler the first time it is
needed, and loads it with ctypes.

The library is cached per machine (``$TTT_MM_CACHE``, default ``$XDG_CACHE_HOME/ttt-mm/kernels``, i.e.
``~/.cache/ttt-mm/kernels``, beside the dataset index) under a name that
hashes the sources, the compiler, the flags and the CPU's features, since ``-march=native`` code may not
run on another CPU. It is written under a temporary name and renamed, so processes starting together
(DDP) never load a half-written file. Any failure (no compiler, a build error, another platform) is
logged once and the callers keep their PyTorch ops; ``TTT_MM_NATIVE=0`` turns the library off.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ttt_mm.storage.cache import user_cache_dir

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = sorted(HERE.glob("*.c"))  # ttt.c, lact.c; both include common.h
HEADERS = sorted(HERE.glob("*.h"))
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fPIC", "-shared")
# The loops split their rows across PyTorch's threads. Linked after torch, the library shares torch's
# OpenMP runtime (same soname, so the loader reuses it) and its thread pool; where -fopenmp fails
# (a compiler without it), the plain build runs every loop on the calling thread.
OPENMP = ("-fopenmp",)
# A new build deletes the builds not loaded for this long (each change of source, compiler or flags
# leaves one); loading a build refreshes its time, so machines sharing the cache keep theirs.
STALE_DAYS = 30

_P, _I, _D, _N = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
SIGNATURES = {  # every function ends with the number of threads to use
    "gelu_tanh": [_P, _I, _I, _I, _P, _P, _N],  # x, outer, inner, stride, y, slope
    "gelu_tanh_curvature": [_P, _I, _I, _I, _P, _N],  # x, outer, inner, stride, y
    # z, w_sq, offset, groups, rows, width, eps, g, then (or NULL) zhat, means, rstds, dys
    "ln_l2_grad": [_P, _P, _P, _I, _I, _I, _D, _P, _P, _P, _P, _P, _N],
    # s, zhat, g, r, a, w_sq, groups, rows, width, de, dz, dz_stride
    "ln_l2_grad_backward": [_P, _P, _P, _P, _P, _P, _I, _I, _I, _P, _P, _I, _N],
    # qkv, scale, offset, B, T, H, D, eps, y, norms
    "lact_fast_inputs": [_P, _P, _P, _I, _I, _I, _I, _D, _P, _P, _N],
    # qkv, scale, offset, norms, gq, gk, gv, B, T, H, D, eps, d_qkv, partial
    "lact_fast_inputs_backward": [_P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _D, _P, _P, _N],
    # o, w, gate, B, T, H, D, eps, y, rms
    "lact_gated_rms_norm": [_P, _P, _P, _I, _I, _I, _I, _D, _P, _P, _N],
    # o, w, gate, rms, dy, B, T, H, D, d_o, d_gate, partial
    "lact_gated_rms_norm_backward": [_P, _P, _P, _P, _P, _I, _I, _I, _I, _P, _P, _P, _N],
    "lact_swiglu": [_P, _I, _I, _I, _P, _N],  # ab, groups, rows, M, h
    "lact_swiglu_step": [_P, _P, _P, _I, _I, _I, _I, _P, _P, _N],  # ab, dh, lr, lr_stride, groups, rows, M, P, h
    "lact_swiglu_backward": [_P, _P, _I, _I, _I, _P, _P, _N],  # gu, d_hidden, groups, rows, M, dQ, h
    # ab, dh, dP, dh_h, lr, lr_stride, groups, rows, M, P, dA, d_dh, dlr, dlr_stride
    "lact_swiglu_step_backward": [_P, _P, _P, _P, _P, _I, _I, _I, _I, _P, _P, _P, _P, _I, _N],
}


def _cpu_features() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    if os.environ.get("TTT_MM_CACHE"):
        return Path(os.environ["TTT_MM_CACHE"])
    return user_cache_dir("kernels")


def _compile(cc: str, flags: tuple[str, ...]) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(b"\0".join(s.encode() for s in (cc, version, *flags, platform.machine(), _cpu_features())))
    for path in (*SOURCES, *HEADERS):
        key.update(path.read_bytes())
    target = _cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        with contextlib.suppress(OSError):  # a read-only cache still loads
            os.utime(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, *map(str, SOURCES), "-o", tmp, "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _prune(target)
    return target


def _prune(keep: Path) -> None:
    """Deletes the builds beside ``keep`` not loaded for ``STALE_DAYS``."""
    cutoff = time.time() - STALE_DAYS * 86400
    for old in keep.parent.glob("kernels-*.so"):
        with contextlib.suppress(OSError):  # another process may be pruning too
            if old != keep and old.stat().st_mtime < cutoff:
                old.unlink()


def _load(cc: str) -> ctypes.CDLL:
    """The OpenMP build, else the plain one."""
    try:
        return ctypes.CDLL(str(_compile(cc, FLAGS + OPENMP)))
    except (OSError, RuntimeError) as err:
        log.info("ttt_mm: fused CPU kernels built without OpenMP (one thread each): %s", err)
        return ctypes.CDLL(str(_compile(cc, FLAGS)))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (logged once) where they cannot be built or are turned off."""
    if os.environ.get("TTT_MM_NATIVE", "1") == "0":
        return None
    cc = os.environ.get("CC", "cc")
    try:
        if shutil.which(cc) is None:
            raise RuntimeError(f"no C compiler ({cc!r} not found)")
        lib = _load(cc)
        for name, args in SIGNATURES.items():
            for suffix in ("f32", "f64"):
                getattr(lib, f"{name}_{suffix}").argtypes = args
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        log.warning("ttt_mm: fused CPU kernels unavailable, using PyTorch ops (slower on CPU): %s", err)
        return None
    return lib
