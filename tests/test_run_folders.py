"""Which folder a resumed or tested checkpoint's run writes to, and where its config is recorded."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationKeyError

from ttt_mm.tasks.overrides import as_typed
from ttt_mm.tasks.run_folders import config_subdir_of, run_dir_of


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
