"""Config values checked against the constructors' annotations and the commands' shipped keys: every
shipped config passes, and a value of the wrong kind is one ConfigError naming its key."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from ttt_mm.tasks import config_types
from ttt_mm.tasks import embed as embed_task
from ttt_mm.tasks import linear_probe as linear_probe_task
from ttt_mm.tasks import train as train_task
from ttt_mm.tasks.command_keys import results_folder, sweep_job_folder
from ttt_mm.tasks.common import ConfigError
from ttt_mm.tasks.config_types import _fits, check_arguments, check_command_keys, check_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def composed(command: str, overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(command, overrides=overrides)


@pytest.fixture
def as_run():
    """Composes as a command line does: Hydra's runtime record (the overrides as typed) is set."""

    def compose_as_run(command: str, overrides: list[str]):
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose(command, overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield compose_as_run
    HydraConfig.instance().cfg = None


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_shipped_training_config_passes():
    checked = 0
    for experiment in [None, *options("experiment")]:
        for model in [None, *options("model")]:
            overrides = [f"experiment={experiment}"] if experiment else []
            check_config(composed("train", overrides + ([f"model={model}"] if model else [])), "train")
            checked += 1
    for group in ("data", "trainer", "logger", "callbacks", "size", "debug", "tokenizer"):
        for option in options(group):
            check_config(composed("train", [f"{group}={option}"]), "train")
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("command", ["embed", "linear_probe"])
def test_every_other_command_config_passes_as_shipped(command):
    check_config(composed(command, []), command)


def test_evaluate_keys_pass_as_shipped():  # (its data keys are checked once checkpoints fill them in)
    check_command_keys(composed("evaluate", []), "evaluate")


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.lr=abc", "model.lr must be a number; got 'abc'"),
        ("data.batch_size=abc", "data.batch_size must be a whole number; got 'abc'"),
        ("trainer.max_steps=1.5", "trainer.max_steps must be a whole number; got 1.5"),
        ("model.betas=[0.9,x]", "model.betas must be a list of 2 (a number each); got [0.9,'x']"),
        ("model.predict=foo", "model.predict must be one of 'next_token', 'next_step'; got 'foo'"),
        ("model.carry_state=1", "model.carry_state must be true or false; got 1"),
        ("model.backbone.mixer.mini_batch_size=x", "model.backbone.mixer.mini_batch_size must be a whole number"),
        ("trainer.precision=bf17", "trainer.precision must be one of 64, 32, 16, 'transformer-engine'"),
        ("seed=abc", "seed must be a whole number; got 'abc'"),
        ("model.backbone.dim=1.5", "tokenizer.dim (= ${model.backbone.dim}) must be a whole number; got 1.5"),
        ("trainer.max_steps=1e5", "trainer.max_steps must be a whole number; got 100000.0 (a number with a decimal"),
        ("data.modalities=audio", "data.modalities must be a list (of a string each); got 'audio'"),
        ("train=yes", "train must be true or false; got 'yes'"),
        (
            "data=audio_folder data.root=2024",
            """data.root must be a string or null; got 2024 (to give a name or path that reads as a number, """
            """quote it: data.root="'<as typed>'")""",
        ),
    ],
)
def test_a_training_value_of_the_wrong_kind_names_its_key(override, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_config(composed("train", override.split()), "train")


def test_a_key_of_the_users_own_that_a_value_reads_is_taken_however_like_a_command_key(as_run, tmp_path):
    """``+exp=foo`` for ``hydra.run.dir=runs/${exp}`` was refused as a misspelled ``experiment`` (and
    ``+name`` as ``task_name``), against the README's ``+tag`` example; unread, it still is."""
    for key in ("exp", "name"):
        run = [f"+{key}=foo", f"hydra.run.dir=runs/${{{key}}}", f"paths.output_dir={tmp_path}"]
        check_config(as_run("train", run), "train")  # no error
    with pytest.raises(ConfigError, match=r"^\+exp: exp is not a key of this command; did you mean experiment\?$"):
        check_config(as_run("train", ["+exp=foo"]), "train")


def test_a_key_added_to_a_node_of_plain_settings_close_to_one_of_its_keys_names_it(as_run, tmp_path):
    """``+paths.log_dirr=x`` ran (a real training run) as if not given: only nodes that build an object
    had their keys checked. One of the user's own (``+paths.media``), or one a value reads, is taken."""
    with pytest.raises(
        ConfigError, match=r"^\+paths.log_dirr: paths has no key log_dirr; did you mean paths.log_dir\?$"
    ):
        check_config(as_run("train", ["+paths.log_dirr=x"]), "train")
    for run in (["+paths.media=/m"], ["+paths.log_dirr=x", "hydra.run.dir=${paths.log_dirr}/r"]):
        check_config(as_run("train", [*run, f"paths.output_dir={tmp_path}"]), "train")  # no error


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "+data.clip_second=4",
            "data.clip_second is not a setting of MediaDataModule; did you mean data.clip_seconds?",
        ),
        ("+trainer.max_step=5", "trainer.max_step is not a setting of Trainer; did you mean trainer.max_steps?"),
        ("+model.backbone.mixer.mini_batch=8", "model.backbone.mixer.mini_batch is not a setting of TTTLayer; did"),
        ("+data.xyzzy=1", "data.xyzzy is not a setting of MediaDataModule"),
    ],
)
def test_a_key_added_to_a_built_node_that_its_class_does_not_take_names_the_closest(override, message, as_run):
    """Hydra suggests ``+`` for a key it does not know: the constructor's TypeError said only that (and
    a ``+data.*`` typo to train was once answered as if train, like embed, had no data settings)."""
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_config(as_run("train", [override]), "train")


def test_a_key_of_the_users_own_that_nothing_reads_is_said_to_change_nothing(as_run, caplog, monkeypatch):
    """``+foo=1`` (like none of the command's keys) ran as if not given, without a word."""
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.config_types"):
        check_config(as_run("embed", ["ckpt=a.ckpt", "+foo=1", "+tag=x", "output=/out/${tag}", "+seeds=[1]"]), "embed")
    assert caplog.messages == [
        "+foo: foo is no key of this command, and nothing in its config reads it (as ${foo}): it changes nothing",
        "+seeds: seeds is no key of this command, and nothing in its config reads it (as ${seeds}): it changes nothing",
    ]  # (+tag is read: the output folder's name)
    caplog.clear()
    monkeypatch.setattr(config_types, "process_rank", lambda: 1)  # (DDP's other processes: said once, by the first)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.config_types"):
        check_config(as_run("embed", ["ckpt=a.ckpt", "+foo=1"]), "embed")
    assert caplog.messages == []


@pytest.mark.parametrize(
    "option,text,message",
    [
        (
            "experiment/mine",
            "trainer:\n  max_steps: 3\n",
            "experiment=mine put its settings under experiment.*, where nothing reads them: begin its file "
            "(experiment/mine.yaml) with the line  # @package _global_  as ttt-mm's own experiment configs do",
        ),
        (
            "size/mine",
            "dim: 64\n",
            "size=mine put its settings under size.*, where nothing reads them: begin its "
            "file (size/mine.yaml) with the line  # @package model.backbone  as ttt-mm's own size configs do",
        ),
        (
            "experiment/mine",
            "# @package _global_\ncpu_thread: 1\n",
            "cpu_thread (set in a config file) is not a key of this command; did you mean cpu_threads?",
        ),
    ],
)
def test_a_users_config_file_without_its_package_line_or_with_a_mistyped_key_is_refused(
    option, text, message, as_run, tmp_path
):
    """Both ran as if the file had not been written: a config of the user's own (``--config-dir``)."""
    (tmp_path / option).parent.mkdir(parents=True)
    (tmp_path / f"{option}.yaml").write_text(text)
    cfg = as_run("train", [f"hydra.searchpath=[file://{tmp_path}]", option.replace("/", "=")])
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        check_config(cfg, "train")


@pytest.mark.parametrize("variant", ["transformer", "mamba"])
def test_the_readmes_mixer_config_template_builds_the_variant_asked_for(variant, as_run, tmp_path):
    """The template left out use_gate and share_qk: with variant=mamba a config made from it got the
    pre-conv alone, without a word."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (template,) = re.findall(r"```yaml\n(# a mixer config, conf/model/.*?)```", readme, re.S)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text(template)
    overrides = [f"hydra.searchpath=[file://{tmp_path}]", "model=mine", f"model.backbone.variant={variant}"]
    mixer = as_run("train", overrides).model.backbone.mixer
    assert mixer.inner == "mlp" and mixer.use_gate is mixer.share_qk is (variant == "mamba")


def test_a_group_node_added_on_the_command_line_is_not_blamed_on_the_groups_option(as_run):
    """``+size.dim=64`` would have been told that size=small lacks its package line."""
    assert check_command_keys(as_run("train", ["+size.dim=64"]), "train") is None  # (its own: a + key)


def test_a_key_of_a_users_config_file_that_nothing_reads_is_said_to_change_nothing(as_run, tmp_path, caplog):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nmy_note: hello\n")
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.config_types"):
        check_command_keys(as_run("train", [f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine"]), "train")
    assert caplog.messages == ["my_note: a config file sets it, but it is no key of this command and nothing reads it"]


@pytest.mark.parametrize(
    "value,reads",
    [
        ("${tag}", True),
        ("runs/${tag.a}", True),
        ("${..tag}", True),  # (relative)
        ("${oc.select:tag,x}", True),
        ("${results_dir:${tag},x}", True),
        ("${tags}", False),
        ("${tag-b}", False),
        ("${tag:%Y}", False),  # (a resolver of that name)
        ("${oc.env:tag}", False),  # (an environment variable)
        ("\\${tag}", False),  # (escaped)
    ],
)
def test_which_interpolations_read_a_key_of_the_users_own(value, reads):
    assert config_types._interpolated("tag", OmegaConf.create({"a": {"b": value}})) is reads


def test_a_tokenizer_key_added_to_evaluate_is_refused_as_the_checkpoints_own(as_run):
    """Evaluate composes a placeholder tokenizer group (each checkpoint's is used): a key added to it would
    be read past."""
    with pytest.raises(ConfigError, match=r"^\+tokenizer.patchh: this command has no tokenizer settings"):
        check_command_keys(as_run("evaluate", ["ckpt=a.ckpt", "+tokenizer.patchh=8"]), "evaluate")


def test_a_key_added_that_its_class_takes_is_accepted():
    check_config(composed("train", ["+trainer.detect_anomaly=false", "+data.index_cache=/tmp/x"]), "train")
    with pytest.raises(ConfigError, match="detect_anomalyy"):  # (the same key misspelled: refused)
        check_config(composed("train", ["+trainer.detect_anomalyy=false"]), "train")


@pytest.mark.parametrize(
    "command,override,message",
    [
        ("evaluate", "plots=no", "plots must be true or false; got 'no'"),
        ("evaluate", "rollout_steps=abc", "rollout_steps must be a whole number; got 'abc'"),
        ("evaluate", "edge_fraction=abc", "edge_fraction must be a number; got 'abc'"),
        ("linear_probe", "folds=abc", "folds must be a whole number; got 'abc'"),
        ("linear_probe", "baselines=logmel", "baselines must be a list (of a string each); got 'logmel'"),
        ("linear_probe", "l2=x", "l2 must be a number or a list (of a number each); got 'x'"),
        ("linear_probe", "l2=[0.1,x]", "l2 must be a number or a list (of a number each); got [0.1,'x']"),
        ("embed", "layer=1.5", "layer must be a whole number; got 1.5"),
    ],
)
def test_a_command_key_of_the_wrong_kind_names_it(command, override, message):
    kinds = linear_probe_task.KEY_KINDS if command == "linear_probe" else None
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_command_keys(composed(command, [override]), command, kinds)


def test_one_l2_strength_passes_the_check_of_linear_probes_keys():
    """``l2=0.01``, as the README and config say, was refused: "l2 must be a list (of a number each)"."""
    for given in ("l2=0.01", "l2=1", "l2=[0.1,1]"):
        check_command_keys(composed("linear_probe", [given]), "linear_probe", linear_probe_task.KEY_KINDS)


@pytest.mark.parametrize(
    "override,message",
    [
        ("hop_seconds=abc", "hop_seconds must be a number or null; got 'abc'"),
        ("window_seconds=[1]", "window_seconds must be a number or null; got [1]"),
        ("pool=median", "pool must be one of 'mean', 'max', 'mean_std' or null; got 'median'"),
    ],
)
def test_embed_checks_its_embedder_keys_before_reading_anything(override, message, tmp_path):
    cfg = composed("embed", [f"ckpt={tmp_path / 'absent.ckpt'}", "input=absent", "output=y", override])
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        embed_task.run(cfg)


def test_thread_counts_are_whole_numbers_from_one_or_null(tmp_path):
    message = "must be a whole number >= 1 (or null for torch's default); got"
    with pytest.raises(ConfigError, match=re.escape(f"cpu_threads {message} 'abc'")):
        train_task.run(composed("train", [f"paths.output_dir={tmp_path}", "cpu_threads=abc"]))
    with pytest.raises(ConfigError, match=re.escape(f"threads {message} 0")):
        embed_task.run(composed("embed", ["ckpt=a.ckpt", "input=x", f"output={tmp_path}", "threads=0"]))


@pytest.mark.parametrize(
    "value,hint,fits",
    [
        (3, float, True),
        (True, float, False),
        (True, int, False),
        (1, bool, False),
        (None, int | None, True),
        (None, int, False),
        ("a", str | Path, True),
        ([1, 2], list[int], True),
        ([1, "x"], list[int], False),
        (1, list[int], False),
        ("ab", Sequence[str], False),  # a string would be read one character at a time
        ([1.0], tuple[float, float], False),
        ([1.0, 2], tuple[float, float], True),
        (16, Literal[16, 32], True),
        (16.0, Literal[16, 32], False),
        ("16", Literal[16, 32], False),
        ("x", Path, True),
        (1, Path, False),
        ("x", Mapping, False),
        ({"a": 1}, Mapping, True),
        ("cuda", object, None),  # a class a config cannot hold: left to the constructor
        ("cuda", int | object, None),
        (["x", 1], list[object], None),
        (["x", 1], list[str | object], None),
    ],
)
def test_what_a_plain_annotation_takes(value, hint, fits):
    assert _fits(value, hint) is fits


def test_a_path_that_also_takes_a_string_reads_as_a_path():
    def open_it(where: str | Path | None = None):
        return where

    with pytest.raises(ConfigError, match=r"^where must be a path or null; got 3 \(to give a name or path that"):
        check_arguments(open_it, {"where": 3})


def test_arguments_the_annotations_leave_open_are_left_to_the_call():
    def build(size: int, device=None, mode: object = None, count: int = None, later: NotImported = None):  # noqa: F821, RUF013
        return size, device, mode, count, later

    check_arguments(build, {"device": 3, "mode": "x", "count": None, "later": 1, "other": "y"})
    with pytest.raises(ConfigError, match="^run.size must be a whole number; got 'big'$"):
        check_arguments(build, {"size": "big", "later": 1}, "run")  # one unresolvable name leaves the rest checked


@pytest.mark.slow
def test_a_wrong_kind_of_value_ends_training_in_one_line_before_anything_is_built(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "model.lr=abc", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: model.lr must be a number; got 'abc'"
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_an_interpolation_of_a_key_that_is_not_there_ends_training_in_one_line_and_leaves_no_run_folder(tmp_path):
    """It ended in a 67-line traceback through OmegaConf, and left a run folder holding only its log:
    Hydra's record of the overrides, read item by item, resolved ``${data.clip_second}`` itself."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "data.eval_window_seconds=${data.clip_second}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: data.eval_window_seconds: ${data.clip_second} names no key of this command's config (an "
        "interpolation reads another key's value); did you mean ${data.clip_seconds}?"
    )
    assert not list((tmp_path / "logs" / "train" / "runs").glob("*"))


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "model.backbone.mixer._target_=ttt_mm.layers.TTTLayr",
            "model.backbone.mixer._target_: ttt_mm.layers has no TTTLayr; did you mean ttt_mm.layers.TTTLayer?",
        ),
        (
            "data.source._target_=ttt_mm.data.sources.FolderSorce",
            "data.source._target_: ttt_mm.data.sources has no FolderSorce; did you mean "
            "ttt_mm.data.sources.FolderSource?",
        ),
        (
            "model.backbone.mixer._target_=nothere.X",
            "model.backbone.mixer._target_: nothere.X cannot be imported: ModuleNotFoundError: No module named "
            "'nothere'",
        ),
    ],
)
def test_a_target_that_names_nothing_is_refused_with_its_key_and_the_closest_name(override, message):
    """It was "No module named 'ttt_mm.layers.TTTLayr' (config key 'model')", after four lines of Hydra's
    logged error; a class misspelled in a module read as "'ttt_mm.data.sources' is not a package"."""
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        check_config(composed("train", [override]), "train")


def test_a_target_whose_module_fails_to_import_says_why(tmp_path, monkeypatch):
    """A failure inside the target's own package was said to be a name it lacks; a hand-raised
    ImportError (an optional dependency's guard) lost its words."""
    (tmp_path / "broken_mod.py").write_text("import no_such_dependency\nclass X: pass\n")
    (tmp_path / "guarded").mkdir()
    (tmp_path / "guarded" / "__init__.py").write_text("raise ImportError('needs libfoo >= 2')\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub.py").write_text("from pkg import nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for target, said in [
        ("broken_mod.X", "ModuleNotFoundError: No module named 'no_such_dependency'"),
        ("guarded.X", "ImportError: needs libfoo >= 2"),
        ("pkg.sub.Y", "ImportError: cannot import name 'nothing' from 'pkg'"),
    ]:
        with pytest.raises(ConfigError, match="^" + re.escape(f"k: {target} cannot be imported: {said}")):
            config_types.located(target, "k")
    assert config_types.located("builtins.dict", "k") is dict


def test_an_interpolation_is_never_pointed_at_the_key_that_holds_it():
    """``data.clip_seconds=${data.clip_second}`` was told "did you mean ${data.clip_seconds}?": itself."""
    from omegaconf.errors import InterpolationKeyError

    from ttt_mm.tasks.config_errors import interpolation_message

    settings = {"data": {"clip_seconds": "${data.clip_second}", "batch_size": 8}}
    said = interpolation_message(InterpolationKeyError("Interpolation key 'data.clip_second' not found"), settings)
    assert said == (
        "data.clip_seconds: ${data.clip_second} names no key of this command's config (an interpolation reads "
        "another key's value)"
    )


def test_a_variable_of_a_users_config_file_that_a_value_reads_is_left_alone(as_run, tmp_path, caplog):
    """``train_steps: 2`` read as ``${train_steps}`` was refused as a misspelled ``trainer``; evaluate's own
    placeholder tokenizer was warned about in every run."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ntrain_steps: 2\ntrainer:\n  max_steps: ${train_steps}\n"
    )
    with caplog.at_level(logging.WARNING, logger="ttt_mm.tasks.config_types"):
        check_command_keys(as_run("train", [f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine"]), "train")
        check_command_keys(as_run("evaluate", ["ckpt=a.ckpt"]), "evaluate")
    assert caplog.messages == []


def test_a_sweep_jobs_results_go_to_the_folder_hydra_gives_the_job(tmp_path):
    """A job run again alone into its sweep (``-m ... hydra.sweep.subdir=3``, as the sweep's report says)
    is Hydra's job 0: its results went to ``output/0``, over job 0's."""
    sweep = ["ckpt=a.ckpt", "hydra.mode=MULTIRUN", "hydra.job.num=0", f"hydra.sweep.dir={tmp_path}"]
    try:
        for subdir, folder in ((["hydra.sweep.subdir=3"], "3"), ([], "0")):  # (Hydra's default: the job's number)
            with initialize_config_dir(str(CONF), version_base="1.3"):
                HydraConfig.instance().set_config(compose("evaluate", [*sweep, *subdir], return_hydra_config=True))
            assert sweep_job_folder(tmp_path / "out") == tmp_path / "out" / folder
            assert results_folder(str(tmp_path / "out")) == tmp_path / "out" / folder
    finally:
        HydraConfig.instance().cfg = None


def test_an_output_given_as_a_number_is_refused_where_the_command_reads_it():
    """embed reads ``output`` itself (no run folder is made from it): ``Path(2024)`` raised a TypeError."""
    with pytest.raises(
        ConfigError, match=r"^output must be a path; got 2024 \(to give a path that reads as a number, quote it"
    ):
        sweep_job_folder(2024)


@pytest.mark.parametrize(("command", "given"), [("train", ["~seed"]), ("evaluate", ["ckpt=a", "~rollout_steps"])])
def test_a_commands_own_key_removed_is_a_config_error(as_run, command, given):
    """``~seed``: the command read the key it no longer had, with a traceback and status 1."""
    removed = given[-1][1:]
    with pytest.raises(ConfigError, match=f"^~{removed}: {removed} is one of this command's own keys"):
        check_command_keys(as_run(command, given), command)


def test_an_empty_list_of_checkpoints_to_evaluate_says_one_is_required():
    """``ckpt=[]`` went on to read the data of no checkpoint: "data.modalities must be a list"."""
    from ttt_mm.tasks.evaluate import run

    with pytest.raises(ConfigError, match="^ckpt is required"):
        run(composed("evaluate", ["ckpt=[]"]))
