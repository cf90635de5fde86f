"""One source per default: where a config file states a constructor argument that has a default in
the signature, the two agree, unless the file makes a deliberate choice listed here with its reason."""

from __future__ import annotations

import importlib
import inspect
import logging
import logging.config
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from ttt_mm.data.index import IndexInterrupted, index_files
from ttt_mm.data.sources import MEDIA_EXTENSIONS
from ttt_mm.tasks import command_keys, common, starting, sweep_report
from ttt_mm.tasks.command_keys import extensions_of, names_of, output_folder, positive_count
from ttt_mm.tasks.command_lines import quoted_override, shell_override
from ttt_mm.tasks.common import CONF_DIR, ConfigError, Interrupted, config_errors_end_the_command
from ttt_mm.tasks.composing import hydra_command
from ttt_mm.tasks.config_errors import config_error_message
from ttt_mm.tokenizers import FPS, FRAME_SIZE, SAMPLE_RATE

CONF = Path(__file__).resolve().parents[1] / "conf"
CHOICES = {  # (file, key): why it differs from the signature's default
    ("tokenizer/av.yaml", "audio.frames_per_token"): "a 0.25 s audio-visual step needs a whole number of audio tokens",
    ("data/synthetic.yaml", "data.source.num_clips"): "the size of the default run's synthetic set",
    ("data/default.yaml", "num_workers"): "runs decode in a worker, where a decoder crash costs a file, not the run",
    ("model/lact.yaml", "backbone.mixer.chunk_size"): "8 s of the default data: 4 updates per 32 s training window",
    ("model/lact.yaml", "backbone.mixer.window"): "one chunk of the default data (the signature's 2048 is as released)",
}


def built_nodes(node, path=()):
    """``(key path, class or function, node)`` of every node with a ``_target_`` in a raw (uncomposed) config."""
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node:
        yield path, get_object(node._target_), node
    for key in node:
        if not (OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key)):
            yield from built_nodes(node[key], (*path, str(key)))


def disagreements() -> dict[tuple[str, str], tuple]:
    out = {}
    for file in sorted(CONF.glob("*/*.yaml")):
        for path, cls, node in built_nodes(OmegaConf.load(file)):
            made_by = cls.__init__ if isinstance(cls, type) else cls  # (a subclass may keep its base's)
            if not getattr(made_by, "__module__", "").startswith("ttt_mm"):  # (object's __init__ has none)
                continue  # Lightning's and torch's own classes and signatures
            params = inspect.signature(cls).parameters
            for key in node:
                param = params.get(key)
                if param is None or param.default is inspect.Parameter.empty:
                    continue
                if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
                    continue
                value = node[key]
                if isinstance(value, DictConfig):
                    continue  # a nested object: its own arguments are checked on their own
                value = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
                default = list(param.default) if isinstance(param.default, tuple) else param.default
                if value != default:
                    out[(file.relative_to(CONF).as_posix(), ".".join((*path, key)))] = (value, default)
    return out


def test_config_files_restate_signature_defaults_only_as_they_are():
    found = disagreements()
    assert set(found) == set(CHOICES), {k: v for k, v in found.items() if k not in CHOICES}


def test_the_media_clock_is_the_data_config_default():
    data = OmegaConf.load(CONF / "data" / "default.yaml")
    assert (data.sample_rate, data.fps, data.size) == (SAMPLE_RATE, FPS, FRAME_SIZE) == (16000, 8.0, 128)


@pytest.mark.slow
def test_commands_set_by_keys_alone_list_their_keys_in_help():
    """``--help`` of embed and linear_probe shows their own keys, not training's config groups, and
    where the file that explains them is."""
    for task, key in (("embed", "hop_seconds"), ("linear_probe", "folds")):
        done = subprocess.run(
            [sys.executable, "-m", f"ttt_mm.tasks.{task}", "--help"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        # the file named whole: the command runs from any folder, the help with it
        assert f"{CONF / task}.yaml explains each" in done.stdout and f"\n{key}:" in done.stdout
        assert "Configuration groups" not in done.stdout and "experiment:" not in done.stdout


@pytest.mark.slow
def test_evaluate_help_lists_its_keys_and_every_data_option_not_the_training_groups():
    done = subprocess.run(
        [sys.executable, "-m", "ttt_mm.tasks.evaluate", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    options = ", ".join(sorted(p.stem for p in (CONF / "data").glob("*.yaml") if p.stem != "default"))
    assert f"\n{options}.\n" in done.stdout and "\nrollout_steps: 8\n" in done.stdout
    assert "Configuration groups" not in done.stdout and "experiment:" not in done.stdout


MODEL_OPTIONS = ", ".join(sorted(p.stem for p in (CONF / "model").glob("*.yaml")))


@pytest.mark.parametrize("plus", ["", "+"])
def test_a_key_of_one_swept_option_is_named_as_such_and_the_refused_sweep_leaves_no_folder(
    plus, tmp_path, capsys, monkeypatch
):
    """Hydra refuses a sweep over model=ttt_linear,lact with a key of LaCT's config: the hint was to add it
    with +, which Hydra then refused in LaCT's job, and the sweep's named folder kept a multirun.yaml."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    key, folder = "model.backbone.mixer.chunk_size", tmp_path / "sweep"
    argv = ["train", "-m", "model=ttt_linear,lact", f"{plus}{key}=50", f"hydra.sweep.dir={folder}"]
    monkeypatch.setattr(sys, "argv", argv)
    at_exit = []  # (the sweep's report, and its cleanup, run at exit)
    monkeypatch.setattr(sweep_report.atexit, "register", at_exit.append)
    with pytest.raises(SystemExit) as ended:
        importlib.import_module("ttt_mm.tasks.train").main()
    assert ended.value.code == 2 and capsys.readouterr().err.splitlines()[-1] == (
        f"error: {key} is not a key of every config this sweep composes (model=ttt_linear,lact): each job takes "
        "every override, so a key of one option's config fails the others' (with or without +); sweep each "
        "option with its own keys"
    )
    for report in at_exit:
        report()
    assert not folder.exists()
    monkeypatch.setattr(sys, "argv", [*argv[:3], f"{plus}model.backbone.mixer.chunk_sizee=50", argv[-1]])  # a typo
    with pytest.raises(SystemExit) as ended:
        importlib.import_module("ttt_mm.tasks.train").main()
    assert "is not a key of every config this sweep composes" not in capsys.readouterr().err


@pytest.mark.parametrize("value", ["/my media [2024]", "a,b]", "it's", "x=y", "/data/clip (1).wav", "a b'c d", "}{"])
def test_the_quoted_override_suggested_reads_back_as_the_value_typed(value, monkeypatch):
    """What the error line suggests, split as a POSIX shell does, is one override of that very value."""
    monkeypatch.setattr(sys, "argv", ["train.py", f"data.root={value}"])  # (not pytest's: -m there picks tests)
    (argument,) = shlex.split(quoted_override(f"data.root={value}"))
    override = OverridesParser.create().parse_override(argument)
    assert (override.key_or_group, override.value()) == ("data.root", value)


@pytest.mark.parametrize(
    "value", ["/runs/rü/last.ckpt", "/tmp/a~b/x.ckpt", "~x", "/plain/path-1.2@x:y+z", "/a b", "it's", "x,y", "$HOME"]
)
def test_a_printed_override_reads_back_as_its_value(value):
    """A resume command named /tmp/rü/checkpoints/last.ckpt bare, and Hydra refused what it printed: its
    grammar takes neither letters outside ASCII nor a tilde in a bare value."""
    (argument,) = shlex.split(shell_override("ckpt_path", value))
    override = OverridesParser.create().parse_override(argument)
    assert (override.key_or_group, override.value()) == ("ckpt_path", value)


@pytest.mark.parametrize(
    "value", ["/runs/${USER}/last.ckpt", "/x/end\\", "/x/a b\\", "/x/it's$x\\", "${a}/${b}\\", "a\\${x}", "\\\\${x}"]
)
def test_a_printed_override_of_a_path_with_an_interpolation_or_a_final_backslash_composes_as_it(value):
    """Hydra resolves ``${...}`` inside quotes, and a final backslash escaped the closing quote: a printed
    resume command failed when pasted (an interpolation key not found, a token recognition error)."""
    (argument,) = shlex.split(shell_override("ckpt_path", value))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        assert compose("train", overrides=[argument]).ckpt_path == value


@pytest.mark.parametrize("value", ["'/my media", '"/x', 'a"b', "/x/$y", "a\\b", "wow!", "", "[0,1", "{a: 1"])
def test_no_quoted_override_is_suggested_for_a_value_that_quotes_or_escapes_itself_or_is_a_list(value):
    assert quoted_override(f"data.root={value}") is None


def test_no_quoted_override_is_suggested_for_values_to_sweep(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "seed=0,1,"])  # (not pytest's: -m there picks tests)
    assert quoted_override("seed=0,1,") == "\"seed='0,1,'\""  # (one value with commas: a path, say)
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "seed=0,1,"])
    assert quoted_override("seed=0,1,") is None


@pytest.mark.parametrize(
    ("command", "override", "said"),
    [
        (
            "train",
            "trainer.max_step=3",
            "trainer.max_step is not a key of this command's config; did you mean trainer.max_steps? (a key of your "
            "own is added with +trainer.max_step=...)",
        ),
        (  # (train's key: the other commands have threads)
            "embed",
            "cpu_threads=1",
            "cpu_threads is not a key of this command's config; did you mean threads? (a key of your own is added "
            "with +cpu_threads=...)",
        ),
        (  # (a key's first word: too short for a close spelling)
            "embed",
            "hop=0.5",
            "hop is not a key of this command's config; did you mean hop_seconds? (a key of your own is added "
            "with +hop=...)",
        ),
        (  # (an argument of the mixer that its config leaves at its default: not "a key of your own")
            "train",
            "model.backbone.mixer.rope_theta=500",
            "model.backbone.mixer.rope_theta is an argument of TTTLayer that this config does not list (it takes its "
            "default): add it with +model.backbone.mixer.rope_theta=...",
        ),
        (
            "train",
            "model.backbone.mixer.dim=8",
            "model.backbone.mixer.dim is not a key of this command's config "
            "(a key of your own is added with +model.backbone.mixer.dim=...)",
        ),  # (the backbone gives each mixer dim=)
        (  # (a key of another option of the group)
            "train",
            "model.backbone.mixer.chunk_size=5",
            "model.backbone.mixer.chunk_size is not a key of this command's config: it is a key of model=lact, not of "
            "the model chosen",
        ),
        (  # (a key of a node inside the one named: the audio-visual tokenizer's video part)
            "train",
            ("tokenizer=av", "tokenizer.target_pool=1"),
            "tokenizer.target_pool is not a key of this command's config; did you mean tokenizer.video.target_pool? "
            "(a key of your own is added with +tokenizer.target_pool=...)",
        ),
        (  # (an argument of another option's class that its file leaves at its default)
            "train",
            "tokenizer.hop_length=160",
            "tokenizer.hop_length is not a key of this command's config: it is an argument of tokenizer=audio's "
            "AudioTokenizer, not of the tokenizer chosen (choose it and add the key, e.g. tokenizer=audio "
            "+tokenizer.hop_length=...)",
        ),
        (
            "train",
            "model=attn",
            f"could not find 'model/attn'; did you mean attention? (the options of 'model': {MODEL_OPTIONS})",
        ),
        (  # (-m added at the end of a command line: argparse's "unrecognized arguments: model=attn")
            "train",
            ["debug=default", "-m", "model=attn"],
            f"could not find 'model/attn'; did you mean attention? (the options of 'model': {MODEL_OPTIONS})",
        ),
        (  # (a key of a config group without its group: the group's)
            "train",
            "max_steps=3",
            "max_steps is not a key of this command's config; did you mean trainer.max_steps? (a key of your own "
            "is added with +max_steps=...)",
        ),
        (  # (a command that reads the checkpoint's: Hydra told to add the key, which was then refused)
            "embed",
            "data.root=/x",
            "data.root: this command has no data settings: it uses those of the model's checkpoint, as trained",
        ),
        (
            "embed",
            "data=audio_folder",
            "data: this command has no data settings: it uses those of the model's checkpoint, as trained",
        ),
        ("train", "=3", "Config group override must be a string or a list. Got int"),  # (Hydra's parser: exit 1)
        (  # (Hydra's grammar error and a link: nothing said to quote the value)
            "train",
            "data.root=/my media [2024]",
            "data.root=/my media [2024]: not an override Hydra can read (mismatched input '[' expecting <EOF>); a "
            "value with spaces, brackets, commas, quotes, = or a sign such as ~ # & ; ! in it is quoted inside the "
            "argument: \"data.root='/my media [2024]'\"",
        ),
        (  # (a lexer's error repeated the override; the example is the user's own value)
            "embed",
            "data.root=it's",
            "data.root=it's: not an override Hydra can read; a value with spaces, brackets, commas, quotes, = or a "
            'sign such as ~ # & ; ! in it is quoted inside the argument: "data.root=\\"it\'s\\""',
        ),
        (  # (a path with a space, unquoted: the word after it was said to be an override of its own to quote)
            "train",
            ["data.root=/my", "media", "set", "debug=default"],
            "media: not an override (it has no =): the shell split an argument at its spaces; quote it whole: "
            "\"data.root='/my media set'\"",
        ),
        (  # (the split-off word also a flag's value: that one was taken for it, and called a bare word)
            "train",
            ["--config-name", "train", "data.root=/my", "train"],
            "train: not an override (it has no =): the shell split an argument at its spaces; quote it whole: "
            "\"data.root='/my train'\"",
        ),
        (  # (no shell expands a ~ after a key's =: nor would it quoted, so the example has the home folder)
            "train",
            "data.root=~/my clips",
            "data.root=~/my clips: not an override Hydra can read; a value with spaces, brackets, commas, quotes, = "
            "or a sign such as ~ # & ; ! in it is quoted inside the argument: "
            f"\"data.root='{os.path.expanduser('~')}/my clips'\"",
        ),
        (  # (a ~ alone: the signs named were spaces, brackets, commas, quotes and =, none of them in it)
            "train",
            "data.root=~/mydata",
            "data.root=~/mydata: not an override Hydra can read; a value with spaces, brackets, commas, quotes, = or "
            f"a sign such as ~ # & ; ! in it is quoted inside the argument: \"data.root='{os.path.expanduser('~')}/"
            "mydata'\"",
        ),
        (  # (a ~, which Hydra refuses unquoted, in a path the shell split: the rest of the path was lost)
            "train",
            ["data.root=~/my", "clips"],
            "data.root=~/my: not an override Hydra can read: the shell split an argument at its spaces; quote it "
            f"whole: \"data.root='{os.path.expanduser('~')}/my clips'\"",
        ),
        (  # (a word of its own: said to be quoted as foo='...')
            "train",
            "foo",
            "foo: not an override (it has no =): an override is key=value, e.g. data.root=/my/media",
        ),
        (  # (a quote left open: no value to quote, the README's example)
            "train",
            "data.root='/my media",
            "data.root='/my media: not an override Hydra can read; a value with spaces, brackets, commas, quotes, = or "
            "a sign such as ~ # & ; ! in it is quoted inside the argument, e.g. \"data.root='/my media [2024]'\"",
        ),
    ],
)
def test_a_mistake_met_while_composing_the_config_is_one_error_line_and_status_2(
    command, override, said, capsys, monkeypatch
):
    """Hydra printed these over several lines with exit status 1, and for a misspelled key suggested
    adding it with a +."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # (the user's: raised as it is)
    monkeypatch.setattr(sys, "argv", [command, *((override,) if isinstance(override, str) else override)])
    with pytest.raises(SystemExit) as ended:
        importlib.import_module(f"ttt_mm.tasks.{command}").main()
    assert ended.value.code == 2 and capsys.readouterr().err == f"error: {said}\n"
    assert "HYDRA_FULL_ERROR" not in os.environ  # (set only while Hydra runs)


@pytest.mark.parametrize(
    ("command", "key", "way"),
    [("train", "hydra.run.dir", "hydra.run.dir=<folder> (this run's)"), ("evaluate", "output", "output=<folder>")],
)
def test_a_run_folder_that_cannot_be_made_is_one_error_line_and_status_2(
    command, key, way, capsys, monkeypatch, tmp_path
):
    """Hydra makes the run folder before the command begins: a file in its place, or a folder that cannot
    be made, ended in a traceback of pathlib's with status 1."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    taken = tmp_path / "a file"
    taken.write_text("")
    monkeypatch.setattr(sys, "argv", [command, f"{key}='{taken}'", *(["ckpt=x.ckpt"] if command == "evaluate" else [])])
    with pytest.raises(SystemExit) as ended:
        importlib.import_module(f"ttt_mm.tasks.{command}").main()
    said = (
        f"error: {taken}: File exists: the run folder cannot be made or written there; choose another with {way} "
        "or paths.log_dir=<folder> (where runs go)\n"
    )
    assert ended.value.code == 2 and capsys.readouterr().err == said


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["train", "hydra.run.dir=${paths.log_dirr}/r"], "hydra.run.dir: ${paths.log_dirr} names no key"),
        (["evaluate", "ckpt=x.ckpt", "output=${paths.log_dirr}/e"], "hydra.run.dir: ${paths.log_dirr} names no key"),
        (["train", "-m", "seed=1,2", "hydra.sweep.dir=sw_${nokey}"], "hydra.sweep.dir: ${nokey} names no key"),
        (
            ["train", "ckpt_path=123"],
            "ckpt_path must be a path; got 123 (to give a path that reads as a number, quote it: ",
        ),
        (["train", "ckpt_path=[a,b]"], "ckpt_path must be a path; got ['a', 'b']\n"),
        (
            ["evaluate", "ckpt=x.ckpt", "output=2024"],
            "output must be a path; got 2024 (to give a path that reads as a number, ",
        ),
        (["linear_probe", "output=[a]"], "output must be a path; got ['a']\n"),
    ],
)
def test_a_run_folder_that_cannot_be_resolved_is_one_error_line_and_status_2(argv, said, capsys, monkeypatch, tmp_path):
    """Hydra resolves the run or sweep folder before the command begins: ``${paths.log_dirr}`` there
    ended in 60 lines of omegaconf's traceback with status 1 (in ``data.root``, in one line), and so
    did a path key the folder reads given a number or a list (``output=2024``, a folder named by a year)."""
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)  # (left set, unresolved)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as ended:
        importlib.import_module(f"ttt_mm.tasks.{argv[0]}").main()
    err = capsys.readouterr().err
    assert ended.value.code == 2 and err.startswith(f"error: {said}") and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())  # (refused before Hydra made a folder)
    if "paths.log_dirr" in said:
        assert err.endswith("; did you mean ${paths.log_dir}?\n")


def test_hydras_settings_printed_resolved_end_in_one_line_naming_the_way_that_works(capsys, monkeypatch):
    """``--cfg hydra --resolve`` printed a traceback: Hydra resolves its own settings without the
    command's config that they read; ``--cfg all --resolve`` has both."""
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)  # (--cfg leaves Hydra's set)
    monkeypatch.setattr(sys, "argv", ["train", "--cfg", "hydra", "--resolve"])
    with pytest.raises(SystemExit) as ended:
        importlib.import_module("ttt_mm.tasks.train").main()
    said = (
        "error: --cfg hydra --resolve cannot resolve Hydra's settings: they read keys of this command's config "
        "(ckpt_path, say), which --cfg hydra leaves out; print both resolved with --cfg all --resolve\n"
    )
    assert ended.value.code == 2 and capsys.readouterr().err == said
    monkeypatch.setattr(sys, "argv", ["train", "--cfg", "all", "--resolve"])  # (the way named)
    importlib.import_module("ttt_mm.tasks.train").main()
    printed = capsys.readouterr().out
    assert "/train/runs/" in printed and "${" not in printed


def test_a_training_group_added_to_a_command_that_reads_the_checkpoints_is_refused(capsys, monkeypatch, tmp_path):
    """``+model=attention`` added a config group that embed then read past, silently."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["embed", "ckpt=a.ckpt", "input=a.wav", "+model=attention"])
    with pytest.raises(SystemExit) as ended:
        importlib.import_module("ttt_mm.tasks.embed").main()
    said = "error: +model: this command has no model settings: it uses those of the model's checkpoint, as trained\n"
    assert ended.value.code == 2 and capsys.readouterr().err == said


def test_hydra_full_error_of_the_users_raises_as_it_is_and_one_a_run_passed_on_does_not(capsys, monkeypatch):
    from hydra.errors import ConfigCompositionException

    train = importlib.import_module("ttt_mm.tasks.train")
    monkeypatch.setattr(sys, "argv", ["train", "trainer.max_step=3"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException):
        train.main()
    monkeypatch.setenv("TTT_MM_HYDRA_FULL_ERROR_OURS", "1")  # (in a process the run started: DDP's)
    with pytest.raises(SystemExit) as ended:
        train.main()
    assert ended.value.code == 2 and capsys.readouterr().err.startswith("error: trainer.max_step is not a key")
    assert os.environ["HYDRA_FULL_ERROR"] == os.environ["TTT_MM_HYDRA_FULL_ERROR_OURS"] == "1"  # (as they were)


def test_a_refused_command_keeps_the_folder_it_runs_in(tmp_path, monkeypatch, capsys):
    """embed runs in the working directory (its hydra.run.dir is .): only a run folder Hydra stamped
    goes when a command is refused, never that one, even empty."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["embed"])
    with pytest.raises(SystemExit) as ended:
        importlib.import_module("ttt_mm.tasks.embed").main()
    assert ended.value.code == 2 and capsys.readouterr().err.startswith("error: ckpt")
    assert work.is_dir()


def test_a_crash_is_a_traceback_of_the_command_without_hydras_frames(capsys, monkeypatch, tmp_path):
    """Also a Hydra error the command raises itself: it is no mistake in composing the config."""
    from hydra.errors import ConfigCompositionException

    def failing():
        raise RuntimeError("a bug")

    @hydra_command("train")
    def task(cfg):
        failing()

    monkeypatch.setattr(sys, "argv", ["train", f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit) as ended:
        task()
    err = capsys.readouterr().err
    assert ended.value.code == 1 and err.rstrip().endswith("RuntimeError: a bug") and "in failing" in err
    assert f"{os.sep}hydra{os.sep}" not in err and "in command" not in err and "in job" not in err

    @hydra_command("train")
    def composes(cfg):
        raise ConfigCompositionException("a config the command composes itself")

    monkeypatch.setattr(sys, "argv", ["train", f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit) as ended:
        composes()
    assert ended.value.code == 1 and "Traceback" in capsys.readouterr().err


def test_each_job_of_a_sweep_says_again_what_the_jobs_before_it_said():
    """A sweep's jobs run in one process: a warning said once per run was missing from every later job's log."""
    from ttt_mm.messages import once

    what = f"damaged: /data/{os.getpid()}-{time.monotonic_ns()}.mp4"

    @hydra_command("train")
    def job(cfg):
        return once.first_time(what), once.first_time(what)

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train")
    assert job(cfg) == job(cfg) == (True, False)


def test_a_config_error_is_said_plainly_once_and_by_the_other_processes_with_their_rank(capsys, monkeypatch):
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    for rank, said in ((0, "error: data.fps must be > 0\n"), (1, "[rank 1] error: data.fps must be > 0\n")):
        monkeypatch.setattr(rank_zero_only, "rank", rank)
        with pytest.raises(SystemExit) as ended, config_errors_end_the_command():
            raise ConfigError("data.fps must be > 0")
        assert ended.value.code == 2 and capsys.readouterr().err == said


def test_ctrl_c_ends_a_command_with_one_line_and_status_130_also_in_the_log_file(capsys, tmp_path, monkeypatch):
    forgotten = []
    monkeypatch.setattr(common, "forget_refused_run", lambda: forgotten.append(True))  # (its own test: test_train)
    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(SystemExit) as ended, config_errors_end_the_command():
            raise KeyboardInterrupt
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert ended.value.code == 130 and capsys.readouterr().err == "interrupted\n"
    assert (tmp_path / "train.log").read_text() == "interrupted\n"
    assert forgotten == []  # a run stopped once it began keeps its folder (an evaluation's log of its clips)
    for before in (IndexInterrupted("interrupted: kept 0 of 2"), Interrupted("nothing", before_it_began=True)):
        with pytest.raises(SystemExit), config_errors_end_the_command():
            raise before
    assert forgotten == [True, True]  # stopped while it listed its data: no empty run folder
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended, config_errors_end_the_command():
        raise Interrupted("nothing was written")  # a command that knows what it left behind says so
    assert ended.value.code == 130 and capsys.readouterr().err == "interrupted: nothing was written\n"
    for raised, said in ((KeyboardInterrupt(), "elsewhere"), (Interrupted("while writing"), "while writing")):
        with pytest.raises(SystemExit), config_errors_end_the_command(interrupted="elsewhere"):
            raise raised  # the command's own words for a Ctrl-C anywhere else
        assert capsys.readouterr().err == f"interrupted: {said}\n"


def test_a_crash_goes_on_up_with_its_traceback_also_in_the_log_file(tmp_path):
    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(RuntimeError, match="out of memory"), config_errors_end_the_command():
            raise RuntimeError("out of memory")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    text = (tmp_path / "train.log").read_text()
    assert "the command failed:\nTraceback (most recent call last):" in text
    assert text.rstrip().endswith("RuntimeError: out of memory")


def test_an_output_that_cannot_be_a_folder_is_a_config_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(
        ConfigError, match=r"^output=.*notes.txt/run cannot be made a folder: .*notes.txt is a file, not a"
    ):
        output_folder(tmp_path / "notes.txt" / "run")
    assert output_folder(tmp_path / "a" / "b").is_dir()


def test_a_key_of_names_takes_a_list_or_one_name():
    assert names_of(None) is None and names_of("mine") == ["mine"] and names_of(7) == ["7"]
    assert names_of(ListConfig(["a", 2])) == ["a", "2"] and extensions_of("ogg") == ("ogg",)
    assert extensions_of("") == extensions_of([""]) == extensions_of(None) == MEDIA_EXTENSIONS


def test_a_count_key_takes_whole_numbers_from_one_or_null():
    assert positive_count(None, "max_files") is None and positive_count(3, "max_files") == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="max_files must be a whole number >= 1"):
            positive_count(bad, "max_files")


def test_an_index_cache_that_cannot_be_written_ends_a_command_in_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as ended, config_errors_end_the_command():
        index_files([tmp_path / "file"], cache_dir=tmp_path / "file" / "cache")
    err = capsys.readouterr().err
    assert (
        ended.value.code == 2 and err.startswith("error: the dataset index cannot be kept in ") and err.count("\n") == 1
    )


def test_a_gpu_trainer_on_a_machine_without_one_says_how_to_run_on_the_cpu():
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    err = InstantiationException(
        "Error in call to target 'lightning.pytorch.trainer.trainer.Trainer':\nfull_key: trainer"
    )
    err.__cause__ = MisconfigurationException("No supported gpu backend found!")  # as Hydra raises it, without a GPU
    message = config_error_message(err)
    assert message.startswith("MisconfigurationException: No supported gpu backend found! No GPU that torch can use")
    assert "run on the CPU (trainer=cpu" in message and message.endswith("(config key 'trainer')")
    assert "trainer=ddp takes trainer.accelerator=cpu trainer.precision=32-true" in message  # (not bf16 there)


def _model_error(overrides: list[str], settings_of=lambda settings: settings) -> str:
    """What a command says when building the model of ``train.py <overrides>`` fails."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    settings = settings_of(OmegaConf.to_container(cfg, resolve=False))
    with pytest.raises(InstantiationException) as raised:
        instantiate(cfg.model)
    return config_error_message(raised.value, settings)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["tokenizer.patch=0"], "tokenizer.patch must be positive; got 0"),  # (built by the model)
        (["model.backbone.dim=0"], "model.backbone.dim must be positive; got 0"),  # (tokenizer.dim: ${...})
        (
            ["model=lact", "model.backbone.mixer.chunk_size=0"],
            "model.backbone.mixer.chunk_size must be positive; got 0",
        ),
        (["tokenizer=av", "tokenizer.audio.n_mels=0"], "tokenizer.audio.n_mels must be positive; got 0"),
        (
            ["model=lact", "model.backbone.mixer.fast_heads=3"],  # (not one argument's check: the node is named)
            "ValueError: dim (128) must be divisible by fast_heads (3) (config key 'model.backbone.mixer')",
        ),
        (  # (the model's tokenizer is the node ${tokenizer}: "its tokenizer from tokenizer" said nothing)
            ["tokenizer.dim=32"],
            "ValueError: tokenizer.dim (32) must equal backbone.dim (128) (config key 'model')",
        ),
    ],
)
def test_a_constructor_error_names_the_key_it_refused(overrides, message):
    assert _model_error(overrides) == message


def test_a_constructor_error_names_the_node_hydra_built_where_the_one_that_raised_is_unclear():
    said = "ValueError: n_mels must be positive; got 0 (config key 'model')"
    assert _model_error(["tokenizer=av", "tokenizer.audio.n_mels=0"], lambda settings: None) == said

    def two_audio_nodes(settings):  # (a class built at two keys: which one raised cannot be told)
        return settings | {"second": settings["tokenizer"]["audio"]}

    assert _model_error(["tokenizer=av", "tokenizer.audio.n_mels=0"], two_audio_nodes) == said


@pytest.mark.parametrize(
    "command,key",
    [
        (command, key)
        for command in ("train", "evaluate", "linear_probe")
        for key in ("hydra.run.dir", "hydra.sweep.dir")
    ],
)
def test_two_commands_started_in_one_second_get_a_folder_each(command, key):
    """Stamped to the second, two runs started together shared one run directory: one config record,
    one train.log, and one last.ckpt that the other run's summary pointed at."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        first, second = (OmegaConf.select(compose(command, return_hydra_config=True), key) for _ in range(2))
    assert first != second


def test_the_log_file_takes_a_file_name_that_is_not_utf8(tmp_path):
    """A clip's name with undecodable bytes raised a logging error for every line that named it, and
    the line was missing from the run's log file."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("evaluate", return_hydra_config=True)
    handler = OmegaConf.to_container(cfg.hydra.job_logging.handlers.file)
    handler.pop("formatter", None)
    handler["filename"] = str(tmp_path / "evaluate.log")
    config = {"version": 1, "handlers": {"file": handler}, "loggers": {"u8": {"handlers": ["file"]}}}
    logging.config.dictConfig(config | {"disable_existing_loggers": False})  # (the other tests' loggers stay on)
    logger = logging.getLogger("u8")
    logger.warning("skipping %s", os.fsdecode(b"/media/caf\xe9.mp4"))
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    assert (tmp_path / "evaluate.log").read_text().strip() == "skipping /media/caf\\udce9.mp4"


@pytest.mark.parametrize(
    "command,keys",
    [
        ("embed", ["ckpt={tmp}/nowhere.ckpt", "input={tmp}/nowhere", "output={tmp}/out"]),
        ("evaluate", ["ckpt={tmp}/nowhere.ckpt", "output={tmp}/out"]),
        ("linear_probe", ["ckpt={tmp}/nowhere.ckpt", "input={tmp}/nowhere"]),
    ],
)
def test_a_sweep_job_without_threads_gets_torchs_default_back(command, keys, tmp_path, monkeypatch):
    """A sweep's jobs share one process (``-m threads=1,null``): the second ran with the first's count."""
    task = importlib.import_module(f"ttt_mm.tasks.{command}")
    default = command_keys.DEFAULT_THREADS
    monkeypatch.setattr(command_keys, "DEFAULT_THREADS", default + 1)  # (a count no job sets, on any machine)
    keys = [k.format(tmp=tmp_path) for k in keys]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            for threads, after in (("1", 1), ("null", default + 1)):
                with pytest.raises(ConfigError, match="nowhere"):  # (refused once the threads are set)
                    task.run(compose(command, [*keys, f"threads={threads}"]))
                assert torch.get_num_threads() == after
    finally:
        torch.set_num_threads(default)


def test_ctrl_c_while_a_command_starts_is_one_line_and_in_its_work_a_traceback(monkeypatch, tmp_path):
    """Ctrl-C in the seconds a command imports printed dozens of lines of import machinery."""
    train_py = os.path.join(os.path.dirname(CONF_DIR), "train.py")
    for started_as in (
        "sys.orig_argv = [sys.executable, '-m', 'ttt_mm.tasks.evaluate']",
        f"sys.argv[0] = {train_py!r}",
    ):
        importing = f"import sys\n{started_as}\nimport ttt_mm.tasks\nraise KeyboardInterrupt"
        proc = subprocess.run([sys.executable, "-c", importing], capture_output=True, text=True, timeout=120)
        assert proc.stderr == "interrupted while the command was starting: nothing was run\n"
        assert proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT)  # (as any Ctrl-C that ends Python)
        terminated = "import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(60)"  # (was silent)
        importing = f"import sys\n{started_as}\nimport ttt_mm.tasks\n{terminated}"
        proc = subprocess.run([sys.executable, "-c", importing], capture_output=True, text=True, timeout=120)
        said = "terminated (SIGTERM) while the command was starting: nothing was run\n"
        assert (proc.stderr, proc.returncode) == (said, 143)
    for script in ("", "sys.argv[0] = 'train.py'\n"):  # (a script that imports the tasks, of any name: Python's own)
        importing = f"import sys\n{script}import ttt_mm.tasks\nraise KeyboardInterrupt"
        proc = subprocess.run(
            [sys.executable, "-c", importing], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert proc.stderr.startswith("Traceback") and proc.stderr.endswith("KeyboardInterrupt\n")
    seen = []

    @hydra_command("train")
    def task(cfg):
        seen.append(sys.excepthook)

    before = sys.excepthook
    monkeypatch.setattr(starting, "a_command", lambda: True)
    starting.say_ctrl_c_while_starting()
    assert sys.excepthook is not before
    task(OmegaConf.create({}))  # (a config given: no Hydra run, whose logging setup would outlive the test)
    assert seen == [before] and sys.excepthook is before  # (in its work a Ctrl-C shows where a hang was)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # (each command takes SIGTERM its own way)
    signal.signal(signal.SIGTERM, starting._terminated)
    with pytest.raises(SystemExit):  # a second SIGTERM, while the first is said (a hang in native code): the end
        starting._terminated(signal.SIGTERM, None)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
