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

import atexit
import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ttt_mm.storage.atomic import flush_to_disk
from ttt_mm.storage.cache import user_cache_dir

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = sorted(HERE.glob("*.c"))  # ttt.c, lact.c; both include common.h
HEADERS = sorted(HERE.glob("*.h"))
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fPIC")
# Compiled with -ffast-math, linked without it: linked with it, GCC (before 13) adds crtfastmath.o, whose
# constructor turns on flush-to-zero for the whole process when the library loads, so that every later
# CPU computation (PyTorch's, NumPy's, Python's own) would round numbers below 2.2e-308 to zero.
LINK = ("-shared",)
# The loops split their rows across PyTorch's threads. Linked after torch, the library shares torch's
# OpenMP runtime (same soname, so the loader reuses it) and its thread pool; where -fopenmp fails
# (a compiler without it), the plain build runs every loop on the calling thread.
OPENMP = ("-fopenmp",)
# A new build deletes the builds not loaded for this long (each change of source, compiler or flags
# leaves one); loading a build refreshes its time, so machines sharing the cache keep theirs.
STALE_DAYS = 30
BUILDING = ".kernels-building-"
"""Folder prefix of a build in progress (its objects and library), removed after; one that a killed
compile left goes after a day."""
COMPILE_TIMEOUT_S = 600.0
OFF = ("0", "false", "off", "no")
"""Values of ``TTT_MM_NATIVE`` that turn the library off."""

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


def _compile(cc: str, extra: tuple[str, ...] = ()) -> tuple[Path, bool]:
    """The library built with the compiler ``cc`` (a command: ``ccache gcc`` too) and ``extra`` flags,
    and whether it was found in the cache rather than built now."""
    command = shlex.split(cc)
    version = _run([*command, "--version"], cc).stdout
    parts = (cc, version, *FLAGS, *LINK, *extra, platform.machine(), _cpu_features())
    key = hashlib.sha256(b"\0".join(s.encode() for s in parts))
    for path in (*SOURCES, *HEADERS):
        key.update(path.read_bytes())
    target = _cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        with contextlib.suppress(OSError):  # a read-only cache still loads
            os.utime(target)
        return target, True
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=BUILDING, dir=target.parent))
    except OSError as err:  # (a cache that cannot be written: built for this process alone, in a temporary folder)
        log.info("ttt_mm: the kernel cache %s cannot be written (%s): building for this process", target.parent, err)
        private = Path(tempfile.mkdtemp(prefix="ttt-mm-kernels-"))
        atexit.register(shutil.rmtree, private, True)
        target, work = private / target.name, Path(tempfile.mkdtemp(prefix=BUILDING, dir=private))
    try:
        objects = [work / f"{source.stem}.o" for source in SOURCES]
        for source, obj in zip(SOURCES, objects, strict=True):
            _run([*command, *FLAGS, *extra, "-c", str(source), "-o", str(obj)], cc)
        built = work / target.name
        _run([*command, *LINK, *extra, *map(str, objects), "-o", str(built), "-lm"], cc)
        flush_to_disk(built)  # (on disk before its name is: a power cut must not leave a damaged build there)
        os.replace(built, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _prune(target)
    return target, False


def _run(args: list[str], cc: str) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=COMPILE_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{cc} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done


def _prune(keep: Path) -> None:
    """Deletes the builds beside ``keep`` not loaded for ``STALE_DAYS``, and what killed builds left."""
    now = time.time()
    for old in keep.parent.glob("kernels-*.so"):
        with contextlib.suppress(OSError):  # another process may be pruning too
            if old != keep and old.stat().st_mtime < now - STALE_DAYS * 86400:
                old.unlink()
    for left in keep.parent.glob(f"{BUILDING}*"):
        with contextlib.suppress(OSError):
            if left.stat().st_mtime < now - 86400:
                shutil.rmtree(left, ignore_errors=True)


def _opened(cc: str, extra: tuple[str, ...]) -> ctypes.CDLL:
    """The build loaded; one found in the cache that does not load (damaged) is built again, once (one
    built now that does not load lacks a library, libomp say: its error is raised)."""
    path, cached = _compile(cc, extra)
    try:
        return ctypes.CDLL(str(path))
    except OSError:
        if not cached:
            raise
        path.unlink(missing_ok=True)
        return ctypes.CDLL(str(_compile(cc, extra)[0]))


def _load(cc: str) -> ctypes.CDLL:
    """The OpenMP build, else the plain one."""
    try:
        return _opened(cc, OPENMP)
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        log.info("ttt_mm: fused CPU kernels built without OpenMP (one thread each): %s", err)
        return _opened(cc, ())


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (logged once) where they cannot be built or are turned off."""
    if os.environ.get("TTT_MM_NATIVE", "1").strip().lower() in OFF:
        return None
    cc = os.environ.get("CC", "cc")
    try:
        if not (command := shlex.split(cc)) or shutil.which(command[0]) is None:
            raise RuntimeError(f"no C compiler ({cc!r} not found)")
        lib = _load(cc)
        for name, args in SIGNATURES.items():
            for suffix in ("f32", "f64"):
                getattr(lib, f"{name}_{suffix}").argtypes = args
    except (OSError, RuntimeError, ValueError, AttributeError, subprocess.SubprocessError) as err:
        log.warning("ttt_mm: fused CPU kernels unavailable, using PyTorch ops (slower on CPU): %s", err)
        return None
    return lib
