"""Which folder a resumed or tested checkpoint's run writes to, and where its config is recorded."""

from __future__ import annotations

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
