"""Bad files found so far, shared by every DataLoader worker through one append-only file.

Each line is ``<path>\\t<reason>``. A file is logged (one WARNING) only when it is first added,
whichever worker finds it: additions take an exclusive lock and re-read the file first. A run
that starts with an existing skip list never opens those files again.
"""

from __future__ import annotations

import fcntl
import logging
import os

log = logging.getLogger("ttt_mm.data")


class SkipList:
    """Paths to skip, with reasons; kept in memory and, when ``path`` is set, in a TSV file."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reasons: dict[str, str] = {}
        self._mtime: int | None = None
        self._refresh()

    def _refresh(self) -> None:
        if self.path is None:
            return
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            self._mtime = mtime
            with open(self.path) as f:
                self._parse(f.read())

    def _parse(self, text: str) -> None:
        for line in text.splitlines():
            name, _, reason = line.partition("\t")
            if name:
                self.reasons.setdefault(name, reason)

    def __contains__(self, name: str) -> bool:
        self._refresh()
        return name in self.reasons

    def __len__(self) -> int:
        return len(self.reasons)

    def add(self, name: str, reason: str) -> bool:
        """Record a bad file; returns False (and logs nothing) if it was already known."""
        reason = " ".join(reason.split())  # one line, no tabs
        if name in self:
            return False
        if self.path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "a+") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    f.seek(0)
                    self._parse(f.read())
                    if name in self.reasons:
                        return False
                    f.write(f"{name}\t{reason}\n")
                    f.flush()
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        self.reasons[name] = reason
        where = f" (added to {self.path})" if self.path else ""
        log.warning("skipping %s: %s%s", name, reason, where)
        return True
