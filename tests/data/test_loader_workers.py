"""Loader workers leave SIGTERM to their reader, and never keep it from exiting."""

from __future__ import annotations

import subprocess
import sys
import textwrap

LEFT_RUNNING = textwrap.dedent(
    """
    import torch
    from torch.utils.data import DataLoader

    from ttt_mm.data.loader_workers import worker_options

    loader = DataLoader(list(range(64)), batch_size=2, num_workers=2, **worker_options(2))
    batches = iter(loader)
    next(batches)
    print("read", flush=True)
    KEPT = batches  # (never shut down: its workers still run when Python exits)
    """
)


def test_a_loader_left_running_does_not_keep_python_from_exiting():
    """Its workers ignore SIGTERM, which multiprocessing's exit sends them before it waits for them:
    the process waited for good (a test run never ended)."""
    done = subprocess.run([sys.executable, "-c", LEFT_RUNNING], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "read\n", done.stderr
