"""A sweep's closing report: every failed job, and where a Ctrl-C stopped it (the end-to-end runs
are the slow sweep tests of train and embed)."""

from __future__ import annotations

import csv
import multiprocessing
import os
import shlex
import shutil
import sys
import time
from datetime import datetime

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from ttt_mm.storage.atomic import write_csv
from ttt_mm.tasks.common import SweepJobError
from ttt_mm.tasks.sweep_report import SweepReport, sweep_job_of, sweep_jobs

SWEEP = os.path.abspath("sweep")
"""The sweep's folder in the commands of the jobs that did not run: they run from anywhere."""


def _job(num: int | str, *overrides: str, folder="sweep", subdir=None):
    hydra = {"job": {"num": num}, "overrides": {"task": list(overrides)}, "sweeper": {"params": None}}
    sweep = {"dir": str(folder), "subdir": num if subdir is None else subdir}
    return OmegaConf.create({"hydra": hydra | {"sweep": sweep}})


def _sweep(total: int, folder="sweep", overrides: tuple[str, ...] = (), **options) -> SweepReport:
    """A training sweep's report, as ``conf/train.yaml`` sets it up (a stopped job says how to resume
    itself), unless ``options`` say otherwise."""
    report = SweepReport(**{"reruns_stopped": False} | options)
    swept = overrides or (f"seed=range({total})",)
    report.begin(_job(0, *swept, folder=folder))  # (on_multirun_start: and the report at exit)
    return report


def _ended(report: SweepReport, num: int, override: str, error: Exception | None, returned=None) -> JobReturn:
    overrides = override.split()
    report.on_job_start(_job(num, *overrides))
    result = JobReturn(status=JobStatus.COMPLETED if error is None else JobStatus.FAILED)
    result._return_value = returned if error is None else error
    report.on_job_end(_job(num, *overrides), result)
    return result


def test_the_jobs_of_a_sweep_are_expanded_from_its_overrides_in_the_sweepers_order():
    jobs = sweep_jobs(["model.lr=1,2,3", "seed=0,1", "debug=default"])
    assert len(jobs) == 6 and jobs[1] == ["model.lr=1", "seed=1", "debug=default"]
    assert len(sweep_jobs(["seed=range(4)"])) == 4 and sweep_jobs(["seed=0"]) == [["seed=0"]]
    assert sweep_jobs(["seed=glob(*)"]) is None  # (a glob needs the config group's options)


def test_every_failed_job_is_listed_with_the_first_line_of_its_error():
    report = _sweep(3)
    _ended(report, 0, "model.lr=abc", ValueError("model.lr must be a number; got 'abc'\nmore"))
    _ended(report, 1, "model.lr=1e-3", None)
    _ended(report, 2, "model.lr=xyz", ValueError("model.lr must be a number; got 'xyz'"))
    assert report.lines() == [
        "sweep: 2 job(s) of 3 ended in an error:",
        "  #0 model.lr=abc: model.lr must be a number; got 'abc'",
        "  #2 model.lr=xyz: model.lr must be a number; got 'xyz'",
    ]


def test_a_sweep_stopped_in_a_job_says_which_jobs_did_not_run(monkeypatch):
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)  # as ``python train.py`` starts
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "seed=range(4)"])
    report = _sweep(4)
    _ended(report, 0, "seed=0", None)
    report.on_job_start(_job(1, "seed=1"))  # Ctrl-C: the job never ends
    assert report.lines() == [  # (and how to run those that did not: it was not said)
        "sweep: stopped in job #1 (seed=1)",
        "sweep: jobs #2-#3 did not run: to run them (their results join results.csv),",
        f"  python train.py -m seed=2 hydra.sweep.dir={SWEEP} hydra.sweep.subdir=2",
        f"  python train.py -m seed=3 hydra.sweep.dir={SWEEP} hydra.sweep.subdir=3",
    ]
    between = _sweep(3)
    _ended(between, 0, "seed=0", None)
    _ended(between, 1, "seed=1", None)  # Ctrl-C before the next job starts
    assert between.lines() == [
        "sweep: job #2 did not run: to run it (its result joins results.csv),",
        f"  python train.py -m seed=2 hydra.sweep.dir={SWEEP} hydra.sweep.subdir=2",
    ]


def test_the_jobs_that_did_not_run_are_run_from_the_sweeps_own_config_folder(monkeypatch):
    """Pasted, a command without the sweep's ``--config-dir`` could not find its experiment."""
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)
    monkeypatch.setattr(sys, "argv", ["train.py", "--config-dir", "/c", "-m", "seed=range(2)"])
    report = SweepReport()
    started = _job(0, "seed=range(2)")
    started.hydra.runtime = {"config_sources": [{"path": "/c", "schema": "file", "provider": "command-line"}]}
    report.begin(started)
    report.on_job_start(_job(0, "seed=0"))  # Ctrl-C
    assert (
        report.lines()[-1]
        == f"  python train.py -m --config-dir /c seed=1 hydra.sweep.dir={SWEEP} hydra.sweep.subdir=1"
    )


def test_a_job_run_again_alone_as_said_joins_its_sweeps_results(tmp_path, capsys):
    """The command given for a job that did not run made a run of its own, outside the sweep's table."""
    stopped = _sweep(3, folder=tmp_path, overrides=("seed=range(3)", "size=tiny"))
    _ended(stopped, 0, "seed=0 size=tiny", None, {"metrics": {"val/loss": 0.5}, "run_dir": "r0"})
    stopped.report()
    alone = _sweep(1, folder=tmp_path, overrides=("seed=2", "size=tiny"))  # (-m seed=2 ... hydra.sweep.subdir=2)
    alone.on_job_start(_job(0, "seed=2", "size=tiny", folder=tmp_path, subdir="2"))
    result = JobReturn(status=JobStatus.COMPLETED)
    result._return_value = {"metrics": {"val/loss": 0.25, "test/loss": 1.0}, "run_dir": "r2"}
    alone.on_job_end(_job(0, "seed=2", "size=tiny", folder=tmp_path, subdir="2"), result)
    alone.report()
    assert (tmp_path / "results.csv").read_text().splitlines() == [
        "job,test/loss,val/loss,overrides,run_dir",  # (no job has a best checkpoint: no column for one)
        "0,,0.5,seed=0 size=tiny,r0",
        "2,1.0,0.25,seed=2 size=tiny,r2",
    ]
    assert capsys.readouterr().out.splitlines()[-3:] == [  # the whole sweep's, not the job's alone; its own number
        "job test/loss val/loss overrides",
        "#0  -         0.5000   seed=0",  # (what differs among the jobs shown: every override, as the job's own)
        "#2  1.0000    0.2500   seed=2",
    ]
    resumed = _sweep(1, folder=tmp_path, overrides=("seed=0", "size=tiny", "ckpt_path=/r0/last.ckpt"))
    _ended(resumed, 0, "seed=0 size=tiny ckpt_path=/r0/last.ckpt", None, {"metrics": {"val/loss": 0.125}})
    assert resumed.table(resumed.rows())[1:] == ["#0  -         0.1250   seed=0", "#2  1.0000    0.2500   seed=2"]


def test_a_job_run_again_that_fails_or_stops_loses_its_earlier_row(tmp_path, capsys):
    """Its earlier score stayed in the table and results.csv as if current, while its folder held the
    failed run; where no job of the rerun finished, the old table was left as it was."""
    first = _sweep(3, folder=tmp_path)
    for num in range(3):
        _ended(first, num, f"seed={num}", None, {"metrics": {"val/loss": 0.5 + num}, "run_dir": f"r{num}"})
    first.report()
    again = _sweep(3, folder=tmp_path)
    _ended(again, 0, "seed=0", None, {"metrics": {"val/loss": 0.25}, "run_dir": "r0"})
    _ended(again, 1, "seed=1", ValueError("boom"))
    again.report()
    assert [row.split(",")[:2] for row in (tmp_path / "results.csv").read_text().splitlines()] == [
        ["job", "val/loss"],
        ["0", "0.25"],
        ["2", "2.5"],  # (not run again: its row stays)
    ]
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()[-2:]] == [
        ["#0", "0.2500"],
        ["#2", "2.5000"],
    ]
    refused = _sweep(3, folder=tmp_path)  # a config mistake: the job's run never began, its row stays
    _ended(refused, 2, "seed=2", SweepJobError("model.lr must be a number"))
    refused.report()
    assert [row.split(",")[0] for row in (tmp_path / "results.csv").read_text().splitlines()] == ["job", "0", "2"]
    stopped = _sweep(3, folder=tmp_path)  # none finishes: the table is not said, but job 2's row goes
    _ended(stopped, 2, "seed=2", ValueError("boom"))
    stopped.report()
    assert [row.split(",")[0] for row in (tmp_path / "results.csv").read_text().splitlines()] == ["job", "0"]
    assert "sweep results" not in capsys.readouterr().out


def test_a_single_run_is_not_reported_on():
    """Hydra calls the job hooks in a single run too, where the job has no number (it raised there)."""
    single = SweepReport()
    _ended(single, "???", "seed=0", ValueError("a config error"))
    assert single.lines() == []


def test_a_config_error_said_in_its_job_is_listed_once_at_the_end_not_raised_again(capsys):
    """Hydra raised it again after the last job ("Error executing job ...", the message, a hint about
    stack traces), between the job's own error line and this report."""
    report = _sweep(3)
    said = _ended(report, 0, "seed=-1", SweepJobError("seed must be a whole number"))
    assert said.status == JobStatus.COMPLETED and said.return_value is None  # (Hydra reads it after the jobs)
    crashed = _ended(report, 1, "seed=0", RuntimeError("boom"))  # (not a config error: Hydra shows its traceback)
    assert crashed.status == JobStatus.FAILED
    _ended(report, 2, "seed=1", None)
    with pytest.raises(SystemExit) as ended:
        report.on_multirun_end(_job(0))
    assert ended.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "sweep: 2 job(s) of 3 ended in an error:",
        "  #0 seed=-1: seed must be a whole number",
        "  #1 seed=0: boom",
    ]
    report.report()  # (at exit: said already)
    assert capsys.readouterr().err == ""


def test_the_finished_jobs_are_compared_in_a_table_and_a_csv_in_the_sweeps_folder(tmp_path, capsys):
    """There was no way to compare a sweep's runs but to read each one's summary."""
    report = _sweep(3, folder=tmp_path)
    runs = {
        n: {"metrics": {"val/loss": 0.5 + n, "train/loss": 9.0}, "run_dir": f"r{n}", "best_ckpt": f"b{n}"}
        for n in (0, 2)
    }
    runs[0]["best_score"] = {"val/loss": 0.25}
    runs[0]["cost"] = {"train tokens/s": 6021.5, "fit minutes": 1234.5}  # (what a run without Throughput lacks)
    runs[2]["cost"] = {"fit minutes": 0.024}  # (a short run: it read 0.0)
    _ended(report, 0, "model=ttt_linear seed=1", None, runs[0])
    _ended(report, 1, "model=attention seed=-1", SweepJobError("seed must be a whole number"))
    runs[2]["metrics"]["test/loss"] = 3.25
    _ended(report, 2, "model=lact seed=1", None, runs[2])
    with pytest.raises(SystemExit):
        report.on_multirun_end(_job(0))
    assert capsys.readouterr().out.splitlines() == [
        f"sweep results (also in {tmp_path / 'results.csv'}):",
        # (the best's score, the last metrics, the cost; the overrides that differ)
        "job best val/loss test/loss val/loss fit minutes train tokens/s overrides",
        "#0  0.2500        -         0.5000   1234        6022           model=ttt_linear seed=1",
        "#2  -             3.2500    2.5000   0.024       -              model=lact seed=1",
    ]
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows == [
        "job,best val/loss,test/loss,val/loss,fit minutes,train tokens/s,overrides,run_dir,best_ckpt",
        "0,0.25,,0.5,1234.5,6021.5,model=ttt_linear seed=1,r0,b0",
        "2,,3.25,2.5,0.024,,model=lact seed=1,r2,b2",
    ]


def test_a_sweep_over_checkpoints_names_each_jobs_mixer(tmp_path, capsys):
    """An evaluation swept over checkpoints told its rows apart by their paths alone: which was the
    attention model was read off each run's folder by hand."""
    report = _sweep(2, folder=tmp_path, overrides=("ckpt=/runs/a/last.ckpt,/runs/b/last.ckpt",))
    for num, (ckpt, mixer) in enumerate((("/runs/a/last.ckpt", "ttt_linear"), ("/runs/b/last.ckpt", "attention"))):
        done = {"metrics": {"eval/loss": 0.25 * (num + 1)}, "run_dir": f"e{num}", "mixer": mixer}
        _ended(report, num, f"ckpt={ckpt}", None, done)
    report.on_multirun_end(_job(0))
    assert capsys.readouterr().out.splitlines()[1:] == [
        "job mixer      eval/loss overrides",
        "#0  ttt_linear 0.2500    ckpt=/runs/a/last.ckpt",
        "#1  attention  0.5000    ckpt=/runs/b/last.ckpt",
    ]
    assert (tmp_path / "results.csv").read_text().splitlines()[:2] == [
        "job,mixer,eval/loss,overrides,run_dir",
        "0,ttt_linear,0.25,ckpt=/runs/a/last.ckpt,e0",
    ]
    again = _sweep(2, folder=tmp_path, overrides=("ckpt=/runs/a/last.ckpt,/runs/b/last.ckpt",))
    assert [(row["job"], row.get("mixer"), row["eval/loss"]) for row in again.rows()] == [
        ("0", "ttt_linear", 0.25),
        ("1", "attention", 0.5),
    ]  # (read back from results.csv: the mixer kept as a name, not taken for a score)


def test_a_training_sweep_without_best_checkpoints_keeps_the_column_for_them(tmp_path):
    """Its column came and went with the jobs' results (validation off: none had one), a script's
    row["best_ckpt"] failing on one sweep's table and not another's."""
    report = _sweep(1, folder=tmp_path)
    _ended(report, 0, "seed=0", None, {"metrics": {"train/loss": 1.5}, "run_dir": "r0", "best_ckpt": None})
    report.report()
    assert (tmp_path / "results.csv").read_text().splitlines() == ["job,overrides,run_dir,best_ckpt", "0,seed=0,r0,"]


def test_the_overrides_shown_are_those_that_differ_among_all_the_sweeps_jobs(tmp_path):
    """With one job finished, every override was shown (what differs was taken among finished jobs)."""
    report = _sweep(2, overrides=("model.lr=0.001,abc", "trainer.max_steps=10"))
    _ended(report, 0, "model.lr=0.001 trainer.max_steps=10", None, {"metrics": {}})
    _ended(report, 1, "model.lr=abc trainer.max_steps=10", SweepJobError("model.lr must be a number"))
    assert report.table(report.rows())[1] == "#0  model.lr=0.001"
    stopped = _sweep(4)  # (seed=range(4): the jobs not started differ too)
    _ended(stopped, 0, "seed=0", None, {"metrics": {}})
    assert stopped.table(stopped.rows())[1] == "#0  seed=0"
    spaced = _sweep(2, folder=tmp_path, overrides=("seed=0,1", "data.root='/my data'"))  # (shared, with a space)
    for num in (0, 1):
        job = _job(num, f"seed={num}", "data.root='/my data'", folder=tmp_path)
        spaced.on_job_start(job)
        result = JobReturn(status=JobStatus.COMPLETED)
        result._return_value = {"metrics": {}}
        spaced.on_job_end(job, result)
    assert spaced.table(spaced.rows())[1:] == ["#0  seed=0", "#1  seed=1"]
    spaced.write_results(spaced.rows())
    again = _sweep(1, folder=tmp_path, overrides=("seed=1", "data.root='/my data'"))  # (job 1 run again alone)
    job = _job(0, "seed=1", "data.root='/my data'", folder=tmp_path, subdir="1")
    again.on_job_start(job)
    again.on_job_end(job, result)
    assert again.table(again.rows())[1:] == ["#0  seed=0", "#1  seed=1"]  # (job 0's read back from results.csv)


def test_a_sweep_refused_before_its_first_job_names_no_job_to_run_and_leaves_no_folder(tmp_path, capsys):
    """A mistake in composing its configs (said already) stops it before any job: the commands given for
    its jobs carried the same mistake, and its stamped folder was left holding only multirun.yaml."""
    folder = tmp_path / "multiruns" / "2026-12-04_23-59-59-000001"
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text("hydra: {}\n")
    report = _sweep(2, folder=folder)
    assert report.lines() == []
    report.report()
    assert capsys.readouterr().err == "" and not folder.exists() and (tmp_path / "multiruns").is_dir()
    named = tmp_path / "mine"  # (hydra.sweep.dir=mine: its record goes too, and so does the folder it made)
    named.mkdir()
    (named / "multirun.yaml").write_text("hydra: {}\n")
    _sweep(2, folder=named).report()
    assert not named.exists()
    named.mkdir()  # (a folder that was there before the sweep stays, empty again)
    refused = _sweep(2, folder=named)
    refused.keep_earlier_record()
    (named / "multirun.yaml").write_text("hydra: {}\n")
    refused.report()
    assert named.is_dir() and not any(named.iterdir())
    named.rmdir()
    (named / "0").mkdir(parents=True)  # (a folder holding anything else stays)
    (named / "multirun.yaml").write_text("hydra: {}\n")
    _sweep(2, folder=named).report()
    assert (named / "multirun.yaml").is_file()
    shutil.rmtree(named / "0")  # a record of an earlier sweep into the folder is put back
    refused = _sweep(2, folder=named)
    refused.keep_earlier_record()  # (on_multirun_start, before Hydra writes its record)
    (named / "multirun.yaml").write_text("refused: {}\n")
    refused.report()
    assert [p.name for p in named.iterdir()] == ["multirun.yaml"]
    assert (named / "multirun.yaml").read_text() == "hydra: {}\n"


def test_a_sweep_whose_folder_reads_a_key_its_jobs_set_apart_is_refused_before_its_first_job(capsys):
    """``hydra.sweep.dir=sw_${seed}`` with ``seed=1,2``: the jobs went to sw_1 and sw_2, and the
    results table and the commands to run jobs again to sw_0, for the config's own seed."""
    with pytest.raises(SystemExit) as ended:
        _sweep(2, folder="sw_${seed}", overrides=("seed=1,2", "model.lr=0.01"))
    assert ended.value.code == 2
    assert capsys.readouterr().err == (
        "error: hydra.sweep.dir reads ${seed}, and this sweep's jobs set seed apart: each would make a sweep folder "
        "of its own; name the jobs' folders by it instead, with hydra.sweep.subdir='${hydra.job.num}_${seed}'\n"
    )
    with pytest.raises(SystemExit):  # a config group swept: its option's name, not its whole node, names the folders
        report = SweepReport(reruns_stopped=False)
        job = _job(0, "model=attention,lact", folder="sw_${model.lr}")
        job.hydra.runtime = {"choices": {"model": "attention"}}
        report.begin(job)
    assert capsys.readouterr().err == (
        "error: hydra.sweep.dir reads ${model.lr}, and this sweep's jobs set model apart: each would make a sweep "
        "folder of its own; name the jobs' folders by it instead, with "
        "hydra.sweep.subdir='${hydra.job.num}_${hydra:runtime.choices.model}'\n"
    )
    for folder in ("sw_${model.lr}", "sw_${seeds}", "sw_\\${seed}", "sw"):  # (set alike in every job, or not read)
        _sweep(2, folder=folder, overrides=("seed=1,2", "model.lr=0.01"))


def test_a_job_run_again_into_its_sweep_keeps_the_sweeps_record_beside_its_own(tmp_path):
    """Hydra wrote the sweep of one's multirun.yaml over the whole sweep's: the only record of its command."""
    (tmp_path / "multirun.yaml").write_text("the sweep\n")
    os.utime(tmp_path / "multirun.yaml", (0, 0))
    again = _sweep(1, folder=tmp_path, overrides=("seed=2",))
    again.keep_earlier_record()
    (tmp_path / "multirun.yaml").write_text("the job run again\n")
    _ended(again, 2, "seed=2", None, returned={"metrics": {"val/loss": 1.0}})
    again.report()
    (earlier,) = tmp_path.glob("multirun-*.yaml")
    assert earlier.read_text() == "the sweep\n" and (tmp_path / "multirun.yaml").read_text() == "the job run again\n"
    assert earlier.name == f"multirun-{datetime.fromtimestamp(0).strftime('%Y-%m-%d_%H-%M-%S-%f')}.yaml"


def test_a_job_run_again_into_its_sweep_names_the_sweeps_jobs_still_without_a_result(tmp_path, monkeypatch, capsys):
    """Of a sweep of 4 stopped in job #1, job #3 was run again alone: #1 and #2 still have no result."""
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)  # as ``python train.py`` starts
    monkeypatch.setattr(sys, "argv", ["train.py"])
    record = {"hydra": {"overrides": {"task": ["seed=range(4)", "size=tiny"]}, "sweeper": {"params": None}}}
    OmegaConf.save(OmegaConf.create(record), tmp_path / "multirun.yaml")
    os.utime(tmp_path / "multirun.yaml", (0, 0))  # (each record kept is named by its date)
    stopped = _sweep(4, folder=tmp_path, overrides=("seed=range(4)", "size=tiny"))
    _ended(stopped, 0, "seed=0 size=tiny", None, {"metrics": {"val/loss": 0.5}})
    stopped.report()
    again = _sweep(1, folder=tmp_path, overrides=("seed=3", "size=tiny"))
    again.keep_earlier_record()
    alone = {"task": ["seed=3", "size=tiny"], "hydra": [f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=3"]}
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": alone}}), tmp_path / "multirun.yaml")
    os.utime(tmp_path / "multirun.yaml", (60, 60))
    _ended(again, 3, "seed=3 size=tiny", None, {"metrics": {"val/loss": 0.25}})
    capsys.readouterr()
    again.report()
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()[-2:]] == ["#0", "#3"]
    folder = shlex.quote(str(tmp_path))
    assert err.splitlines() == [
        "sweep: 2 jobs (#1, #2) of 4 still without a result in results.csv: to run them,",
        f"  python train.py -m seed=1 size=tiny hydra.sweep.dir={folder} hydra.sweep.subdir=1",
        f"  python train.py -m seed=2 size=tiny hydra.sweep.dir={folder} hydra.sweep.subdir=2",
    ]

    def record_of(*overrides: str, at: int) -> None:  # (Hydra writes each sweep's record as it starts)
        hydra = ["hydra.sweep.subdir=1"]  # (a job run again alone into its sweep, as said)
        OmegaConf.save(
            OmegaConf.create({"hydra": {"overrides": {"task": list(overrides), "hydra": hydra}}}),
            tmp_path / "multirun.yaml",
        )
        os.utime(tmp_path / "multirun.yaml", (at, at))

    record_of("seed=1", "size=tiny", at=120)
    last = _sweep(1, folder=tmp_path, overrides=("seed=1", "size=tiny"))  # (a third record: the first is the sweep's)
    last.keep_earlier_record()
    _ended(last, 1, "seed=1 size=tiny ckpt_path=/s/1/last.ckpt", ValueError("a bug"))  # (a resume, failed)
    assert last.still_missing() == [  # (#1 is said to have failed; #0 and #3 have their results)
        "sweep: job #2 of 4 still without a result in results.csv: to run it,",
        f"  python train.py -m seed=2 size=tiny hydra.sweep.dir={folder} hydra.sweep.subdir=2",
    ]
    assert stopped.still_missing() == []  # (the sweep itself says which jobs did not run)
    record_of("seed=range(4)", "size=tiny", at=180)
    whole = _sweep(4, folder=tmp_path, overrides=("seed=range(4)", "size=tiny"))  # the whole sweep again
    whole.keep_earlier_record()
    _ended(whole, 0, "seed=0 size=tiny", None, {"metrics": {"val/loss": 0.5}})
    whole.on_job_start(_job(1, "seed=1", "size=tiny"))  # Ctrl-C
    assert len(whole.lines()) == 4 and whole.still_missing() == []  # (#1 stopped, #2 and #3 did not run: said once)
    record_of("seed=9", at=240)
    other = _sweep(1, folder=tmp_path, overrides=("seed=9",))  # (another sweep's job, into this folder)
    other.keep_earlier_record()
    _ended(other, 2, "seed=9", None, {"metrics": {"val/loss": 1.0}})
    assert other.still_missing() == [] and len(list(tmp_path.glob("multirun-*.yaml"))) == 4


def test_a_stopped_job_of_a_command_that_cannot_resume_is_given_its_command_again(monkeypatch):
    """An evaluation or embedding stopped by Ctrl-C was named, with no way to run it again into the sweep."""
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)
    monkeypatch.setattr(sys, "argv", ["evaluate.py"])
    report = _sweep(2, overrides=("split=val,test",), reruns_stopped=True)
    report.on_job_start(_job(0, "split=val"))  # Ctrl-C
    assert report.lines()[:2] == [
        "sweep: stopped in job #0 (split=val): to run it again from its start,",
        f"  python evaluate.py -m split=val hydra.sweep.dir={SWEEP} hydra.sweep.subdir=0",
    ]


def test_a_sweep_of_a_command_without_a_results_table_names_no_results_to_join(tmp_path, monkeypatch):
    """Embed and the probe return no scores: their sweeps said every job was "still without a result in
    results.csv", again after each job was run as said, and that stopped jobs' results join that file."""
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)
    monkeypatch.setattr(sys, "argv", ["embed.py"])
    record = {"hydra": {"overrides": {"task": ["pool=mean,max"]}, "sweeper": {"params": None}}}
    OmegaConf.save(OmegaConf.create(record), tmp_path / "multirun.yaml")
    again = _sweep(2, folder=tmp_path, overrides=("pool=mean,max",), keeps_table=False, reruns_stopped=True)
    again.keep_earlier_record()
    _ended(again, 0, "pool=mean", None)  # (embed returns nothing)
    again.on_job_start(_job(1, "pool=max"))  # Ctrl-C
    assert again.still_missing() == []
    assert not [line for line in again.lines() if "results.csv" in line]
    table = _sweep(2, folder=tmp_path, overrides=("pool=mean,max",), keeps_table=True)
    _ended(table, 0, "pool=mean", None)
    assert table.still_missing()[0] == "sweep: job #0 of 2 still without a result in results.csv: to run it,"


def test_another_sweep_into_an_old_sweeps_folder_keeps_its_table_apart(tmp_path, capsys):
    """Its jobs #0 and #1 were listed beside the old sweep's #2 in one table, as if one sweep."""
    old = {"hydra": {"overrides": {"task": ["seed=range(3)"]}, "sweeper": {"params": None}}}
    OmegaConf.save(OmegaConf.create(old), tmp_path / "multirun.yaml")
    first = _sweep(3, folder=tmp_path, overrides=("seed=range(3)",))
    for num in range(3):
        _ended(first, num, f"seed={num}", None, {"metrics": {"val/loss": 1.0 + num}})
    first.report()
    os.utime(tmp_path / "results.csv", (0, 0))
    other = _sweep(2, folder=tmp_path, overrides=("seed=range(2)", "size=tiny"))
    other.keep_earlier_record()
    for num in range(2):
        _ended(other, num, f"seed={num} size=tiny", None, {"metrics": {"val/loss": 0.5}})
    capsys.readouterr()
    other.report()
    said = capsys.readouterr().out.splitlines()
    kept = f"results-{datetime.fromtimestamp(0).strftime('%Y-%m-%d_%H-%M-%S-%f')}.csv"
    assert (
        said[0] == f"sweep results (also in {tmp_path / 'results.csv'}; an earlier, other sweep's is kept as {kept}, "
        "its job folders of the same numbers (#0, #1) now hold this sweep's jobs):"  # (its run_dir column names them)
    )
    assert [line.split()[0] for line in said[2:]] == ["#0", "#1"]
    assert [row.split(",")[0] for row in (tmp_path / "results.csv").read_text().splitlines()[1:]] == ["0", "1"]
    assert len((tmp_path / kept).read_text().splitlines()) == 4  # (the old sweep's three jobs, kept)
    os.utime(tmp_path / "results.csv", (60, 60))
    apart = _sweep(1, folder=tmp_path, overrides=("model=lact",))  # (a job of a number the earlier one lacks)
    apart.keep_earlier_record()
    apart.ran = [(5, ["model=lact"])]
    apart.results = [(5, ["model=lact"], {"metrics": {"val/loss": 0.4}})]
    capsys.readouterr()
    apart.report()
    assert "is kept as results-" in (line := capsys.readouterr().out.splitlines()[0])
    assert line.endswith(", its job folders are as they were):")


def test_a_linear_probes_scores_are_columns_of_the_table(tmp_path):
    """The probe returned nothing, so a sweep over layers or pools had no table to compare them in."""
    report = _sweep(2, folder=tmp_path, overrides=("layer=0,1",))
    for num in range(2):
        scores = {"probe/model/accuracy": 0.5 + num / 4, "probe/majority/accuracy": 0.5}
        _ended(report, num, f"layer={num}", None, {"metrics": scores, "run_dir": f"o/{num}"})
    assert report.table(report.rows()) == [
        "job probe/majority/accuracy probe/model/accuracy overrides",
        "#0  0.5000                  0.5000               layer=0",
        "#1  0.5000                  0.7500               layer=1",
    ]


def test_jobs_run_alone_into_a_sweep_whose_jobs_are_not_known_keep_its_table(tmp_path):
    """Of a sweep over a glob (jobs not known here), a second job run alone was taken for another sweep
    (the first one's record of one job did not hold it): the sweep's table was set aside."""
    glob = {"hydra": {"overrides": {"task": ["model=glob(*)"]}, "sweeper": {"params": None}}}
    OmegaConf.save(OmegaConf.create(glob), tmp_path / "multirun.yaml")
    os.utime(tmp_path / "multirun.yaml", (0, 0))
    stopped = _sweep(3, folder=tmp_path, overrides=("model=glob(*)",))
    _ended(stopped, 0, "model=a", None, {"metrics": {"val/loss": 0.1}})
    stopped.report()
    for num, model, at in ((1, "b", 60), (2, "c", 120)):
        alone = {"task": [f"model={model}"], "hydra": [f"hydra.sweep.subdir={num}"]}
        run = _sweep(1, folder=tmp_path, overrides=(f"model={model}",))
        run.keep_earlier_record()
        record = {"hydra": {"overrides": alone, "sweeper": {"params": None}}}
        OmegaConf.save(OmegaConf.create(record), tmp_path / "multirun.yaml")
        os.utime(tmp_path / "multirun.yaml", (at, at))
        _ended(run, num, f"model={model}", None, {"metrics": {"val/loss": num / 10}})
        run.report()
    assert [row.split(",")[0] for row in (tmp_path / "results.csv").read_text().splitlines()[1:]] == ["0", "1", "2"]
    assert not list(tmp_path.glob("results-*.csv"))


def test_an_old_sweeps_job_run_alone_after_another_sweep_is_not_put_in_its_table(tmp_path):
    """Sweep B was started into sweep A's folder; A's job #2, run alone after, was merged into B's table."""
    for sweep, at in ((["seed=range(3)"], 0), (["seed=range(2)", "size=tiny"], 60)):
        record = {"hydra": {"overrides": {"task": sweep}, "sweeper": {"params": None}}}
        OmegaConf.save(OmegaConf.create(record), tmp_path / f"multirun-{at}.yaml")
    b = _sweep(2, folder=tmp_path, overrides=("seed=range(2)", "size=tiny"))
    assert b.another_sweeps_folder() is False  # (no job ran yet: nothing to tell)
    _ended(b, 0, "seed=0 size=tiny", None, {"metrics": {"val/loss": 0.5}})
    assert b.whole_sweep() == [["seed=0", "size=tiny"], ["seed=1", "size=tiny"]]
    a = _sweep(1, folder=tmp_path, overrides=("seed=2",))
    _ended(a, 2, "seed=2", None, {"metrics": {"val/loss": 9.0}})
    assert a.another_sweeps_folder() and a.whole_sweep() is None


def test_a_sweep_that_names_its_job_folders_is_a_sweep_its_jobs_run_again_join(tmp_path):
    """A sweep started with ``hydra.sweep.subdir='${hydra.job.num}_${seed}'`` (as `refuse_a_folder_per_job`
    advises) was taken for a job run again alone: a job of it run again did not join its table."""
    named = {"task": ["seed=range(3)"], "hydra": ["hydra.sweep.subdir=${hydra.job.num}_${seed}"]}
    OmegaConf.save(
        OmegaConf.create({"hydra": {"overrides": named, "sweeper": {"params": None}}}), tmp_path / "multirun-0.yaml"
    )
    alone = {"task": ["seed=2"], "hydra": ["hydra.sweep.subdir=2"]}  # (that job, run again as its report says)
    OmegaConf.save(
        OmegaConf.create({"hydra": {"overrides": alone, "sweeper": {"params": None}}}), tmp_path / "multirun-1.yaml"
    )
    again = _sweep(1, folder=tmp_path, overrides=("seed=1",))
    _ended(again, 1, "seed=1", None, {"metrics": {"val/loss": 0.5}})
    assert again.whole_sweep() == [["seed=0"], ["seed=1"], ["seed=2"]] and not again.another_sweeps_folder()
    assert again.still_missing()[0].startswith("sweep: 2 jobs (#0, #2) of 3 still without a result in results.csv")


def _report_one_job(folder, num: int, barrier) -> None:
    """A rerun of job ``num`` into ``folder``, reporting when the other rerun does."""
    report = _sweep(2, folder=folder)
    _ended(report, num, f"seed={num}", None, {"metrics": {"train/loss": 1.0 + num}, "run_dir": f"r{num}"})
    read = report.rows

    def slow_rows():  # (the other rerun reads meanwhile, unless the lock holds it back)
        rows = read()
        time.sleep(0.5)
        return rows

    report.rows = slow_rows
    barrier.wait(30)
    report.report()


def test_two_jobs_rerun_at_once_into_a_sweeps_folder_both_keep_their_rows(tmp_path):
    """Each read results.csv, added its row and wrote it back: the last to write left the other's out."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    reruns = [context.Process(target=_report_one_job, args=(tmp_path, num, barrier)) for num in (0, 1)]
    for rerun in reruns:
        rerun.start()
    for rerun in reruns:
        rerun.join(60)
    with open(tmp_path / "results.csv", newline="") as f:
        assert sorted(row["job"] for row in csv.DictReader(f)) == ["0", "1"]


def test_a_run_folder_is_known_as_its_sweeps_job_by_the_row_that_names_it(tmp_path):
    """What tells a resume outside the sweep that its results.csv row will not follow it."""
    sweep = tmp_path / "sweep"
    (sweep / "3").mkdir(parents=True)
    (sweep / "7").mkdir()
    write_csv(sweep / "results.csv", [{"job": 3, "run_dir": str(sweep / "3")}], ["job", "run_dir"])
    assert sweep_job_of(sweep / "3") == (sweep, "3")
    assert sweep_job_of(sweep / "7") is None and sweep_job_of(tmp_path) is None
    moved = tmp_path / "moved"
    sweep.rename(moved)  # (its rows still name the old folders: the job's number names the folder)
    assert sweep_job_of(moved / "3") == (moved, "3")


def test_a_sweep_is_known_from_its_mode_set_as_an_override_too(monkeypatch):
    """Started with hydra.mode=MULTIRUN, a sweep's mistakes were said as those of a single run."""
    from ttt_mm.tasks.overrides import sweep_on_command_line

    monkeypatch.setattr(sys, "argv", ["train.py", "seed=0,1", "hydra.mode=MULTIRUN"])
    assert sweep_on_command_line()
    monkeypatch.setattr(sys, "argv", ["train.py", "seed=0"])
    assert not sweep_on_command_line()
