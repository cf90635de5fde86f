"""Resident memory of this process, as the CPU benchmarks measure it.

``VmRSS`` (now) and ``VmHWM`` (peak) from ``/proc/self/status``, not ``ru_maxrss``: Linux carries
that over ``exec`` from the parent, so a benchmark child started by a big parent would report the
parent's peak. ``VmHWM`` belongs to the process's own address space.
"""

from __future__ import annotations


def resident_mib(field: str = "VmRSS") -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak) of this process, in MiB."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    return kib / 1024
