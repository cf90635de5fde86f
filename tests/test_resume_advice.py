"""What a stopped or refused training run says to do next: the command that resumes it (with the
overrides that trained it), and the file a dead loader worker was reading (the end-to-end runs are in
``tests/test_train.py``)."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ttt_mm.data import reading_notes
from ttt_mm.data.skiplist import SkipList
from ttt_mm.tasks.command_lines import config_flags
from ttt_mm.tasks.common import CONF_DIR
from ttt_mm.tasks.resume_advice import resume_command, where_to_resume, with_its_overrides


def test_a_checkpoint_that_does_not_fit_the_overrides_that_trained_it_is_said_to_be_damaged(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("{}")
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- model=lact\n- ckpt_path=/earlier.ckpt\n")
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert with_its_overrides(ckpt, ["model=lact", f"ckpt_path={ckpt}"], test_only=False) == (
        "the overrides that trained it are this run's: it is damaged, or from another version of ttt-mm"
    )
    said = with_its_overrides(ckpt, ["model=attention", f"ckpt_path={ckpt}"], test_only=False)
    assert (
        said == f"resume with the overrides that trained it: python -m ttt_mm.tasks.train model=lact ckpt_path={ckpt}"
    )
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- model=lact\n- trainer.max_steps=20\n")
    assert "it is damaged" in with_its_overrides(ckpt, ["model=lact", "trainer.max_steps=30"], test_only=False)
    longer = with_its_overrides(ckpt, ["model=attention", "trainer.max_steps=30"], test_only=False)
    assert longer.endswith(f"python -m ttt_mm.tasks.train model=lact trainer.max_steps=30 ckpt_path={ckpt}")
    tested = with_its_overrides(ckpt, ["model=attention", "trainer.max_steps=30"], test_only=True)
    assert tested.endswith("train model=lact trainer.max_steps=20 train=false test=true ckpt_path=" + str(ckpt))
    # the run was resumed to 30 steps and its checkpoint saved past 20: the run's own 20 would be refused
    for stamp, steps in (("2026-01-01_10-00-00-000000", 30), ("2026-01-02_10-00-00-000000", None)):
        (tmp_path / ".hydra" / f"resumed-{stamp}").mkdir()
        resumed = f"- model=lact\n- ckpt_path={ckpt}\n" + (f"- trainer.max_steps={steps}\n" if steps else "")
        (tmp_path / ".hydra" / f"resumed-{stamp}" / "overrides.yaml").write_text(resumed)
    again = with_its_overrides(ckpt, ["model=attention", f"ckpt_path={ckpt}"], test_only=False)
    assert again.endswith(f"python -m ttt_mm.tasks.train model=lact trainer.max_steps=30 ckpt_path={ckpt}")
    # a resume tests at its end as this command asks, else as the run did (test=true was dropped)
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- model=lact\n- test=true\n")
    said = with_its_overrides(ckpt, ["model=attention", f"ckpt_path={ckpt}"], test_only=False)
    assert said.endswith(f"train model=lact trainer.max_steps=30 test=true ckpt_path={ckpt}")
    said = with_its_overrides(ckpt, ["model=attention", "test=false"], test_only=False)
    assert said.endswith(f"train model=lact trainer.max_steps=30 test=false ckpt_path={ckpt}")


def test_the_resume_command_repeats_the_runs_overrides():
    """A run resumes only with the settings that trained it: ``ckpt_path=`` alone was refused."""
    overrides = ["data=audio_folder", "data.root=/my media", "ckpt_path=/old/last.ckpt", "+tag=x"]
    assert resume_command("/run/last.ckpt", overrides, "train.py") == (
        "python train.py data=audio_folder 'data.root=/my media' +tag=x ckpt_path=/run/last.ckpt"
    )
    assert resume_command("/run/last.ckpt", [], "/repo/ttt_mm/tasks/train.py") == (
        "python -m ttt_mm.tasks.train ckpt_path=/run/last.ckpt"
    )
    in_a_clone = resume_command("/run/last.ckpt", [], "/my code/ttt_mm/train.py")  # (a clone named as the package)
    assert in_a_clone == "python '/my code/ttt_mm/train.py' ckpt_path=/run/last.ckpt"
    said = resume_command("/s, 1/0/last.ckpt", ["seed=1"], "train.py", ("/s, 1", "0"))  # a sweep's job
    assert said == (
        "python train.py -m seed=1 \"hydra.sweep.dir='/s, 1'\" hydra.sweep.subdir=0 \"ckpt_path='/s, 1/0/last.ckpt'\""
    )
    again = resume_command(None, ["seed=1"], "train.py", ("/s", "2"))  # (a job stopped before its first save)
    assert again == "python train.py -m seed=1 hydra.sweep.dir=/s hydra.sweep.subdir=2"
    relative = resume_command("/s/0/last.ckpt", ["seed=1"], "train.py", ("logs/s", "0"))  # (a sweep's folder as given)
    assert f"hydra.sweep.dir={Path('logs/s').absolute()} " in relative  # (it resumed into another folder elsewhere)
    overrides = OverridesParser.create().parse_overrides(shlex.split(said)[3:])  # (a comma: a sweep, unquoted)
    assert [(o.key_or_group, o.value()) for o in overrides] == [
        ("seed", 1),
        ("hydra.sweep.dir", "/s, 1"),
        ("hydra.sweep.subdir", 0),
        ("ckpt_path", "/s, 1/0/last.ckpt"),
    ]


def _hydra_record(config_dir: str, name: str = "train", searchpath: str | None = None) -> dict:
    """What Hydra records of a run (``.hydra/hydra.yaml``'s ``hydra`` node) started with ``--config-dir``."""
    sources = [
        {"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
        {"path": CONF_DIR, "schema": "file", "provider": "main"},
        {"path": config_dir, "schema": "file", "provider": "command-line"},
    ]
    hydras = ["hydra.run.dir=/x", *([f"hydra.searchpath=[file://{searchpath}]"] if searchpath else [])]
    return {"runtime": {"config_sources": sources}, "overrides": {"hydra": hydras}, "job": {"config_name": name}}


def test_a_run_configured_from_the_users_config_folder_is_resumed_from_it(tmp_path):
    """Every printed command dropped ``--config-dir`` (and ``hydra.searchpath``): pasted, it failed with
    "could not find 'experiment/my_speech'"."""
    flags = config_flags(OmegaConf.create(_hydra_record("/my confs", "mine", searchpath="/more")))
    assert flags == ["--config-dir", "'/my confs'", "'hydra.searchpath=[file:///more]'", "--config-name", "mine"]
    assert config_flags(OmegaConf.create(_hydra_record("/c"))) == ["--config-dir", "/c"]  # (train: ttt-mm's own)
    assert config_flags(OmegaConf.create({"job": {"config_name": "train"}})) == []
    primary = _hydra_record("/c")  # (-cp /mine -cn <name>: the primary config from the user's folder)
    primary["runtime"]["config_sources"][1]["path"] = "/mine"
    for name in ("mine", "train"):  # (train: the user's own train.yaml, the folder decides which)
        primary["job"]["config_name"] = name
        assert config_flags(OmegaConf.create(primary)) == [
            "--config-dir",
            "/c",
            "--config-path",
            "/mine",
            "--config-name",
            name,
        ]
    copy = tmp_path / "older_checkout_conf"  # (a run of another checkout of ttt-mm: its conf is as good as this one)
    shutil.copytree(CONF_DIR, copy)
    primary["runtime"]["config_sources"][1]["path"] = str(copy)
    assert config_flags(OmegaConf.create(primary)) == ["--config-dir", "/c"]
    assert resume_command("/r/last.ckpt", ["experiment=mine"], "train.py", None, ["--config-dir", "/c"]) == (
        "python train.py --config-dir /c experiment=mine ckpt_path=/r/last.ckpt"
    )
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("{}")
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- experiment=mine\n")
    OmegaConf.save(OmegaConf.create({"hydra": _hydra_record("/c")}), tmp_path / ".hydra" / "hydra.yaml")
    said = with_its_overrides(tmp_path / "checkpoints" / "last.ckpt", ["model=attention"], test_only=False)
    assert said.endswith(f"train --config-dir /c experiment=mine ckpt_path={tmp_path}/checkpoints/last.ckpt")


def test_a_run_stopped_by_an_error_says_where_to_resume_and_names_a_dead_loader_worker(tmp_path):
    """A loader worker killed for memory ended the run with only PyTorch's "Connection reset by peer"."""
    cfg = OmegaConf.create({"callbacks": {"last_checkpoint": {"dirpath": str(tmp_path / "checkpoints")}}})
    assert where_to_resume(cfg, ValueError("a bug")) is None  # nothing to resume from, nothing to explain
    dead = where_to_resume(cfg, ConnectionResetError(104, "Connection reset by peer"))
    assert dead.startswith("training stopped by the error above (a data loader worker died") and "ckpt_path" not in dead
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    line = where_to_resume(cfg, RuntimeError("DataLoader worker (pid 12) is killed by signal: Killed."))
    assert "a data loader worker died" in line and line.endswith(
        f"; resume with ckpt_path={tmp_path}/checkpoints/last.ckpt"
    )
    assert where_to_resume(cfg, ValueError("a bug")) == (
        f"training stopped by the error above; resume with ckpt_path={tmp_path}/checkpoints/last.ckpt"
    )


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i):
        raise RuntimeError("none of the 4 clips can be read: 4 x the file changed since it was probed")


def test_an_error_a_loader_worker_raised_is_not_said_to_be_a_dead_worker(tmp_path):
    """Every file changed mid-run: the dataset's own error was said to be "a data loader worker died:
    killed for memory?"."""
    cfg = OmegaConf.create({"callbacks": {"last_checkpoint": {"dirpath": str(tmp_path)}}})
    (tmp_path / "last.ckpt").write_bytes(b"")
    error = _first_error(torch.utils.data.DataLoader(_Unreadable(), num_workers=1))
    assert "none of the 4 clips can be read" in str(error)
    assert where_to_resume(cfg, error) == (
        f"training stopped by the error above; resume with ckpt_path={tmp_path}/last.ckpt"
    )


def _first_error(loader) -> BaseException:
    """The error that ends reading ``loader`` (its workers shut down, and no frame kept alive)."""
    batches = iter(loader)
    try:
        while True:
            next(batches)
    except Exception as exc:
        caught = exc
    finally:
        batches._shutdown_workers()
    chained = caught
    while chained is not None:
        chained.__traceback__ = None
        chained = chained.__cause__ or chained.__context__
    return caught


def test_a_dead_workers_file_is_listed_only_when_a_decoder_crashed_on_it(tmp_path):
    """PyTorch names the worker's pid (and, behind its own error, the signal), never the file: the
    worker's note does. Only a crash is the file's doing: SIGKILL (memory) or SIGTERM (a scheduler)
    are not, and listing the file then would take a good file out of every resumed run."""
    skip_file = tmp_path / "skipped_media.tsv"
    cfg = OmegaConf.create({"data": {"skip_list": str(skip_file)}})

    def died(worker: int, signal_text: str) -> RuntimeError:
        Path(reading_notes._note(os.getpid(), worker)).write_text(f"/data/clip {worker}.mp4")
        try:
            try:
                raise RuntimeError(f"DataLoader worker (pid {worker}) is killed by signal: {signal_text}. ")
            except RuntimeError as handler:
                raise RuntimeError(f"DataLoader worker (pid(s) {worker}) exited unexpectedly") from handler
        except RuntimeError as exc:
            return exc

    assert where_to_resume(cfg, died(4242, "Segmentation fault")) == (
        "training stopped by the error above (a data loader worker died reading /data/clip 4242.mp4, decoder "
        f"crashed: SIGSEGV: listed in {skip_file}, so a resumed run passes over it)"
    )
    assert SkipList(skip_file).reasons == {"/data/clip 4242.mp4": "decoder crashed: SIGSEGV"}
    killed = where_to_resume(cfg, died(4243, "Killed"))
    assert killed.startswith(
        "training stopped by the error above (a data loader worker died reading /data/clip 4243.mp4 (SIGKILL: "
        "killed for memory?"
    ) and killed.endswith(
        f"if a resumed run dies on it again, list it in {skip_file} (a line: the path, a tab, a reason))"
    )
    assert "(SIGTERM: not a crash)" in where_to_resume(cfg, died(4244, "Terminated"))
    assert list(SkipList(skip_file).reasons) == ["/data/clip 4242.mp4"]
    Path(reading_notes._note(os.getpid(), 4245)).write_text("/data/clip 4245.mp4")
    reset = where_to_resume(cfg, ConnectionResetError(104, "Connection reset by peer"))  # no pid: the one note left
    assert "died reading /data/clip 4245.mp4 (how is not known: killed for memory?" in reset
    assert not glob.glob(reading_notes._note(os.getpid(), "*"))


@pytest.mark.parametrize("kind", ["windows", "stream", "evaluation"])
def test_every_dataset_notes_the_file_its_worker_reads(tmp_path, monkeypatch, kind):
    """Training windows, streamed windows and validation: the file whose read kills the worker is named."""
    from mediafiles import tone, write_wav

    from ttt_mm.data import datasets, training_order
    from ttt_mm.data.datasets import ReadSpec, SequentialWindows
    from ttt_mm.data.sources import ClipInfo
    from ttt_mm.data.training_order import StreamWindows, WindowDataset

    clips = [ClipInfo(str(write_wav(tmp_path / f"{k}.wav", tone(2.0, 16000), 16000))) for k in range(2)]
    bad = clips[0].name
    read = datasets.read_item

    def crash_on_bad(clip, *args):
        if clip.name == bad:
            os.kill(os.getpid(), signal.SIGSEGV)
        return read(clip, *args)

    monkeypatch.setattr(training_order, "read_item", crash_on_bad)
    monkeypatch.setattr(datasets, "read_item", crash_on_bad)
    spec = ReadSpec(("audio",))
    dataset, batch = {
        "windows": (lambda: WindowDataset(clips, 1.0, spec), 1),
        "stream": (lambda: StreamWindows(clips, 1.0, 1, spec), None),
        "evaluation": (lambda: SequentialWindows(clips, 1.0, spec), 1),
    }[kind]
    loader = torch.utils.data.DataLoader(dataset(), batch_size=batch, num_workers=1, timeout=60, collate_fn=len)
    line = where_to_resume(OmegaConf.create({}), _first_error(loader))
    assert f"a data loader worker died reading {bad}" in line
