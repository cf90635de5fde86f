"""What every entry point shares: the config folder and its resolvers (registered on import, so
anything that composes ``conf/`` imports this module first), and how a command ends on a config error
(`config_errors_end_the_command`: one line naming the key to fix, `ttt_mm.tasks.config_errors`) or
on Ctrl-C."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError, MissingMandatoryValue

from ttt_mm.data.index import IndexCacheError, IndexInterrupted
from ttt_mm.processes.termination import forget_termination, terminated
from ttt_mm.tasks.config_errors import ConfigError, config_error_message, interpolation_message
from ttt_mm.tasks.job_logs import to_log_file
from ttt_mm.tasks.run_folders import config_subdir_of, forget_refused_run, results_dir, run_dir_of

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that says what it left behind: ``Interrupted("nothing was written")`` ends a command
    with ``interrupted: nothing was written`` (`config_errors_end_the_command`); ``before_it_began``:
    while it listed its data, so that its run folder holds nothing of it."""

    def __init__(self, message: str, before_it_began: bool = False) -> None:
        super().__init__(message)
        self.before_it_began = before_it_began


class SweepJobError(CompactHydraException):
    """A config mistake in one job of a Hydra sweep (``-m``): the job fails, the sweep goes on, and
    its end names the job and this message (`ttt_mm.tasks.sweep_report`; exit status 1)."""


def in_a_sweep() -> bool:
    """Whether this is one job of a Hydra sweep (``-m``): its jobs run one after another in this process."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


CONFIG_ERRORS = (ConfigError, IndexCacheError, InstantiationException, MissingMandatoryValue, InterpolationKeyError)
"""What a mistake in the settings raises: it ends a command with one line (`config_errors_end_the_command`)."""


@contextmanager
def config_errors_end_the_command(interrupted: str | None = None, cfg: DictConfig | None = None) -> Iterator[None]:
    """A config mistake ends a command with one ``error:`` line and exit status 2, and Ctrl-C with one
    line and status 130 (a SIGTERM taken as Ctrl-C, `sigterm_as_ctrl_c`: 143), not a traceback (a run
    folder left holding only Hydra's record and the log goes, `forget_refused_run`: after a mistake, or
    a Ctrl-C while the data was indexed, ``before_it_began``). In a sweep the mistake ends only its
    job. Anything else goes on up as it is, its traceback also written to the job's log file (Hydra
    prints it only).
    ``cfg``: the command's config, so that a constructor's error names the key that it refused."""
    settings = None if cfg is None else OmegaConf.to_container(cfg, resolve=False)  # (as given: the run resolves it)
    try:
        yield
    except KeyboardInterrupt as err:  # ``interrupted``: what a command stopped anywhere else left behind
        left = str(err) if isinstance(err, Interrupted) else interrupted
        by_sigterm = terminated()
        forget_termination()
        how = "terminated (SIGTERM)" if by_sigterm else "interrupted"
        line = f"{how}: {left}" if left else how
        print(line, file=sys.stderr)
        to_log_file(line, logging.WARNING)
        began = not isinstance(err, IndexInterrupted) and not getattr(err, "before_it_began", False)
        # stopped while listing its data: no empty run folder
        if not began and process_rank() == 0 and not in_a_sweep():
            forget_refused_run()
        sys.exit(143 if by_sigterm else 130)
    except CONFIG_ERRORS as err:
        if isinstance(err, MissingMandatoryValue):
            key = getattr(err, "full_key", None) or str(err)
            message = f"{key} must be set, e.g. {key}=/path/to/your/data"
        elif isinstance(err, InterpolationKeyError):
            message = interpolation_message(err, settings)
        else:  # (the index cache is a setting)
            message = config_error_message(err, settings)
        rank = process_rank()  # the processes of a data-parallel run: the first says it plainly, the
        if rank == 0:  # others with their rank (a mistake only one meets, its data mount say, is not lost)
            print("error: " + message, file=sys.stderr)
            to_log_file("error: " + message, logging.ERROR)
        else:
            print(f"[rank {rank}] error: {message}", file=sys.stderr)
        if in_a_sweep():  # (its job folders stay: the sweep's report lists each job's error)
            raise SweepJobError(message) from None
        forget_refused_run()  # (every rank: one whose folder it stamped itself, torchrun's without hydra.run.dir)
        sys.exit(2)
    except Exception:
        to_log_file("the command failed:\n" + traceback.format_exc().rstrip(), logging.ERROR)
        raise


def process_rank() -> int:
    """This process's rank in a data-parallel run, as Lightning set it; 0 where Lightning is not loaded
    (embed and the probe run in one process and do not import it: it took 2-3 s of their start)."""
    module = sys.modules.get("lightning.fabric.utilities.rank_zero")
    return getattr(module.rank_zero_only, "rank", 0) if module is not None else 0


def _eq(a, b) -> bool:
    """``${eq:${model.backbone.variant},mamba}``: one config value switching another on."""
    return a == b


OmegaConf.register_new_resolver("run_dir", run_dir_of, replace=True)
OmegaConf.register_new_resolver("config_subdir", config_subdir_of, replace=True)
OmegaConf.register_new_resolver("eq", _eq, replace=True)
OmegaConf.register_new_resolver("results_dir", results_dir, replace=True)
OmegaConf.register_new_resolver("conf_dir", lambda: CONF_DIR, replace=True)  # (--help names it whole: run anywhere)
