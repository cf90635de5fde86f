"""``python train.py [overrides]``: build data, model, callbacks, loggers and trainer from the config, fit.

Config errors end in one ``error:`` line and exit code 2 rather than a deep traceback.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from ttt_mm.callbacks import Throughput
from ttt_mm.data.datamodule import NAMED_FILES
from ttt_mm.data.index import IndexInterrupted
from ttt_mm.messages import one_line
from ttt_mm.module import Diverged
from ttt_mm.processes.termination import sigterm_as_ctrl_c
from ttt_mm.storage.atomic import remove_stale_temporaries
from ttt_mm.tasks.command_keys import set_threads
from ttt_mm.tasks.common import (
    CONFIG_ERRORS,
    ConfigError,
    Interrupted,
    config_errors_end_the_command,
    in_a_sweep,
    process_rank,
)
from ttt_mm.tasks.composing import hydra_command
from ttt_mm.tasks.held_out import from_anywhere, held_out
from ttt_mm.tasks.job_logs import lightning_logs_to_file, quiet_lightning, to_log_file
from ttt_mm.tasks.resume_advice import (
    WORKER_DIED,
    checkpoint_does_not_fit,
    rerun_this_job,
    resume_this_run,
    where_to_resume,
)
from ttt_mm.tasks.run_folders import (
    earlier_checkpoints,
    forget_refused_resume,
    later_last_checkpoint,
    later_step_checkpoints,
    run_of_checkpoint,
)
from ttt_mm.tasks.sweep_report import RESULTS, sweep_job_of
from ttt_mm.tasks.train_checks import check, check_files_hold_updates, check_parts, run_length
from ttt_mm.training.interrupts import first_process_marked, leave_ctrl_c_to_the_first_process, others_stopped_on_ctrl_c
from ttt_mm.training.terminated_together import TerminatedTogether

log = logging.getLogger(__name__)

# What torch says when a checkpoint does not fit the model, or is a damaged zip archive
RESUME_ERRORS = (
    "Error(s) in loading state_dict",
    "PytorchStreamReader failed",
    "failed finding central directory",
    "parameter group that doesn't match the size",  # optimizer groups split otherwise (another version)
)


def build(cfg: DictConfig):
    """Instantiate every part; returns (datamodule, model, trainer)."""
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    datamodule.cover_context(model.tokenizer)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(TerminatedTogether())  # (not a setting: without it, data parallel can hang on SIGTERM)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    # without checkpoint callbacks (callbacks=none), no checkpoints: Lightning would otherwise add one of
    # its own, saved under a name that resuming and the other commands do not look for
    saves = cfg.trainer.get("enable_checkpointing", any(isinstance(c, Checkpoint) for c in callbacks))
    settings = {"limit_val_batches": 0} if datamodule.val_fraction == 0 else {}  # (no val files: no validation)
    steps, every = run_length(cfg.trainer), cfg.trainer.get("log_every_n_steps")
    every = 50 if every is None else every  # (Lightning's default; 0 turns step logs off, and stays)
    if 0 < steps < every:  # a run shorter than the logging interval logs at its end (it logged nothing)
        settings["log_every_n_steps"] = steps
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_checkpointing=saves, **settings
    )
    return datamodule, model, trainer


def run(cfg: DictConfig) -> dict:
    """Fit (and optionally test); returns the final metrics and where things were written."""
    resumed = check(cfg)
    resumed_step = resumed.step if resumed else None
    tested_alone = resumed is not None and not cfg.get("train", True)  # (train=false: test ckpt_path)
    if tested_alone:
        use_the_runs_split(cfg, resumed.split)
    set_threads(cfg.get("cpu_threads"), "cpu_threads")
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    if cfg.get("train", True):
        try:
            model.check_optimizer_settings()
        except ValueError as err:
            raise ConfigError(str(err)) from None
    check_parts(cfg, datamodule, model, trainer, resumed)
    saves_to = OmegaConf.select(cfg, "callbacks.last_checkpoint.dirpath", default=None)
    if saves_to and process_rank() == 0 and (gone := remove_stale_temporaries(saves_to)):  # (none: nothing walked)
        log.info("removed %d unfinished checkpoint file(s) that a run killed while saving left in %s", gone, saves_to)
    if not resumed and cfg.get("train", True) and (earlier := earlier_checkpoints(saves_to)):
        log.warning(
            "%s holds checkpoints of an earlier run (%s): this run starts afresh, its saves replace those of "
            "the same names, and the others stay, outside its ranking of the best (to keep them, run elsewhere: "
            "hydra.run.dir=<folder>; to go on with that run instead: %s)",
            saves_to,
            ", ".join(p.name for p in earlier[:3]) + (", ..." if len(earlier) > 3 else ""),
            resume_this_run(os.path.join(saves_to, "last.ckpt")),
        )
    if resumed and cfg.get("train", True) and (later := later_last_checkpoint(cfg.ckpt_path, resumed.step, saves_to)):
        log.warning(
            "resuming from step %d, in its run's folder, whose %s was saved later (step %d): this run's saves "
            "replace it (to keep it, copy it aside first)",
            resumed.step,
            *later,
        )
    if resumed and cfg.get("train", True) and (after := later_step_checkpoints(cfg.ckpt_path, resumed.step)):
        log.warning(
            "resuming from step %d, in its run's folder, which holds checkpoints saved later (%s): they stay, "
            "outside this run's ranking of the best, unless it saves a best of the same step, which replaces one, "
            "to be removed in turn when its best moves on (remove them, or keep them aside, if they are not wanted)",
            resumed.step,
            ", ".join(p.name for p in after),
        )
    job = sweep_job_of(run_of_checkpoint(cfg.ckpt_path)) if resumed and not in_a_sweep() else None
    if job and cfg.get("train", True):
        log.warning(
            "resuming job %s of the sweep in %s outside a sweep: its row in that sweep's %s stays as it was "
            "(to have it updated, resume it as a sweep of one: %s)",
            job[1],
            job[0],
            RESULTS,
            resume_this_run(cfg.ckpt_path, job),
        )
    if resumed:  # (resumed or tested: validation keeps the file its run moved there, if it did)
        datamodule.trained_on = from_anywhere(resumed.trained, cfg.ckpt_path)
        datamodule.validated_on = from_anywhere(resumed.validated, cfg.ckpt_path)
    try:  # list the data now: a wrong path or an empty folder is a config error, not a crash mid-run
        with sigterm_as_ctrl_c():  # (a scheduler's SIGTERM while a large folder is probed: said, the probes kept)
            datamodule.setup("fit")
    except (OSError, ValueError) as err:  # (OSError: a skip list or index cache that cannot be written, say)
        raise ConfigError(f"data: {err}") from None
    except IndexInterrupted:  # (it says what the index kept)
        raise
    except KeyboardInterrupt:  # (the run folder holds nothing of the run: it goes)
        raise Interrupted("nothing was trained (the data was being listed)", before_it_began=True) from None
    if cfg.get("train", True):
        check_files_hold_updates(datamodule, model)
    if cfg.get("test") and not datamodule.splits["test"]:  # (said now, not after the training)
        clips = datamodule.clips
        if all(c.split is not None for c in clips):  # (a manifest's split column: the fraction is not used)
            why = "the manifest's split column names no test row: add some, or leave out test=true"
        elif tested_alone and resumed.split and not resumed.split["test_fraction"]:
            why = (  # (its fractions replaced data.*'s: raising data.test_fraction would change nothing)
                "the checkpoint's run held out no test files, data.test_fraction=0: score it with python -m "
                "ttt_mm.tasks.evaluate (split=val, its validation files), or test a run trained with a test split"
            )
        else:
            why = (
                f"data.test_fraction={datamodule.test_fraction:g}: raise it, name the test files in a manifest's "
                "split column, or leave out test=true; each file's split is drawn from a hash of its name, so "
                "a few files split unevenly"
            )
        raise ConfigError(f"test=true, but no clip of the {len(clips)} falls in the test split ({why})")
    if cfg.get("test") and tested_alone:  # (another split than the run's)
        remedy = "test it with the data settings it trained with"
        trained = from_anywhere(resumed.trained_spans, cfg.ckpt_path)  # (a trained file's other spans are held out)
        datamodule.splits["test"], _ = held_out(datamodule.splits["test"], "test", trained, remedy)
        if resumed.eval_window not in (None, datamodule.eval_window_seconds):
            log.warning(
                "test-only: test windows of %g s (data.%s), the checkpoint's run tested in %g s: test/* compares "
                "only roughly with its run's (each window is scored from a fresh state; data.eval_window_seconds="
                "%.15g scores as it did)",
                datamodule.eval_window_seconds,
                datamodule.eval_window_key,
                resumed.eval_window,
                resumed.eval_window,
            )
    with others_stopped_on_ctrl_c(trainer):  # (between fit and test: inside them, Lightning does)
        return fit_and_test(cfg, datamodule, model, trainer, resumed_step)


def use_the_runs_split(cfg: DictConfig, split: dict[str, float] | None) -> None:
    """A checkpoint tested alone (``train=false``) scores its run's test split: ``data.*``'s split
    fractions become those its run recorded (``split``), as ``evaluate split=test`` takes them: the
    defaults drew another test split, mostly of files the run trained on."""
    changed = [f"data.{k}={cfg.data.get(k)} -> {v:g}" for k, v in (split or {}).items() if cfg.data.get(k) != v]
    if not changed:
        return
    with open_dict(cfg.data):
        cfg.data.update(split)
    log.info("test-only: the checkpoint's test files, as its run split them (%s)", ", ".join(changed))


def latest_scores(logged: dict, unscored: set[str]) -> dict[str, float]:
    """The metrics Lightning last logged, without those of the splits whose latest pass scored no token
    (``unscored``): Lightning keeps an earlier validation's, which the summary showed as the last one's."""
    stale = tuple(f"{split}/" for split in unscored)
    return {k: float(v) for k, v in logged.items() if not (stale and k.startswith(stale))}


def fit_and_test(cfg: DictConfig, datamodule, model, trainer: L.Trainer, resumed_step: int | None) -> dict:
    """The checked run: fits, tests, and says what it wrote (`run`)."""
    new_log_dirs = [d for lg in trainer.loggers if (d := lg.log_dir) and not os.path.exists(d)]
    if cfg.get("train", True):
        try:
            with first_process_marked():  # (Ctrl-C: `leave_ctrl_c_to_the_first_process`)
                trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        except SystemExit:  # Lightning ends an interrupted fit (Ctrl-C) with exit(1) after its shutdown
            if not trainer.interrupted:
                raise
        except Diverged as err:  # (a setting that cannot train: one line, exit 2, what was saved kept)
            error = ConfigError(str(err))
            error.trained = True
            raise error from None
        except (RuntimeError, ValueError) as err:  # resuming from a checkpoint of another model, or a damaged file
            if not cfg.get("ckpt_path") or not _does_not_fit(err):
                raise
            trained = trainer.global_step > (resumed_step or 0)
            if not trained:  # this attempt's empty log versions go
                for folder in new_log_dirs:
                    shutil.rmtree(folder, ignore_errors=True)
            error = checkpoint_does_not_fit(cfg.ckpt_path, _load_error(err), test_only=False)
            error.trained = trained  # (then its config record stays: `main`)
            raise error from None
    interrupted = trainer.interrupted  # (a test run afterwards resets it)
    terminated = interrupted and trainer.received_sigterm  # (a scheduler's SIGTERM, not Ctrl-C)
    metrics = latest_scores(trainer.callback_metrics, model.unscored)
    # the best weights and last.ckpt come from separate callbacks (conf/callbacks/model_checkpoint.yaml)
    ranking = next((c for c in trainer.checkpoint_callbacks if getattr(c, "best_model_path", "")), None)
    best = ranking.best_model_path if ranking else None
    if best and not Path(best).is_file():  # restored from a run that was moved or copied since
        best = None
    score = getattr(ranking, "best_model_score", None) if best else None  # (what made it the best)
    best_score = {ranking.monitor: float(score)} if score is not None and ranking.monitor else {}
    saver = next((c for c in trainer.checkpoint_callbacks if getattr(c, "last_model_path", "")), None)
    last, last_step = (saver.last_model_path, getattr(saver, "saved_step", None)) if saver else (None, None)
    if interrupted and not last and cfg.get("ckpt_path"):  # stopped before its first save: where it resumed from
        last, last_step = str(Path(cfg.ckpt_path).absolute()), resumed_step
    tested = None
    if cfg.get("test") and not interrupted:  # the best weights of this fit; without one, the checkpoint given
        tested = best if cfg.get("train", True) else cfg.get("ckpt_path")
        try:
            trainer.test(model, datamodule=datamodule, ckpt_path=tested)
        except (RuntimeError, ValueError) as err:  # a checkpoint of another model (test-only), or a damaged file
            if cfg.get("train", True) or not _does_not_fit(err):
                raise
            for folder in new_log_dirs:  # (this attempt's empty log versions)
                shutil.rmtree(folder, ignore_errors=True)
            raise checkpoint_does_not_fit(cfg.ckpt_path, _load_error(err), test_only=True) from None
        metrics |= latest_scores(trainer.callback_metrics, model.unscored)
        tested = str(Path(tested).absolute()) if tested else None
    return {
        "metrics": metrics,
        "run_dir": cfg.paths.output_dir,
        "mixer": model.backbone.mixer_name,
        "best_ckpt": best,
        "best_score": best_score,
        "last_ckpt": last,
        "last_ckpt_step": last_step,
        "step": trainer.global_step,
        "save_every": OmegaConf.select(cfg, "callbacks.last_checkpoint.every_n_train_steps"),
        "log_dirs": [lg.log_dir for lg in trainer.loggers],
        "interrupted": interrupted,
        "terminated": terminated,
        "global_zero": trainer.is_global_zero,
        "resumed": bool(cfg.get("ckpt_path")),
        "trained": bool(cfg.get("train", True)),
        "tested_ckpt": tested,
        "unscored": sorted(model.unscored),
        "failed_when_read": datamodule.failed_when_read(),
        "skip_list": datamodule.skips.path if datamodule.skips else None,
        "validation_off": trainer.limit_val_batches == 0,
        "val_every": trainer.val_check_interval,
        "batches": trainer.fit_loop.epoch_loop.batch_progress.total.processed,  # (not one a Ctrl-C cut short)
        "cost": _cost(trainer) if cfg.get("train", True) else {},
    }


def _cost(trainer: L.Trainer) -> dict[str, float]:
    """What the run's training cost, to compare runs by (a sweep's table): its mean throughput and its
    minutes, validation included, a resumed run's before it too (`Throughput`; none where that callback
    is off or the fit was interrupted)."""
    meter = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
    if meter is None or meter.mean_tokens_per_s is None:
        return {}
    return {"train tokens/s": meter.mean_tokens_per_s, "fit minutes": meter.fit_minutes}


def _does_not_fit(err: BaseException) -> bool:
    """Whether torch's error says that a checkpoint does not fit the model, or is damaged (`RESUME_ERRORS`)."""
    return any(s in str(err) for s in RESUME_ERRORS)


def _load_error(err: BaseException) -> str:
    """What torch's load error says differs (its first line that is not a heading), at most 200 characters."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    first = next((line for line in lines if not line.endswith(":")), lines[0] if lines else type(err).__name__)
    return first if len(first) <= 200 else first[:200] + " ..."


def report(out: dict) -> None:
    """The run's summary, from the first process only; exit status 130 when it was interrupted (Ctrl-C),
    143 when it was terminated (SIGTERM, as schedulers stop jobs), as shells report those signals."""
    status = 143 if out.get("terminated") else 130
    if not out.get("global_zero", True):
        if out.get("interrupted"):
            sys.exit(status)
        return
    shown = {k: out["metrics"][k] for k in sorted(out["metrics"]) if k.startswith(("val/", "test/"))}
    if out["best_ckpt"]:
        best = str(out["best_ckpt"]) + "".join(f" ({k} {v:.4f})" for k, v in out.get("best_score", {}).items())
    elif any(k.startswith("val/") for k in shown):  # (fast_dev_run validates but saves nothing)
        best = "none (this run saves no checkpoints)"
    elif "val" in out.get("unscored", ()):
        best = "none (validation ran but scored no token: see the log and the skip list)"
    elif out.get("validation_off"):
        best = "none (validation is off: data.val_fraction=0)"
    else:
        best = "none (no validation has run" + _validation_interval(out) + ")"
    logs = ", ".join(str(d) for d in out["log_dirs"] if d) or "none (this run keeps no logs)"
    if (
        out.get("resumed")
        and out["best_ckpt"]
        and not Path(out["best_ckpt"]).resolve().is_relative_to(Path(out["run_dir"]).resolve())
    ):
        best += " (in the run this one resumed: this run has saved no validated checkpoint yet)"
    if out.get("trained", True):
        checkpoints = [
            "last checkpoint: " + (str(out["last_ckpt"]) if out["last_ckpt"] else _no_last(out)),
            "best checkpoint: " + best,
        ]
        if any(k.startswith("test/") for k in shown):  # (the best checkpoint's weights, where there is one)
            checkpoints.append("tested:          " + (out.get("tested_ckpt") or "the weights training ended with"))
    else:  # (a test-only run saves nothing: its folder's checkpoints are those of the run it tested)
        checkpoints = ["tested:          " + (out.get("tested_ckpt") or "the model as initialised (no ckpt_path)")]
    lines = [
        "run directory:   " + str(out["run_dir"]),
        *checkpoints,
        "logs:            " + logs,
        *(f"{k}: {v:.4f}" for k, v in shown.items()),
        *_cost_line(out.get("cost") or {}),
        *_failed_mid_run(out),
    ]
    print("\n".join(lines), flush=True)
    to_log_file("\n".join(lines))
    if out.get("interrupted"):
        how = "terminated (SIGTERM)" if out.get("terminated") else "interrupted"
        line = f"{how} at step {out['step']}: " + _how_to_resume(out)
        print(line, file=sys.stderr, flush=True)
        to_log_file(line, logging.WARNING)
        sys.exit(status)


def _cost_line(cost: dict[str, float]) -> list[str]:
    """The summary's line on what the run's training cost (`_cost`)."""
    if not cost:
        return []
    minutes = cost["fit minutes"]
    took = f"{minutes:.1f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"
    speed = f"{cost['train tokens/s']:.0f} tokens/s"
    return [f"training:        {speed} (its mean, validation left out), {took} in all"]


def _failed_mid_run(out: dict) -> list[str]:
    """The summary's line on files left out after the data was listed, as they failed when read; those
    of validation change what its later passes average over."""
    failed = out.get("failed_when_read") or {}
    if not (count := sum(map(len, failed.values()))):
        return []
    line = f"failed mid-run:  {count} file{'s' * (count > 1)}"
    if val := failed.get("val"):
        names = ", ".join(map(one_line, val[:NAMED_FILES])) + (", ..." if len(val) > NAMED_FILES else "")
        line += f" ({'' if len(val) == count else f'{len(val)} of them '}validation's: {names})"
    if out.get("skip_list"):
        line += f", {'each ' * (count > 1)}with its reason in {out['skip_list']}"
    if val:
        line += "; validations before and after a file failed scored different files: val/* compare only roughly"
    return [line]


def _validation_interval(out: dict) -> str:
    """Why a run ended before its first validation, where the interval says so (a short run)."""
    every, batches = out.get("val_every"), out.get("batches")
    if type(every) is not int or batches is None or batches >= every:
        return ""
    return (
        f": it comes every {every} training batches, trainer.val_check_interval, and this run ended at batch {batches}"
    )


def _no_last(out: dict) -> str:
    if out.get("interrupted") and out.get("save_every"):
        return "none (interrupted before the first save)"
    return "none (this run saves no checkpoint to resume from)"


def _how_to_resume(out: dict) -> str:
    """What an interrupted run can resume from, and what resuming trains again: last.ckpt is saved every
    few steps, not when the run is stopped (a Ctrl-C may fall inside an optimizer step)."""
    if not out["last_ckpt"]:
        every = out.get("save_every")
        when = f" (every {every} steps: callbacks.last_checkpoint.every_n_train_steps)" if every else ""
        again = (
            f"; to run this sweep job again (it joins the sweep's results): {rerun}"
            if (rerun := rerun_this_job())
            else ""
        )
        return f"no checkpoint was saved{when}, so there is nothing to resume from{again}"
    line = f"resume with {resume_this_run(out['last_ckpt'])}"
    saved = out.get("last_ckpt_step")
    if saved is not None and out["step"] >= saved:
        lost = out["step"] - saved
        since = "no step is" if lost == 0 else "the step since is" if lost == 1 else f"the {lost} steps since are"
        line += f" (saved at step {saved}: {since} trained again)"
    return line


@hydra_command("train")
def main(cfg: DictConfig) -> dict:
    """Trains as configured; returns the run's metrics, folder and best checkpoint (what a sweep's
    results table shows: `ttt_mm.tasks.sweep_report`)."""
    leave_ctrl_c_to_the_first_process()  # (train.py does it before its imports; ``python -m`` gets here)
    lightning_logs_to_file()
    quiet_lightning(resuming=bool(cfg.get("ckpt_path")))
    with config_errors_end_the_command(cfg=cfg):
        try:
            out = run(cfg)
        except CONFIG_ERRORS as err:
            if not getattr(err, "trained", False):  # (refused before it trained: no record of a resume)
                forget_refused_resume()
            raise
        except Exception as exc:
            line = where_to_resume(cfg, exc)
            if line and (process_rank() == 0 or WORKER_DIED in line):  # (each rank's own workers)
                print(line, file=sys.stderr, flush=True)
                to_log_file(line, logging.ERROR)
            raise
        report(out)
    log.debug("resolved config:\n%s", OmegaConf.to_yaml(cfg))
    return {k: out[k] for k in ("metrics", "run_dir", "best_ckpt", "best_score", "cost", "mixer")}


if __name__ == "__main__":
    main()
