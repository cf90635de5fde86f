"""Probe tasks that fail the way decoders do, for the index's worker processes (imported there by
name, so they live in a module of their own rather than in a test file)."""

from __future__ import annotations

import errno
import os
import signal
import time

from ttt_mm.data.decode import guard, native
from ttt_mm.data.index import VERSION, describe


def abort_on_boom(path: str) -> dict:
    """`describe`, except that a file named ``*boom*`` aborts the process, as decord's ``std::bad_alloc`` does."""
    if "boom" in os.path.basename(path):
        os.write(2, b"terminate called after throwing an instance of 'std::bad_alloc'\n")
        os.abort()
    return describe(path)


def abort_in_a_decoder_call(path: str) -> dict:
    """`describe`, except that a file named ``*inside*`` aborts the process inside a decoder call, after
    its last words on stderr (as decord's C++ ``terminate called ...``)."""
    if "inside" in os.path.basename(path):

        def abort():
            os.write(2, b"terminate called after throwing an instance of 'dmlc::Error'\n")
            os.abort()

        native.call(path, "decoding frame 0", abort, 30.0)
    return describe(path)


def abort_on_growing(path: str) -> dict:
    """`describe`, except that a file named ``*growing*`` grows (a copy still being written) and then the
    decoder aborts."""
    if "growing" in os.path.basename(path):
        with open(path, "ab") as f:
            f.write(bytes(1000))
        os.abort()
    return describe(path)


def killed_or_failed(path: str) -> dict:
    """`describe`, except that the worker is killed from outside on ``*killed*`` (as the kernel's
    out-of-memory killer does) and runs out of file handles on ``*handles*`` (a process's error)."""
    name = os.path.basename(path)
    if "killed" in name:
        os.kill(os.getpid(), signal.SIGKILL)
    if "handles" in name:
        raise OSError(errno.EMFILE, "Too many open files")
    return describe(path)


def hang_on_slow(path: str) -> dict:
    """`describe`, except that a file named ``*slow*`` never returns."""
    if "slow" in os.path.basename(path):
        time.sleep(3600)
    return describe(path)


def stuck_on_stuck(path: str) -> dict:
    """`describe`, except that a file named ``*stuck*`` leaves a decoder call that never returned behind
    (as the watchdog does when it gives up on one), so its worker answers and then retires."""
    if "stuck" in os.path.basename(path):
        guard._hung.append(f"decoding {path}")
        return {"path": path, "error": "decoding did not return"}
    time.sleep(0.05)  # the parent would hand the retiring worker the next file meanwhile
    return describe(path)


def interrupted_after(count: int):
    """An `IsolatedPool.map` that answers the first ``count`` paths in this process, then is
    interrupted as by Ctrl-C."""

    def map_then_interrupt(self, paths):
        for path in list(paths)[:count]:
            yield path, self.task(path)
        raise KeyboardInterrupt

    return map_then_interrupt


def denied_on_locked(path: str) -> dict:
    """`describe`, except that a file named ``*locked*`` cannot be opened, as without read permission."""
    if "locked" in os.path.basename(path):
        st = os.stat(path)
        record = {"path": path, "version": VERSION, "verified": True, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
        return record | {"error": "cannot open: Permission denied"}
    return describe(path)
