"""Whether a process still runs, by its pid: what tells the notes and marks of a run that is over from
those of one still going (`ttt_mm.data.reading_notes`, `ttt_mm.messages.once`)."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile


def running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (another user's process)
        return True
    return True


def remove_left_by_gone(prefix: str) -> None:
    """Remove the files ``<prefix>-<pid>-...`` in this machine's temporary folder whose process ``pid``
    is gone (runs that are over, killed before they could remove their own)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{prefix}-*-*")):
        pid = os.path.basename(path).removeprefix(f"{prefix}-").partition("-")[0]
        if pid.isdigit() and not running(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(path)
