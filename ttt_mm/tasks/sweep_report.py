"""What a sweep (``-m``) did, said once at its end: how its finished runs compare (a table, and
``results.csv`` in the sweep's folder, from what each job's task returns: train's metrics); which
jobs failed, since Hydra's basic sweeper runs every job and then raises only the first failure, so a
later failed job was named only in the middle of the output; and, for a sweep stopped by Ctrl-C,
which jobs never ran. Registered in ``conf/hydra`` as a Hydra
callback. A job's config error (`SweepJobError`) is said once in the job and listed at the sweep's
end, not raised again by Hydra with a hint about stack traces; where a job raised anything else,
Hydra shows it (a traceback) and the lines follow when the process exits. A job run again into its
sweep's folder (as said for one that did not run) shows the whole sweep's table, and the sweep's jobs
still without a result; another sweep into that folder keeps its table apart. A command whose jobs
return no scores (embed: each job's files are its results) keeps no table."""

from __future__ import annotations

import atexit
import contextlib
import csv
import functools
import os
import re
import shlex
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ttt_mm.messages import first_line
from ttt_mm.storage.atomic import write_csv
from ttt_mm.storage.locks import held
from ttt_mm.tasks.command_lines import config_flags, shell_override
from ttt_mm.tasks.common import SweepJobError
from ttt_mm.tasks.overrides import as_typed, override_key, reads
from ttt_mm.tasks.run_folders import RUN_STAMP

RESULTS = "results.csv"
MULTIRUN = "multirun.yaml"
"""Hydra's record of a sweep's command, in its folder."""
FILED = ["overrides", "run_dir", "best_ckpt"]
"""The columns of ``results.csv`` after the numbers (``best_ckpt`` where the jobs train: empty for one
without a best checkpoint)."""
MIXER = "mixer"
"""The column before the numbers, where jobs say their model's mixer (`Backbone.mixer_name`; an
evaluation of several, each one's): a sweep over checkpoints names them by path alone."""
TEXT = ("job", MIXER, *FILED)
"""The columns of ``results.csv`` that hold no number."""
SHOWN = 8
"""Jobs that did not run, named each with its command; the rest are counted."""


def sweep_jobs(task_overrides: list[str]) -> list[list[str]] | None:
    """The overrides of each job the basic sweeper makes of these command-line overrides, in its order
    (None: not known here, e.g. a glob over a config group's options)."""
    try:
        overrides = OverridesParser.create().parse_overrides(task_overrides)
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        return jobs
    except Exception:  # (anything the parser cannot expand alone)
        return None


def refuse_a_folder_per_job(config: DictConfig, jobs: list[list[str]]) -> None:
    """Exit 2 with one line where the sweep's folder reads a key its jobs set apart
    (``hydra.sweep.dir=sw_${seed}`` with ``seed=1,2``): each job went to a sweep folder of its own, and
    the sweep's record and results to one for the config's own value, which no job used."""
    set_to = {}
    for job in jobs:
        for override in job:
            set_to.setdefault(override_key(override), set()).add(override)
    written = str(OmegaConf.to_container(config.hydra.sweep, resolve=False).get("dir"))  # (as typed)
    read = [key for key, values in set_to.items() if len(values) > 1 and reads(written, key)]
    if read:
        key = read[0]
        shown = re.search(r"\$\{[^{}]*?" + re.escape(key) + r"[^{}]*\}", written)
        groups = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
        name = f"${{hydra:runtime.choices.{key}}}" if key in groups else f"${{{key}}}"  # (a group: its option's name)
        print(
            f"error: hydra.sweep.dir reads {shown[0] if shown else '${' + key + '}'}, and this sweep's jobs set "
            f"{key} apart: each would make a sweep folder of its own; name the jobs' folders by it instead, with "
            f"hydra.sweep.subdir='${{hydra.job.num}}_{name}'",
            file=sys.stderr,
        )
        sys.exit(2)


RUN_LENGTH = ("trainer.max_steps", "trainer.max_epochs")
"""Keys a resume may set otherwise than the run did: how long it trains."""


def _job(overrides: list[str]) -> list[str]:
    """A job's overrides as what tells it apart: not the checkpoint a resume of it starts from, nor how
    long that trains (`RUN_LENGTH`)."""
    return sorted(o for o in overrides if override_key(o) not in ("ckpt_path", *RUN_LENGTH))


def _job_number(config: DictConfig) -> int:
    """The job's number: its folder's, where a job is run again alone into its sweep (``-m ...
    hydra.sweep.dir=<sweep> hydra.sweep.subdir=<n>``, as `SweepReport.lines` says), else Hydra's."""
    subdir = str(OmegaConf.select(config, "hydra.sweep.subdir", default="") or "")
    return int(subdir) if subdir.isdigit() else int(config.hydra.job.num)


def _shown(column: str, value: float) -> str:
    """A number of the results table: scores to 4 decimals, a throughput whole, minutes to 3 digits (to 1
    decimal, short runs all read 0.0)."""
    if column == "train tokens/s":
        return f"{value:.0f}"
    if column == "fit minutes":
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"  # (not 1.23e+03)
    return f"{value:.4f}"


def _split(overrides: str) -> list[str]:
    """A job's overrides as ``results.csv`` holds them (quoted for a shell; an older version's unquoted)."""
    try:
        return shlex.split(overrides)
    except ValueError:
        return overrides.split(" ")


def _numbers_read(row: dict) -> dict:
    """A row of ``results.csv`` as read, its numbers as numbers again (an empty cell left out)."""
    numbers = {}
    for key, value in row.items():
        if key in TEXT or not value:
            continue
        try:
            numbers[key] = float(value)
        except ValueError:
            continue
    return {k: v for k, v in row.items() if k in TEXT and (v or k != MIXER)} | numbers


def _mixer_column(rows: list[dict]) -> list[str]:
    """``[MIXER]`` where a job says its mixer, else none: the table's and ``results.csv``'s column."""
    return [MIXER] if any(row.get(MIXER) for row in rows) else []


def read_csv(path: Path) -> list[dict]:
    """The rows of an earlier ``results.csv`` (none if there is none, or it cannot be read)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def sweep_job_of(run: Path | None) -> tuple[Path, str] | None:
    """The sweep folder and job number of a run folder that a sweep's job made: a row of the
    ``results.csv`` beside it names it, or names its job as the folder is named (the sweep's folder
    moved since). None: no row does."""
    if run is None:
        return None
    for row in read_csv(run.parent / RESULTS):
        with contextlib.suppress(OSError, ValueError):
            if (row.get("run_dir") and Path(row["run_dir"]).resolve() == run.resolve()) or row.get("job") == run.name:
                return run.parent, str(row.get("job"))
    return None


def into_sweep_job(folder: str | os.PathLike, job: int | str) -> str:
    """``hydra.sweep.dir=<folder> hydra.sweep.subdir=<job>``: what runs a command as job ``job`` of the
    sweep in ``folder`` (its results join the sweep's), the folder absolute so that it runs from anywhere."""
    return (
        f"{shell_override('hydra.sweep.dir', os.path.abspath(folder))} {shell_override('hydra.sweep.subdir', str(job))}"
    )


def _dated(path: Path) -> str:
    """When ``path`` was last written, as a run folder's name stamps it: what names a record set aside."""
    return datetime.fromtimestamp(path.stat().st_mtime).strftime(RUN_STAMP)


def this_command() -> str:
    """How this process was started: ``python train.py`` or ``python -m ttt_mm.tasks.<name>``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"


class SweepReport(Callback):
    """Collects each job's outcome; at the sweep's end (or exit) prints the results, the failed jobs, and the
    job a Ctrl-C stopped."""

    def __init__(self, keeps_table: bool = True, reruns_stopped: bool = True) -> None:
        self.keeps_table = keeps_table  # the jobs return scores for results.csv (not embed's: files)
        self.reruns_stopped = reruns_stopped  # a job Ctrl-C stopped is run again from its start (train's: resumed)
        self.sweeping = False  # (Hydra calls the job hooks in a single run too: they do nothing there)
        self.jobs: list[list[str]] | None = None  # each job's overrides, where known
        self.started = 0
        self.failed: list[tuple[int, str, str]] = []  # (job number, its overrides, the error)
        self.running: tuple[int, str] | None = None
        self.results: list[tuple[int, list[str], Mapping]] = []  # (job number, its overrides, what its run returned)
        self.folder: Path | None = None  # the sweep's folder, where the results table goes
        self.flags: list[str] = []  # what finds the sweep's configs (`config_flags`): part of each command
        self.ran: list[tuple[int, list[str]]] = []  # each started job's number and overrides
        self.refused: set[int] = set()  # jobs that ended on a config mistake, before their run began
        self.reported = False
        self.earlier: Path | None = None  # the record of an earlier sweep into this folder, set aside
        self.made_folder = True  # whether the folder is this sweep's (none was there when it started)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.begin(config)
        self.keep_earlier_record()
        atexit.register(self.report)

    def keep_earlier_record(self) -> None:
        """Hydra writes the sweep's ``multirun.yaml`` over the one there: a job run again into its sweep (a
        resume, one that did not run) would erase the record of the whole sweep's command. The earlier one
        is kept beside it, as ``multirun-<its date>.yaml``."""
        record = None if self.folder is None else self.folder / MULTIRUN
        self.made_folder = record is not None and not record.parent.exists()
        try:
            if record is not None and record.is_file():
                self.earlier = record.with_name(f"multirun-{_dated(record)}.yaml")
                os.replace(record, self.earlier)
        except OSError:  # (a folder that cannot be written: Hydra says so itself)
            self.earlier = None

    def begin(self, config: DictConfig) -> None:
        """A sweep starts: its jobs are counted from the command line."""
        self.sweeping = True
        folder = OmegaConf.select(config, "hydra.sweep.dir", throw_on_resolution_failure=False)
        self.folder = Path(folder) if folder else None  # (one left to set: Hydra's launcher says so)
        self.flags = config_flags(config.hydra)
        if not config.hydra.sweeper.get("params"):  # (params in a config also make jobs: not counted here)
            self.jobs = sweep_jobs(as_typed(config.hydra.overrides.task))
            refuse_a_folder_per_job(config, self.jobs or [])

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweeping:
            num, overrides = _job_number(config), as_typed(config.hydra.overrides.task)
            self.running = (num, " ".join(overrides) or "(no overrides)")
            self.started += 1
            self.ran.append((num, overrides))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.running is None:
            return
        num, overrides = self.running
        self.running = None
        done = job_return._return_value
        if job_return.status == JobStatus.COMPLETED and isinstance(done, Mapping) and "metrics" in done:
            self.results.append((num, as_typed(config.hydra.overrides.task), done))
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # (reading .return_value would raise it)
            self.failed.append((num, overrides, first_line(error)))
            if isinstance(error, SweepJobError):  # said in the job already: Hydra would say it again at the end
                job_return.status, job_return._return_value = JobStatus.COMPLETED, None
                self.refused.add(num)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Every job ran and none raised past its own error line (`SweepJobError`): the results and the
        failed jobs are said now, and a sweep with a failed job exits 1 (Hydra's status for one)."""
        self.report()
        if self.failed:
            raise SystemExit(1)

    @property
    def total(self) -> int | None:
        """The sweep's jobs, where known."""
        return None if self.jobs is None else len(self.jobs)

    def lines(self) -> list[str]:
        of = f" of {self.total}" if self.total else ""
        out = []
        if self.failed:
            out.append(f"sweep: {len(self.failed)} job(s){of} ended in an error:")  # (one may have written much)
            out += [f"  #{num} {overrides}: {error}" for num, overrides, error in self.failed]
        if self.running is not None:
            num, overrides = self.running
            stopped = next((job for n, job in reversed(self.ran) if n == num), None)
            again = self.reruns_stopped and stopped is not None
            out.append(
                f"sweep: stopped in job #{num} ({overrides})" + (": to run it again from its start," if again else "")
            )
            out += self.commands([(num, stopped)]) if again else []
        if self.total and 0 < self.started < self.total:  # stopped in a job, or between two (none: refused)
            first, last = self.started, self.total - 1
            which = f"job #{first} did not run" if first == last else f"jobs #{first}-#{last} did not run"
            whose = "its result joins" if first == last else "their results join"
            joins = f" ({whose} {RESULTS})" if self.keeps_table else ""
            out.append(
                f"sweep: {which}"
                + ((": to run it" if first == last else ": to run them") + joins + "," if self.jobs else "")
            )
            out += self.commands(list(enumerate(self.jobs or []))[first:])
        return out

    def commands(self, jobs: list[tuple[int, list[str]]]) -> list[str]:
        """The command that runs each of these jobs (number, overrides) into the sweep, the first `SHOWN`."""
        command = " ".join([this_command(), "-m", *self.flags])
        left = [
            f"  {command} {' '.join(map(shlex.quote, job))} {into_sweep_job(self.folder, num)}" for num, job in jobs
        ]
        return left[:SHOWN] + ([f"  ... and {len(left) - SHOWN} more"] if len(left) > SHOWN else [])

    @functools.cached_property
    def earlier_sweeps(self) -> list[list[list[str]] | None]:
        """The jobs of each earlier sweep started into this folder, oldest first, from the records of
        their commands that `keep_earlier_record` kept; None for one whose jobs are not known here (a
        sweeper's ``params``, a record that cannot be read). A job run again alone into its sweep (its
        record sets ``hydra.sweep.subdir`` to one folder's name) started no sweep of its own: left out.
        Read once, when the report first asks (the records are set aside as the sweep starts)."""
        sweeps = []
        for record in sorted(self.folder.glob("multirun-*.yaml")) if self.folder is not None else ():
            try:
                config = OmegaConf.load(record)
                hydras = as_typed(OmegaConf.select(config, "hydra.overrides.hydra", default=None))
                if any(override_key(o) == "hydra.sweep.subdir" and "${" not in o for o in hydras):
                    continue  # (a folder of its own for each job, ``${hydra.job.num}_...``: a sweep's)
                jobs = None if config.hydra.sweeper.get("params") else sweep_jobs(as_typed(config.hydra.overrides.task))
            except Exception:  # (one that cannot be read: its jobs are not known)
                jobs = None
            sweeps.append(jobs or None)
        return sweeps

    def _joins(self, jobs: list[list[str]]) -> bool:
        """Whether every job of this run is the job of that number among ``jobs`` (by its overrides, a
        resume's checkpoint and length aside): this run is jobs of that sweep run again into its folder."""
        return bool(self.ran) and all(num < len(jobs) and _job(ran) == _job(jobs[num]) for num, ran in self.ran)

    def whole_sweep(self) -> list[list[str]] | None:
        """The jobs of the sweep that this one joined (a job run again into its folder): the last sweep
        started into the folder, whose table ``results.csv`` is, where this run's jobs are its own; None
        where there is none, or its jobs are not known here."""
        sweeps = self.earlier_sweeps
        return sweeps[-1] if sweeps and sweeps[-1] and self._joins(sweeps[-1]) else None

    def another_sweeps_folder(self) -> bool:
        """Whether this sweep was started into the folder of an earlier sweep whose jobs its are not (the
        same ``output=`` for another sweep): that sweep's results are not this one's. Where its jobs are
        not known, it cannot tell: no."""
        sweeps = self.earlier_sweeps
        return bool(sweeps) and sweeps[-1] is not None and bool(self.ran) and not self._joins(sweeps[-1])

    def still_missing(self) -> list[str]:
        """After jobs of a sweep run again into its folder: the sweep's jobs that still have no result in
        ``results.csv``, each with the command that runs it. Nothing where this run's jobs are not that
        sweep's own (by their overrides, a resume's checkpoint aside), and no job `lines` says failed,
        stopped or not run."""
        whole = self.whole_sweep() if self.keeps_table else None  # (no table: no results to miss)
        if not whole:
            return []
        said = {num for num, _, _ in self.failed} | ({self.running[0]} if self.running else set())
        if self.total and self.started < self.total:  # (`lines`: this sweep's jobs that did not run)
            said |= set(range(self.started, self.total))
        done = {str(row["job"]) for row in self.rows()} | {str(num) for num in said}
        missing = [(num, job) for num, job in enumerate(whole) if str(num) not in done]
        if not missing:
            return []
        named = ", ".join(f"#{num}" for num, _ in missing[:SHOWN]) + (", ..." if len(missing) > SHOWN else "")
        which = f"job {named}" if len(missing) == 1 else f"{len(missing)} jobs ({named})"
        head = f"sweep: {which} of {len(whole)} still without a result in {RESULTS}: to run "
        return [head + ("it," if len(missing) == 1 else "them,"), *self.commands(missing)]

    @staticmethod
    def _values(done: Mapping) -> dict[str, float]:
        """A finished run's numbers: its best checkpoint's score (``best val/loss``), its last ``val/`` and
        ``test/`` metrics (an evaluation's ``eval/`` scores, a linear probe's ``probe/``), then what its
        training cost (``train tokens/s``, ``fit minutes``)."""
        best = {f"best {k}": v for k, v in (done.get("best_score") or {}).items()}
        scores = {
            k: v for k, v in sorted(done["metrics"].items()) if k.startswith(("val/", "test/", "eval/", "probe/"))
        }
        return best | scores | dict(done.get("cost") or {})

    def rows(self) -> list[dict]:
        """Every finished job of the sweep, in job order, as a row of ``results.csv``: this run's jobs and
        those an earlier run of the sweep recorded there (before a job was run again alone into it)."""
        rows = [
            {"job": num}
            | ({MIXER: done[MIXER]} if done.get(MIXER) else {})
            | self._values(done)
            | {
                "overrides": " ".join(map(shlex.quote, overrides)),  # (as a shell reads them back)
                "run_dir": done.get("run_dir") or "",
            }
            | ({"best_ckpt": done.get("best_ckpt") or ""} if "best_ckpt" in done else {})  # (training's runs)
            for num, overrides, done in self.results
        ]
        ours = {str(row["job"]) for row in rows} | self._ran_again()
        rows += [row for row in self._earlier_rows() if row.get("job") not in ours]
        return sorted(rows, key=lambda row: int(row["job"]) if str(row["job"]).isdigit() else -1)

    def _ran_again(self) -> set[str]:
        """The numbers of this run's jobs that began: an earlier row of one that failed or was stopped now
        is no longer its result (its folder holds this run's), so it goes; one refused by a config
        mistake left the earlier run's folder as it was, and its row stays."""
        return {str(num) for num, _ in self.ran if num not in self.refused}

    def _earlier_rows(self) -> list[dict]:
        """The rows of the ``results.csv`` that this sweep's table goes on from (another sweep's: none)."""
        kept = self.folder is not None and not self.another_sweeps_folder()  # (another sweep's: set aside)
        return [_numbers_read(row) for row in read_csv(self.folder / RESULTS)] if kept else []

    @staticmethod
    def columns(rows: list[dict]) -> list[str]:
        """The results table's number columns: every one a finished job reported, the best scores first
        and the costs last."""
        keys = {k for row in rows for k in row} - set(TEXT)
        return sorted(keys, key=lambda k: (not k.startswith("best "), "/" not in k or k.startswith("train "), k))

    def table(self, rows: list[dict]) -> list[str]:
        """The finished jobs (`rows`) side by side, one line each: their mixer (where they say it), their
        numbers (`_values`), then the overrides that tell the sweep's jobs apart (those every job shares are
        left out)."""
        if not rows:
            return []
        keys = self.columns(rows)
        given = {str(num): overrides for num, overrides, _ in self.results}  # (a value may hold a space)
        listed = {  # (a job run again: which checkpoint it resumed from is no difference between jobs)
            str(row["job"]): [
                o
                for o in given.get(str(row["job"])) or _split(str(row["overrides"]))
                if o and override_key(o) != "ckpt_path"
            ]
            for row in rows
        }
        # what differs among the jobs shown and the whole sweep's (where known: also those not run)
        jobs = [set(job) for job in self.jobs] if self.jobs else [set(job) for _, job in self.ran]
        sets = [*jobs, *map(set, listed.values())]
        shared = set.intersection(*sets) if len({frozenset(s) for s in sets}) > 1 else set()
        mixers = _mixer_column(rows)
        lines = [["job", *mixers, *keys, "overrides"]]
        for row in rows:
            values = [_shown(k, v) if isinstance(v := row.get(k), float) else "-" for k in keys]
            overrides = " ".join(o for o in listed[str(row["job"])] if o not in shared)
            named = [row.get(MIXER) or "-" for _ in mixers]
            lines.append([f"#{row['job']}", *named, *values, overrides or "(the same)"])
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
        return [" ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + " " + line[-1] for line in lines]

    def write_results(self, rows: list[dict]) -> str | None:
        """Writes ``results.csv`` in the sweep's folder: the table (`rows`), with each job's every override,
        run folder and best checkpoint; says where (None: no folder). One of another sweep there is kept
        beside it, as ``results-<its date>.csv`` (as its ``multirun.yaml`` is)."""
        if self.folder is None:
            return None
        path = self.folder / RESULTS
        aside = None
        if path.is_file() and self.another_sweeps_folder():
            aside = path.with_name(f"results-{_dated(path)}.csv")
            os.replace(path, aside)
        filed = [c for c in FILED if c != "best_ckpt" or any(c in row for row in rows)]
        write_csv(
            path, rows, ["job", *_mixer_column(rows), *self.columns(rows), *filed]
        )  # (a number a job lacks: an empty cell)
        earlier = self.earlier_sweeps[-1] if aside else None
        shared = sorted(num for num, _ in self.ran if earlier is not None and num < len(earlier))
        replaced = (  # (Hydra's folders: <folder>/<n>)
            f"its job folders of the same numbers ({', '.join(f'#{n}' for n in shared)}) now hold this sweep's jobs"
            if shared
            else "its job folders are as they were"
        )
        return f"{path}" + (f"; an earlier, other sweep's is kept as {aside.name}, {replaced}" if aside else "")

    def forget_refused(self) -> None:
        """A sweep refused before its first job (a mistake in composing its configs, said already) leaves
        no record of itself: the ``multirun.yaml`` it wrote goes, the earlier one (`keep_earlier_record`)
        back in its place, and the folder with it where the sweep made it and leaves it empty."""
        if self.folder is None:
            return
        record = self.folder / MULTIRUN
        try:
            if self.earlier is not None:
                os.replace(self.earlier, record)
            elif record.is_file() and [p.name for p in self.folder.iterdir()] == [MULTIRUN]:
                record.unlink()
                if self.made_folder:
                    self.folder.rmdir()
        except OSError:
            pass

    def report(self) -> None:
        """Says once (at the sweep's end, else at exit) how the finished jobs compare, on standard output
        with the table in the sweep's folder (`write_results`), and `lines` on standard error."""
        if self.reported:
            return
        self.reported = True
        if not self.started:
            self.forget_refused()
        # none finished now: the earlier table is not said again, but its rows of jobs run again go
        dropping = not self.results and self.ran and self.folder is not None and (self.folder / RESULTS).is_file()
        shared = self.folder is not None and (self.results or dropping)  # (jobs rerun at once into one folder)
        table = []
        with held(self.folder / RESULTS) if shared else contextlib.nullcontext():
            again = self._ran_again() if dropping else set()
            if again and any(row.get("job") in again for row in self._earlier_rows()):
                with contextlib.suppress(OSError):
                    self.write_results(self.rows())
            rows = self.rows() if self.results else []
            if table := self.table(rows):
                try:
                    where = f" (also in {written})" if (written := self.write_results(rows)) else ""
                except OSError as err:
                    where = f" (not written to {self.folder / RESULTS}: {err.strerror or err})"
        if table:
            print(f"sweep results{where}:", *table, sep="\n", flush=True)
        if lines := self.lines() + self.still_missing():
            print("\n".join(lines), file=sys.stderr, flush=True)
