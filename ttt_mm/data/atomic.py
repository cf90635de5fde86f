"""Files written whole or not at all: every output goes to a hidden temporary name beside its final
one and is renamed into place (atomic within a folder), so a killed or failed run never leaves a
half-written file under a name that a reader trusts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_path(final: str | os.PathLike) -> Path:
    """A hidden, per-process name beside ``final``; it ends in ``.tmp``, never in the final suffix."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


@contextmanager
def replaced(path: str | os.PathLike) -> Iterator[Path]:
    """Yields the temporary path to write; it replaces ``path`` when the block ends, and is removed
    instead if the block raises."""
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with replaced(path) as tmp:
        tmp.write_text(text)
