"""Whether a process still runs, by its pid: what tells the notes and marks of a run that is over from
those of one still going (`ttt_mm.data.reading_notes`, `ttt_mm.messages.once`)."""

from __future__ import annotations

import os


def running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (another user's process)
        return True
    return True
