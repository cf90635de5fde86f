"""Readers of the keys several commands share: lists of names and extensions, an ``input`` path, counts (``max_files``,
``threads``), durations, and the ``output`` folder (one per job in a sweep); a value that cannot work is a
`ConfigError` naming its key."""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import ListConfig

from ttt_mm.data.sources import MEDIA_EXTENSIONS
from ttt_mm.messages import why_no_folder
from ttt_mm.tasks.common import ConfigError, in_a_sweep
from ttt_mm.tasks.run_folders import path_given


def names_of(value) -> list[str] | None:
    """A key that lists names (``names``, ``classes``, ``extensions``): a list, or one name given as a
    plain string (``names=mine``), which would otherwise be read one character at a time; None if unset."""
    if value is None:
        return None
    return [str(value)] if isinstance(value, (str, int, float)) else [str(v) for v in value]


def extensions_of(value) -> tuple[str, ...]:
    """A command's ``extensions`` key as a tuple (see `names_of`); none means every audio and video extension."""
    return tuple(e for e in names_of(value) or () if e) or MEDIA_EXTENSIONS


def positive_count(value, key: str, null: str = "all") -> int | None:
    """A count key (``max_files``): None, or a whole number >= 1; anything else is a config error.
    ``null`` says what None means, for the message."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a whole number >= 1 (or null for {null}); got {value!r}")
    return value


DEFAULT_THREADS = torch.get_num_threads()  # PyTorch's choice (one per core, or OMP_NUM_THREADS)


def set_threads(value, key: str) -> None:
    """Sets torch's CPU threads to a threads key's count, or where it is null back to torch's default:
    a sweep's jobs share one process, and a job without the key would run with the last one's."""
    torch.set_num_threads(positive_count(value, key, "torch's default") or DEFAULT_THREADS)


def positive_seconds(value, key: str, null: str) -> float | None:
    """A duration key shipped as null (``window_seconds``): None, or a finite number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{key} must be a number of seconds > 0 (or null for {null}); got {value!r}")
    return float(value)


def input_path(value, key: str = "input") -> str:
    """A key that takes one file, folder or manifest (``input``), as a path. A list (``input=[a,b]``)
    and a pattern no shell expanded (``input=/x/*.ogg``: no such file) are config errors that say how to
    give several files; they read as a path that does not exist."""
    if isinstance(value, (list, tuple, ListConfig)):
        raise ConfigError(
            f"{key} takes one file, folder or manifest; got a list of {len(value)}: give their folder, or list "
            "them in a CSV or JSONL manifest (a path column)"
        )
    path = str(value)
    if not os.path.lexists(path) and ("*" in path or glob.glob(path)):  # (a missing "/x [2024]" is a path)
        raise ConfigError(
            f"{key}={path}: a pattern is not expanded here: give the folder (extensions=[...] takes files by "
            "extension) or a CSV or JSONL manifest that lists them"
        )
    return path


def output_folder(path: str | Path) -> Path:
    """``path`` as a folder that exists, made if needed; a path that cannot be one is a config error."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output={folder} cannot be made a folder: {why_no_folder(folder, err)}") from None
    return folder


def sweep_job_folder(output: str | Path) -> Path:
    """``output``, or in a sweep (``-m``) ``output/<job's folder>``, named as Hydra names the job's own
    (``hydra.sweep.subdir``: its number, also where a job is run again alone into its sweep, which
    Hydra numbers 0): a sweep's jobs run one after another in one process and would otherwise each
    overwrite the results of the one before."""
    folder = Path(path_given(output, "output"))
    return folder / str(HydraConfig.get().sweep.subdir) if in_a_sweep() else folder


def results_folder(output: str | None) -> Path:
    """The folder a task writes its results to, made: ``output`` (`sweep_job_folder`), or where it is
    unset the run's own folder (Hydra's run directory, or a sweep job's)."""
    if output is not None:
        return output_folder(sweep_job_folder(output))
    if not HydraConfig.initialized():
        raise ConfigError("output must be set: output=/path/to/results")
    return output_folder(HydraConfig.get().runtime.output_dir)
