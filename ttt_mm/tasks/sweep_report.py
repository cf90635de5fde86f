"""What a sweep (``-m``) did, said once at its end: Hydra's basic sweeper runs every job, then raises
only the first failure, so a later failed job was named only in the middle of the output; and a
sweep stopped by Ctrl-C did not say which jobs never ran. Registered in ``conf/hydra`` as a Hydra
callback. A job's config error (`SweepJobError`) is said once in the job and listed at the sweep's
end, not raised again by Hydra with a hint about stack traces; where a job raised anything else,
Hydra shows it (a traceback) and the lines follow when the process exits."""

from __future__ import annotations

import atexit
import math
import sys
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ttt_mm.tasks.common import SweepJobError


def sweep_size(task_overrides: list[str]) -> int | None:
    """How many jobs the basic sweeper makes of these command-line overrides (None: not known here,
    e.g. a glob over a config group's options)."""
    try:
        overrides = OverridesParser.create().parse_overrides(task_overrides)
        return math.prod(len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in overrides)
    except Exception:  # (anything the parser cannot count alone)
        return None


class SweepReport(Callback):
    """Collects each job's outcome; at exit prints the failed jobs, and the job a Ctrl-C stopped."""

    def __init__(self) -> None:
        self.sweeping = False  # (Hydra calls the job hooks in a single run too: they do nothing there)
        self.total: int | None = None
        self.started = 0
        self.failed: list[tuple[int, str, str]] = []  # (job number, its overrides, the error)
        self.running: tuple[int, str] | None = None
        self.reported = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.begin(config)
        atexit.register(self.report)

    def begin(self, config: DictConfig) -> None:
        """A sweep starts: its jobs are counted from the command line."""
        self.sweeping = True
        if not config.hydra.sweeper.get("params"):  # (params in a config also make jobs: not counted here)
            self.total = sweep_size(list(config.hydra.overrides.task))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweeping:
            self.running = (int(config.hydra.job.num), " ".join(config.hydra.overrides.task) or "(no overrides)")
            self.started += 1

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.running is None:
            return
        num, overrides = self.running
        self.running = None
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # (reading .return_value would raise it)
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self.failed.append((num, overrides, first))
            if isinstance(error, SweepJobError):  # said in the job already: Hydra would say it again at the end
                job_return.status, job_return._return_value = JobStatus.COMPLETED, None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Every job ran and none raised past its own error line (`SweepJobError`): the failed ones are
        listed now, and the sweep exits 1 (Hydra's status for a failed job)."""
        if self.failed:
            self.report()
            raise SystemExit(1)

    def lines(self) -> list[str]:
        of = f" of {self.total}" if self.total else ""
        out = []
        if self.failed:
            out.append(f"sweep: {len(self.failed)} job(s){of} failed:")
            out += [f"  #{num} {overrides}: {error}" for num, overrides, error in self.failed]
        if self.running is not None:
            num, overrides = self.running
            out.append(f"sweep: stopped in job #{num} ({overrides})")
        if self.total and self.started < self.total:  # stopped in a job, or between two
            first, last = self.started, self.total - 1
            out.append(
                f"sweep: job #{first} did not run" if first == last else f"sweep: jobs #{first}-#{last} did not run"
            )
        return out

    def report(self) -> None:
        """Says `lines` once (at the sweep's end, else at exit)."""
        if (lines := self.lines()) and not self.reported:
            print("\n".join(lines), file=sys.stderr, flush=True)
        self.reported = True
