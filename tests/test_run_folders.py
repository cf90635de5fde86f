"""Which folder a resumed or tested checkpoint's run writes to, and where its config is recorded."""

from __future__ import annotations

import inspect
import re
from datetime import datetime
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationKeyError

from ttt_mm.callbacks import ProgressBar
from ttt_mm.messages.progress import LINE_SECONDS
from ttt_mm.tasks.common import CONF_DIR
from ttt_mm.tasks.overrides import as_typed
from ttt_mm.tasks.run_folders import (
    _STAMPED,
    RUN_STAMP,
    config_subdir_of,
    later_last_checkpoint,
    later_step_checkpoints,
    run_dir_of,
)


def test_a_checkpoint_resumes_in_its_run_only_from_the_runs_checkpoints_folder(tmp_path):
    in_run = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("{}")
    assert (run_dir_of(in_run, "new"), config_subdir_of(in_run, "T", str(tmp_path / "run"))) == (
        str(tmp_path / "run"),
        ".hydra/resumed-T",
    )
    run = str(tmp_path / "run")  # (the folder the run, or a sweep's job resumed into it, writes to)
    assert config_subdir_of(in_run, "T", run, False) == ".hydra/tested-T"  # (train=false test=true)
    assert config_subdir_of(in_run, "T", str(tmp_path / "sweep" / "3")) == ".hydra"  # a new job of a sweep
    for elsewhere in ("models/ttt.ckpt", "models/checkpoints/ttt.ckpt"):  # the user's own folders, not runs
        path = str(tmp_path / elsewhere)
        assert (run_dir_of(path, "new"), config_subdir_of(path, "T", "new")) == ("new", ".hydra")
    assert (run_dir_of(None, "new"), config_subdir_of(None, "T", "new")) == ("new", ".hydra")


def test_hydras_record_of_overrides_is_read_as_typed_an_interpolation_unresolved():
    """Read item by item, ``a=${b}`` was resolved against Hydra's own config, which has no ``b``: every
    command given an interpolation failed where it listed its overrides (a resume command, say)."""
    record = OmegaConf.create({"overrides": {"task": ["seed=1", "data.val_seconds=${data.clip_seconds}"]}})
    with pytest.raises(InterpolationKeyError):
        list(record.overrides.task)
    assert as_typed(record.overrides.task) == ["seed=1", "data.val_seconds=${data.clip_seconds}"]
    assert as_typed(None) == []


def test_the_best_checkpoints_a_run_saved_after_a_step_are_found_by_their_names(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (tmp_path / "run" / ".hydra").mkdir()
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("{}\n")
    for name in ("step000020.ckpt", "step000030.ckpt", "step000030-v1.ckpt", "step000010.ckpt", "last.ckpt", "x.ckpt"):
        (checkpoints / name).write_bytes(b"")
    later = later_step_checkpoints(str(checkpoints / "step000020.ckpt"), 20)
    assert [p.name for p in later] == ["step000030-v1.ckpt", "step000030.ckpt"]
    assert later_step_checkpoints(str(tmp_path / "elsewhere.ckpt"), 0) == []  # (kept outside a run)


def test_a_resume_from_an_earlier_checkpoint_of_its_run_names_the_later_last_one(tmp_path):
    """Resumed in its run's folder from step 100 while last.ckpt was at step 120, the run replaced the
    later one with its saves, and nothing said so."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("{}\n")
    (run / "checkpoints").mkdir()
    earlier, last = run / "checkpoints" / "step000100.ckpt", run / "checkpoints" / "last.ckpt"
    torch.save({"global_step": 100}, earlier)
    torch.save({"global_step": 120}, last)
    folder = str(run / "checkpoints")  # (where the resume saves: its run's folder)
    assert later_last_checkpoint(str(earlier), 100, None) is None  # (a resume that saves none: callbacks=none)
    assert later_last_checkpoint(str(earlier), 100, str(tmp_path / "elsewhere")) is None  # (another run folder)
    assert later_last_checkpoint(str(earlier), 100, folder) == (last, 120)
    assert later_last_checkpoint(str(last), 120, folder) is None  # (the one resumed)
    torch.save({"global_step": 90}, last)
    assert later_last_checkpoint(str(earlier), 100, folder) is None  # (not later)
    last.write_bytes(b"not a checkpoint")
    assert later_last_checkpoint(str(earlier), 100, folder) is None
    elsewhere = tmp_path / "step000100.ckpt"  # (kept outside a run: resumed into a run folder of its own)
    torch.save({"global_step": 100}, elsewhere)
    assert later_last_checkpoint(str(elsewhere), 100, folder) is None


def test_every_run_folder_stamp_in_the_configs_is_the_one_the_code_recognises():
    """The stamp is written in the configs and read in Python (a refused run deletes only a folder so
    named, a record set aside is named so): one edited without the other would stop both, unsaid."""
    stamps = {m for path in Path(CONF_DIR).rglob("*.yaml") for m in re.findall(r"\$\{now:([^}]*)\}", path.read_text())}
    assert stamps == {RUN_STAMP}
    assert _STAMPED.fullmatch(datetime(2026, 1, 2, 3, 4, 5, 60).strftime(RUN_STAMP))


def test_the_progress_lines_default_interval_is_the_one_the_code_uses():
    configured = OmegaConf.load(Path(CONF_DIR, "callbacks", "progress_bar.yaml"))
    assert OmegaConf.select(configured, "progress_bar.line_seconds") == LINE_SECONDS
    assert inspect.signature(ProgressBar).parameters["line_seconds"].default == LINE_SECONDS
