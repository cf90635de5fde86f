"""Environment variables, and the working directory, set for a while: what the processes started
meanwhile inherit (DDP's processes, multiprocessing's forkserver, Hydra's error handling)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Sets ``values`` in ``os.environ``; on leaving, each of those keys gets back the value it had, or
    none. Other keys are left as they are then (Lightning sets some while it fits)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def working_directory(path: str | os.PathLike) -> Iterator[None]:
    """Works in ``path``, and back in the directory before on leaving (``contextlib.chdir`` is
    Python 3.11's). The working directory is the whole process's: keep the span short."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
