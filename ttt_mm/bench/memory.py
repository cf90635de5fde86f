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


def reset_peak() -> bool:
    """Start ``VmHWM`` again from the resident set now (Linux >= 4.0: ``clear_refs`` 5), so that a
    peak read later belongs to what ran since, not to an earlier warm-up. False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True
