"""What a training run must satisfy before it starts: the config (`check`), then the data module, model
and trainer built from it (`check_parts`). Each mistake found here would otherwise surface deep inside
the run, often at its first step or validation, possibly hours in; here it is one ``error:`` line
(`ConfigError`) that says what to set.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
from typing import NamedTuple

import lightning as L
import torch
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig

from ttt_mm.checkpoint import read_checkpoint, trained_eval_window, trained_files, trained_split
from ttt_mm.data.clip_record import files_of
from ttt_mm.data.datasets import MODALITIES, clip_span, off_grid
from ttt_mm.data.decode import MediaError
from ttt_mm.data.training_order import is_seed
from ttt_mm.messages import first_line, first_of
from ttt_mm.tasks.common import ConfigError, in_a_sweep, process_rank
from ttt_mm.tasks.config_types import check_config
from ttt_mm.tasks.resume_advice import checkpoint_does_not_fit
from ttt_mm.tasks.run_folders import run_of_checkpoint, stamped_run_folder

log = logging.getLogger(__name__)
MIXER_KEY = "model.backbone.mixer"
"""Where the configs put the mixer's arguments (``conf/model/<name>.yaml``), for messages naming one."""


class Resumed(NamedTuple):
    """What a run resumes or tests from, read once from its checkpoint (its weights left in the file, not
    mapped for the run: it may be saved again under that name): its step, the shapes of its weights
    (`check_resume_fits`), the files its run trained and validated on (`trained_files`), the split
    fractions it drew them with (`trained_split`), the window it validated and tested in, and the
    segments it trained on (a test split holds a trained file's other spans)."""

    step: int
    shapes: dict[str, tuple[int, ...]] | None
    trained: set[str] | None
    validated: set[str] | None
    split: dict[str, float] | None
    eval_window: float | None
    trained_spans: set[str] | None = None


def check(cfg: DictConfig) -> Resumed | None:
    """Catch the mistakes that would otherwise surface deep inside a run; returns what it resumes or
    tests from (None: a new run)."""
    check_config(cfg, "train")
    for key in ("data", "model", "trainer"):
        if key not in cfg or cfg[key] is None:
            raise ConfigError(f"config group '{key}' is missing")
    if not cfg.get("train", True) and not cfg.get("test"):
        raise ConfigError("train=false and test=false leave nothing to run (train=false test=true tests ckpt_path)")
    seed = cfg.get("seed")
    if seed is not None and not is_seed(seed):
        raise ConfigError(f"seed must be a whole number from 0 to 2**32 - 1; got {seed}")
    if not cfg.get("ckpt_path"):
        return None
    try:  # (memory-mapped: the tensors are not loaded; every byte is read once for the checksums)
        ckpt = read_checkpoint(cfg.ckpt_path)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"ckpt_path: {err}") from None
    weights = ckpt.get("state_dict")
    shapes = (
        {k: tuple(v.shape) for k, v in weights.items() if hasattr(v, "shape")} if isinstance(weights, dict) else None
    )
    spans = trained_files(ckpt, spans=True)  # (the record read once: its files from it)
    return Resumed(
        ckpt.get("global_step", 0),
        shapes,
        files_of(spans),
        trained_files(ckpt, "val"),
        trained_split(ckpt),
        trained_eval_window(ckpt),
        spans,
    )


def check_parts(cfg: DictConfig, datamodule, model, trainer: L.Trainer, resumed: Resumed | None) -> None:
    """Everything below, on the parts `ttt_mm.tasks.train.build` made from ``cfg``."""
    check_resume_fits(cfg, model, resumed)
    check_launch(cfg, trainer, resumed.step if resumed else None)
    check_modalities(datamodule, model)
    check_media_clock(datamodule, model)
    check_window_length(datamodule, model)
    check_updates_learn(datamodule, model)
    check_carried_windows(datamodule, model)
    check_validation_window(datamodule)


def check_resume_fits(cfg: DictConfig, model: torch.nn.Module, resumed: Resumed | None) -> None:
    """A checkpoint to resume, or to test alone, whose weights do not fit this run's model (another
    model's, or its own run's given without the overrides that trained it) is refused first, with those
    overrides: what is said of its step (`check_launch`) was this run's length against another run's,
    and a test alone ended in torch's list of every weight name, after warnings about its test windows."""
    if resumed is None or resumed.shapes is None or not (cfg.get("train", True) or cfg.get("test")):
        return
    here = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if differs := weights_differ(resumed.shapes, here):
        raise checkpoint_does_not_fit(cfg.ckpt_path, differs, test_only=not cfg.get("train", True))


def weights_differ(saved: dict[str, tuple[int, ...]], model: dict[str, tuple[int, ...]]) -> str | None:
    """How a checkpoint's weights (``saved``, their shapes by name) differ from a model's, as a strict load
    would find it (weights missing, left over, or of other shapes, a few named); None where they fit."""
    missing = [k for k in model if k not in saved]
    unexpected = [k for k in saved if k not in model]
    shaped = [k for k in model if k in saved and saved[k] != model[k]]
    found = [
        f"{len(keys)} {what}: {first_of(keys, NAMED_WEIGHTS)}"
        for keys, what in (
            (missing, "of this model's weights not in it"),
            (unexpected, "weights of another model"),
            (shaped, "of other shapes"),
        )
        if keys
    ]
    return "its weights do not fit this model: " + "; ".join(found) if found else None


NAMED_WEIGHTS = 3
"""Weights named, of each kind, where a checkpoint does not fit."""


def check_launch(cfg: DictConfig, trainer: L.Trainer, resumed_step: int | None = None) -> None:
    """What the trainer cannot do in this run: start its own DDP processes inside a sweep (Lightning
    starts each one by running this command again, sweep and all), or resume from a step at or past
    ``trainer.max_steps`` (``resumed_step``, from `check`: it would stop at once, with nothing trained
    and no checkpoint written)."""
    launcher = trainer.strategy.launcher
    if in_a_sweep() and isinstance(launcher, _SubprocessScriptLauncher) and launcher.num_processes > 1:
        strategy = type(trainer.strategy).__name__
        raise ConfigError(
            f"a sweep (-m) cannot start {launcher.num_processes} processes of {strategy}: Lightning starts the "
            "others by running this command again, sweep included. Run each configuration as its own command "
            "(or start the processes with torchrun or SLURM)"
        )
    if isinstance(launcher, _SubprocessScriptLauncher) and launcher.cluster_environment.creates_processes_externally:
        check_started_outside(cfg, launcher)
    if trainer.accumulate_grad_batches < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches must be >= 1; got {trainer.accumulate_grad_batches}")
    if not cfg.get("train", True) or trainer.fast_dev_run:
        return
    steps = trainer.max_steps
    check_run_length(steps, trainer.max_epochs, cfg.trainer.get("limit_train_batches"))
    if resumed_step is not None and 0 <= steps <= resumed_step:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} is at step {resumed_step} and trainer.max_steps={steps}: nothing is "
            f"left to train; to go on, set trainer.max_steps above {resumed_step}"
        )


def check_started_outside(cfg: DictConfig, launcher: _SubprocessScriptLauncher) -> None:
    """A run whose processes torchrun or SLURM started (each one this command): Lightning checks that
    ``trainer.devices`` x ``trainer.num_nodes`` is their number only as the fit starts, in a traceback
    from every process; and each names the run folder by its own start time (to the microsecond), so
    that the run is spread over as many folders, unless ``hydra.run.dir`` names one for all (a run resumed
    from a checkpoint of a run folder goes on in that folder)."""
    environment = launcher.cluster_environment
    processes = environment.world_size()
    try:
        environment.validate_settings(num_devices=launcher.num_processes, num_nodes=launcher.num_nodes)
    except ValueError as err:
        raise ConfigError(
            f"trainer.devices={launcher.num_processes} and trainer.num_nodes={launcher.num_nodes} do not match the "
            f"launch ({type(environment).__name__}: {first_line(err)}): make trainer.devices (processes per node) "
            "and trainer.num_nodes match it"
        ) from None
    folder = stamped_run_folder()
    shared = run_of_checkpoint(cfg.get("ckpt_path"))  # (a resume in place: every process's is its run's)
    if processes > 1 and folder is not None and (shared is None or folder.resolve() != shared):
        raise ConfigError(
            f"each of the {processes} processes of this launch names the run folder by its own start time (this "
            f"one: {folder}): name it once for all, hydra.run.dir=<the same folder on every node> (e.g. "
            "logs/train/runs/$(date +%Y-%m-%d_%H-%M-%S), expanded once)"
        )


def batches_per_epoch(limit_train_batches) -> int | None:
    """``limit_train_batches`` as a count of batches; None where it is none (unset, or a fraction of an
    endless epoch, which is endless; a bool is no count)."""
    counted = type(limit_train_batches) is int and limit_train_batches > 0
    return limit_train_batches if counted else None


def check_run_length(max_steps: int, max_epochs: int | None, limit_train_batches) -> None:
    """Training draws windows without end, so an epoch ends only at ``limit_train_batches``: a run's
    length, and its lr schedule, is ``max_steps`` (or epochs of a set number of batches). Anything else
    would run forever, or crash when the schedule is built."""
    epochs = max_epochs not in (None, -1)
    if epochs and batches_per_epoch(limit_train_batches) is None:
        raise ConfigError(
            f"trainer.max_epochs={max_epochs} has no effect: training draws windows without end, so an epoch "
            "never ends; set trainer.max_steps (or trainer.limit_train_batches=N batches per epoch)"
        )
    if max_steps < 1 and not epochs:
        raise ConfigError(
            f"trainer.max_steps={max_steps}: training draws windows without end, so a run's length (and its lr "
            "schedule) is set in steps: trainer.max_steps >= 1 (or trainer.max_epochs with "
            "trainer.limit_train_batches=N batches per epoch)"
        )


def run_length(trainer: DictConfig) -> int:
    """The optimizer steps a run takes: ``max_steps``, or fewer where epochs of ``limit_train_batches``
    batches end it sooner (`check_run_length`: one of them is set); -1 where neither is."""
    lengths = [s for s in (trainer.get("max_steps") or -1,) if s > 0]
    epochs, batches = trainer.get("max_epochs") or -1, batches_per_epoch(trainer.get("limit_train_batches"))
    if epochs > 0 and batches is not None:
        lengths.append(epochs * math.ceil(batches / (trainer.get("accumulate_grad_batches") or 1)))
    return min(lengths, default=-1)


TOKENIZER_OF = {("audio",): "audio", ("video",): "video", ("audio", "video"): "av"}
"""The tokenizer config (``conf/tokenizer``) that reads each set of modalities."""


def check_modalities(datamodule, model) -> None:
    """The data must read what the tokenizer takes: a stream it lacks would otherwise fail at the first
    step, after every file is listed and probed (one it does not take would be read for nothing, and a
    file without it left out)."""
    reads, takes = (
        tuple(m for m in MODALITIES if m in mods)
        for mods in (datamodule.spec.modalities, model.tokenizer.decoding.modalities)
    )
    if reads != takes:
        raise ConfigError(
            f"data.modalities={list(reads)} but the tokenizer takes {list(takes)}: set tokenizer={TOKENIZER_OF[reads]} "
            f"(or data.modalities={list(takes)})".replace("'", "")
        )


def check_media_clock(datamodule, model) -> None:
    """The data must decode at the sample rate, frame rate and frame size the tokenizer reads: the
    tokenizer configs take theirs from ``data.*``, and one set on the tokenizer alone
    (``tokenizer.sample_rate=8000``) would fail at the first step, after every file is probed."""
    decoding, spec = model.tokenizer.decoding, datamodule.spec
    for key, what in (("sample_rate", "audio at {} Hz"), ("fps", "video at {} fps"), ("size", "frames of {} px")):
        takes, decodes = getattr(decoding, key), getattr(spec, key)
        if takes is not None and float(takes) != float(decodes):
            raise ConfigError(
                f"the tokenizer reads {what.format(takes)} (its {key}) but the data decodes {what.format(decodes)} "
                f"(data.{key}): set data.{key}={takes} rather than the tokenizer's own (its config takes data.{key})"
            )


def check_window_length(datamodule, model) -> None:
    """A training or validation window must hold a token and its target ``offset`` tokens later; a
    shorter one would fail at the first step (or blame every file as too short to read), or at the
    first validation (nothing scored, no val/loss to checkpoint on), possibly hours in."""
    tok = model.tokenizer
    windows = {"clip_seconds": datamodule.clip_seconds, datamodule.eval_window_key: datamodule.eval_window_seconds}
    for key, seconds in windows.items():
        tokens = _window_tokens(seconds, tok)
        if tokens <= model.offset:
            steps = model.offset // tok.tokens_per_step + 1
            unit = model.backbone.restart_unit
            if key == "clip_seconds" and _restarts_rows(datamodule, model) and unit is not None and unit.required:
                whole = math.lcm(unit.tokens, tok.tokens_per_step) // tok.tokens_per_step  # (`check_carried_windows`)
                steps = -(-steps // whole) * whole
            raise ConfigError(
                f"data.{key}={seconds:g} holds {tokens} tokens, too few to predict {model.offset} ahead; the "
                f"shortest that works is data.{key}={steps * tok.seconds_per_step:.10g}"
            )


def _window_tokens(seconds: float, tok) -> int:
    """The tokens a window of ``seconds`` holds: its whole tokenizer steps."""
    return math.floor(seconds / tok.seconds_per_step + 1e-6) * tok.tokens_per_step


def _unit_sizes(tokens: int, tok, most: int) -> list[int]:
    """Unit sizes up to ``most`` tokens that divide a window of ``tokens`` into whole tokenizer steps."""
    return [c for c in range(tok.tokens_per_step, most + 1, tok.tokens_per_step) if tokens % c == 0]


def _teaches(tokens: int, unit, model) -> bool:
    """Whether a window of ``tokens`` teaches the step sizes of a unit whose update reaches only the
    tokens after it: the loss (no target for the last ``offset`` outputs) reaches such a token."""
    return tokens - model.offset > unit.tokens


def _suggested_units(window: int, tok, within: int) -> list[int]:
    """Unit sizes that divide a window of ``window`` tokens, a quarter of ``within`` tokens at most, as
    conf/model/lact.yaml advises (three of four updates teach), else a half."""
    return _unit_sizes(window, tok, most=within // 4) or _unit_sizes(window, tok, most=within // 2)


def _restarts_rows(datamodule, model) -> bool:
    """Whether single batch rows restart at window boundaries: a carried state in batches of several
    rows (a lone row that restarts takes a fresh state whole)."""
    return bool(model.hparams.carry_state) and datamodule.batch_size > 1


def check_updates_learn(datamodule, model) -> None:
    """A mixer whose update reaches only the tokens after its unit (LaCT's chunk) learns its step sizes
    from a training window only when the loss reaches such a token: when the window holds more than
    one unit plus the ``offset`` tokens the model predicts ahead (the last ``offset`` outputs have no
    target). Otherwise they would get no gradient, silently (and DDP would stop at its second step on
    the unused parameters)."""
    unit, tok = model.backbone.restart_unit, model.tokenizer
    tokens = _window_tokens(datamodule.clip_seconds, tok)
    if unit is None or not unit.applied_after or _teaches(tokens, unit, model):
        return
    fits = _suggested_units(tokens, tok, within=tokens)
    smaller = f"{MIXER_KEY}.{unit.argument}={max(fits)} or " if fits else ""
    steps = math.ceil(2 * unit.tokens / tok.tokens_per_step)  # a training window of two units
    longer = f"data.clip_seconds={tok.seconds_text(steps)} ({steps * tok.tokens_per_step} tokens: two {unit.name})"
    raise ConfigError(
        f"data.clip_seconds={datamodule.clip_seconds:g} ({tokens} tokens) holds no more than one of the {unit.name} "
        f"of {unit.tokens} tokens and the {model.offset} predicted ahead, whose update reaches only the tokens after "
        f"it: the update's step sizes would never learn; e.g. {smaller}{longer}"
    )


def check_files_hold_updates(datamodule, model) -> None:
    """`check_updates_learn` for the training files themselves, once they are listed: a file shorter than
    the window is read as a window of its own length, and one whose loss reaches no token after its
    first unit (LaCT's chunk) teaches the update's step sizes nothing. Every file so: refused, as such
    a window is; more than half of them: a warning (the step sizes learn from the others alone)."""
    unit, tok = model.backbone.restart_unit, model.tokenizer
    if unit is None or not unit.applied_after:
        return
    lengths = []
    for clip in datamodule.splits["train"]:
        with contextlib.suppress(MediaError):  # (listed, so readable: its span as training reads it)
            start, end = clip_span(clip, datamodule.spec)
            lengths.append(end - start)
    short = [s for s in lengths if not _teaches(_window_tokens(s, tok), unit, model)]
    if not lengths or 2 * len(short) <= len(lengths):
        return
    typical = _window_tokens(min(statistics.median(lengths), datamodule.clip_seconds), tok)
    window = _window_tokens(datamodule.clip_seconds, tok)
    fits = _suggested_units(window, tok, within=typical)
    teaching = tok.seconds_text((unit.tokens + model.offset) // tok.tokens_per_step + 1)  # (the first such length)
    text = (
        f"{len(short)} of the {len(lengths)} training files last under {teaching} s, no more than one of the "
        f"{unit.name} of {unit.tokens} tokens and the {model.offset} predicted ahead, whose update reaches only the "
        f"tokens after it: their windows teach its step sizes nothing"
        + (f"; e.g. {MIXER_KEY}.{unit.argument}={max(fits)}" if fits else "; e.g. longer files")
    )
    if len(short) == len(lengths):
        raise ConfigError(text + " (with every file so, they would never learn)")
    if process_rank() == 0:  # (every process lists the files)
        log.warning(text)


def check_carried_windows(datamodule, model) -> None:
    """With the state carried (``data.stream``), a row whose file ends restarts while the others go on,
    at a window boundary. A mixer whose `restart_unit` is required (TTT's mini-batches) restarts rows only
    between units, so a window must hold whole ones: otherwise the run would stop at the first file's
    end, possibly hours in. One that is not (LaCT's chunks) only costs speed: a warning."""
    if model.hparams.carry_state and not getattr(datamodule, "stream", False):
        raise ConfigError(
            "model.carry_state=true needs data.stream=true: the state is carried from one window of a file to "
            "the next (experiment=long_context sets both)"
        )
    if not _restarts_rows(datamodule, model):
        return
    tok, unit = model.tokenizer, model.backbone.restart_unit
    # a window that must change is suggested in whole steps, and whole units when they are required
    grid = math.lcm(unit.tokens, tok.tokens_per_step) if unit is not None and unit.required else tok.tokens_per_step
    near = max(1, round(datamodule.clip_seconds / tok.seconds_per_step * tok.tokens_per_step / grid))
    suggested = f"data.clip_seconds={tok.seconds_text(near * grid // tok.tokens_per_step)}"
    steps = tok.whole_steps(datamodule.clip_seconds)
    if steps is None:
        raise ConfigError(
            f"data.clip_seconds={datamodule.clip_seconds:g} is not a whole number of tokenizer steps of "
            f"{tok.seconds_per_step:g} s; e.g. {suggested}"
        )
    tokens = steps * tok.tokens_per_step
    window = f"data.clip_seconds={datamodule.clip_seconds:g} ({tokens} tokens)"
    if unit is None or tokens % unit.tokens == 0:
        return
    if unit.required:
        raise ConfigError(
            f"{window} is not a whole number of {unit.name} of {unit.tokens} tokens, which a carried state "
            f"needs to restart single rows; e.g. {suggested}"
        )
    most = tokens // 2 if unit.applied_after else tokens  # (more than one unit a window: `check_updates_learn`)
    fits = _unit_sizes(tokens, tok, most)
    near = min(fits, key=lambda c: abs(c - unit.tokens), default=None)  # the unit changes: the window is the data's
    log.warning(
        f"{window} is not a whole number of {unit.name} of {unit.tokens} tokens: rows restarted at a file's "
        f"end run in separate groups (slower)" + (f"; e.g. {MIXER_KEY}.{unit.argument}={near}" if near else "")
    )


def check_validation_window(datamodule) -> None:
    """Validation walks files in consecutive windows, which must start on every stream's frame and sample
    grid: an off-grid length would otherwise fail at the first validation, possibly hours in."""
    if (why := off_grid(datamodule.eval_window_seconds, datamodule.spec)) is not None:
        key = datamodule.eval_window_key
        also = " (also the validation window)" if key == "clip_seconds" else ""
        raise ConfigError(f"data.{key}={datamodule.eval_window_seconds:g}{also} {why}")
