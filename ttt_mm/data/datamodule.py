"""LightningDataModule over any clip source: splits, random training windows, whole-file evaluation.

Nothing is decoded in the main process: `setup` lists clips and looks their files up in the dataset
index (`ttt_mm.data.index`), which probes new files in subprocesses; files without the streams the
config reads, or that no decoder reads, are left out there and listed in the skip list with their
reason. Every decoder is then opened in the process that reads (each DataLoader worker gets its
own, see `ttt_mm.data.decode.guard`). Splits come from the source (a manifest ``split`` column) or from a
hash of each clip's key (of its manifest ``group``, where it has one: `ttt_mm.data.groups`), so they
never change when files are added. When none lands in validation, a training file (or group) moves
there if there are three usable files or more, at least two files or groups in training and one whose
split the source does not fix (which one can change with the files; a resumed run keeps its run's); otherwise
the training files are validated on (with a warning).
The skip list defaults to ``<trainer.default_root_dir>/skipped_media.tsv``; without a trainer and a
path, each loader worker keeps its own in memory (a bad file is then logged by each that meets it).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from ttt_mm.data import reading_notes
from ttt_mm.data.clip_record import clip_changes, clip_record
from ttt_mm.data.datasets import ReadSpec, SequentialWindows, clip_span, collate
from ttt_mm.data.even_passes import EvenPasses
from ttt_mm.data.groups import GROUP, split_units
from ttt_mm.data.index import PROBE_TIMEOUT
from ttt_mm.data.loader_workers import worker_options
from ttt_mm.data.restarts import RestartingLoader
from ttt_mm.data.selection import Selection, index_clips, say_how_read
from ttt_mm.data.skiplist import SkipList, count_reasons, missing_stream_hint
from ttt_mm.data.sources import SPLITS, ClipInfo, ClipSource, SyntheticSource
from ttt_mm.data.synthetic import SyntheticClip
from ttt_mm.data.training_order import ResumableSampler, StreamWindows, WindowDataset, is_seed
from ttt_mm.messages import once, one_line
from ttt_mm.tokenizers.base import FPS, FRAME_SIZE, SAMPLE_RATE

log = logging.getLogger(__name__)

MIN_FILES_FOR_VALIDATION = 3
"""With fewer usable files than this, validation runs on the training files (with a warning)."""
MAX_VALIDATION_SHARE = 0.25
"""The most of the training data's duration that a file moved to validation may take, where none hashed
into it."""
NAMED_FILES = 5
"""The most validation or test files the data's summary line names."""


def _check_settings(positive: dict, non_negative: dict, counts: dict, fractions: dict, seed) -> None:
    """Values that would otherwise fail deep inside a run (a division by zero, a DataLoader's own
    error) or quietly do something else (a negative validation fraction, or minimum length): a
    ValueError naming the key."""
    for key, value in positive.items():
        if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
            unit = " of seconds" if key.endswith(("_seconds", "_timeout")) else ""
            raise ValueError(f"data.{key} must be a positive number{unit}; got {value}")
    for key, value in non_negative.items():
        if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
            raise ValueError(f"data.{key} must be a number of seconds, 0 or more; got {value}")
    for key, value in counts.items():
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"data.{key} must be a whole number >= 1; got {value}")
    for key, value in fractions.items():
        if not 0 <= value <= 1:
            raise ValueError(f"data.{key} must lie in [0, 1]; got {value}")
    if sum(fractions.values()) > 1:
        raise ValueError(f"data.val_fraction + data.test_fraction must be at most 1; got {sum(fractions.values()):g}")
    if not is_seed(seed):
        raise ValueError(f"data.seed must be a whole number from 0 to 2**32 - 1; got {seed}")


STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",)}
"""The splits Lightning's stages read; a split's name as the stage (``test``, or evaluate's ``train``)
reads that split, and any other (``predict``, or None) every split."""


def validation_unit(movable: list[str], seconds: Counter) -> str:
    """Of the training files (or groups: `ttt_mm.data.groups`) that may move to validation (in the order
    of their hash's distance to its range), the nearest that holds at most `MAX_VALIDATION_SHARE` of the
    training ``seconds``, else the shortest: a long recording among a few short ones would take most of
    the training data with it."""
    small = [key for key in movable if seconds[key] <= MAX_VALIDATION_SHARE * seconds.total()]
    return small[0] if small else min(movable, key=lambda key: seconds[key])


HELD_OUT = {
    "val": (
        "validation",
        "name the validation files in a manifest's split column, or data.val_fraction=0 trains on every file "
        "(validation off)",
    ),
    "test": ("test", "test=true scores it, data.test_fraction=0 returns it to training and validation"),
}
"""A held-out split that a few files' hashes made larger than asked: what the data line calls it, and what
to do about it."""


def _units_named(units: list[str]) -> str:
    """Split units as the data line names them: ``groups talk2, talk3; x.wav`` (`split_units`)."""
    groups = [one_line(u.removeprefix(GROUP)) for u in units if u.startswith(GROUP)]
    files = [one_line(u) for u in units if not u.startswith(GROUP)]
    named = [f"group{'s' if len(groups) > 1 else ''} {', '.join(groups)}"] if groups else []
    return "; ".join(named + ([", ".join(files)] if files else []))


class MediaDataModule(L.LightningDataModule):
    """Batches of media windows (see `ttt_mm.data.datasets.collate` for the keys).

    ``clip_seconds`` is the training window (random windows of random clips; with ``stream`` each
    batch row instead walks whole clips window by window, for training with carried state); evaluation
    walks each val/test clip whole in windows of ``eval_window_seconds`` (default ``clip_seconds``),
    which should be a multiple of the tokenizer's ``seconds_per_step``. The default source is the
    synthetic audio-visual set.

    ``sample_rate``, ``fps`` and ``size`` are the media clock of the streams read (None for a stream
    that is not, as evaluation passes for a checkpoint that reads one). ``missing_audio`` (``"skip"``
    or ``"silence"``, see `ReadSpec`) decides what happens to videos
    without sound when both streams are read. ``index_cache`` is the folder of the dataset index
    (None: ``~/.cache/ttt-mm/index``); ``probe_jobs`` processes probe new files (None: up to 4),
    each allowed ``probe_timeout`` seconds (plus 1 s per 20 MB) before it counts as hung.
    """

    def __init__(
        self,
        source: ClipSource | None = None,
        modalities: Sequence[str] = ("audio", "video"),
        clip_seconds: float = 8.0,
        eval_window_seconds: float | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sample_rate: int | None = SAMPLE_RATE,
        fps: float | None = FPS,
        size: int | None = FRAME_SIZE,
        audio_context_seconds: float = 0.025,
        min_seconds: float = 0.5,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        seed: int = 0,
        skip_list: str | None = None,
        missing_audio: str = "skip",
        index_cache: str | None = None,
        probe_jobs: int | None = None,
        probe_timeout: float = PROBE_TIMEOUT,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        timeout: float = 0.0,
        stream: bool = False,
        root: str | None = None,
        earlier_skips: bool = True,
    ) -> None:
        super().__init__()
        self.source = SyntheticSource() if source is None else source
        if root is not None and isinstance(self.source, SyntheticSource):
            raise ValueError(
                f"data.root={root} is set, but the synthetic data generates its clips and reads no files: "
                "choose data=audio_folder, video_folder, av_folder, class_folders or manifest"
            )
        _check_settings(
            positive={
                "clip_seconds": clip_seconds,
                "eval_window_seconds": eval_window_seconds,
                "sample_rate": sample_rate,
                "fps": fps,
                "size": size,
                "probe_timeout": probe_timeout,
            },
            non_negative={
                "min_seconds": min_seconds,
                "audio_context_seconds": audio_context_seconds,
                "timeout": timeout,
            },
            counts={"batch_size": batch_size, "eval_batch_size": eval_batch_size},
            fractions={"val_fraction": val_fraction, "test_fraction": test_fraction},
            seed=seed,
        )
        if skip_list is not None and os.path.isdir(skip_list):
            raise ValueError(f"data.skip_list={skip_list} is a folder; it names a file (a TSV the run writes)")
        clock = (
            ("sample_rate", sample_rate, "audio", SAMPLE_RATE),
            ("fps", fps, "video", FPS),
            ("size", size, "video", FRAME_SIZE),
        )
        for key, value, modality, default in clock:
            if value is None and modality in modalities:
                raise ValueError(
                    f"data.{key} is null, but this run reads {modality}: set it (the default is {default})"
                )
        # a stream this run does not read needs no clock: the defaults fill its fields
        sample_rate = SAMPLE_RATE if sample_rate is None else sample_rate
        fps = FPS if fps is None else fps
        size = FRAME_SIZE if size is None else size
        self.spec = ReadSpec(
            tuple(modalities),
            sample_rate=sample_rate,
            fps=fps,
            size=size,
            audio_context_seconds=audio_context_seconds,
            min_seconds=min_seconds,
            missing_audio=missing_audio,
            skip_silent=True,  # training and evaluation learn and score nothing on digital silence
        )
        self.clip_seconds = clip_seconds
        self.eval_window_seconds = clip_seconds if eval_window_seconds is None else eval_window_seconds
        self.eval_window_key = "clip_seconds" if eval_window_seconds is None else "eval_window_seconds"
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be 0 (read in the training process) or more; got {num_workers}")
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers, self.pin_memory, self.timeout = num_workers, pin_memory, timeout
        self.persistent_workers = persistent_workers and num_workers > 0
        if stream and num_workers > 1 and rank_zero_only.rank == 0:  # (once, not per epoch's loader or per rank)
            # one process walks all rows in order: more workers would each repeat the same stream
            log.warning(
                "data.stream=true trains with one loader worker (its rows walk files in order), "
                "not data.num_workers=%d (which validation and testing use)",
                num_workers,
            )
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.skip_list_path = skip_list
        self.earlier_skips = earlier_skips  # False: files the skip list held before are read again (evaluation)
        self.index_cache, self.probe_jobs, self.probe_timeout = index_cache, probe_jobs, probe_timeout
        self.stream = stream
        del root  # read by the config's source (`${data.root}`); accepted to sit with the data keys and be checked
        self.clips: list[ClipInfo] = []  # the usable clips, in the source's order
        self.rejected: dict[str, str] = {}  # the files left out, with their reasons
        self.splits: dict[str, list[ClipInfo]] = {}
        self._left_out: list[ClipInfo] = []  # the listed clips that cannot be used
        self._records: dict[str, tuple[tuple[int, int], bytes]] = {}  # `_clip_record`'s, by split
        self.skips: SkipList | None = None
        self.modalities_from: str | None = None  # what chose the modalities, when not the config (a checkpoint)
        self.says_how_read_on_setup = True  # False: the caller says it of the clips it reads (`say_how_read`)
        self.trained_on: set[str] | None = None  # a checkpoint's training files, where its data is evaluated
        self.validated_on: set[str] | None = None  # and its validation files
        self._skipped_at_setup: set[str] = set()  # the skip list's names once `setup` had listed the data
        # the split whose unusable files `setup` lists (an evaluation of one); None: every split's (a run reads all)
        self.skip_list_split: str | None = None
        self._selection: Selection | None = None
        self._said: set[str] = set()  # the splits whose files' notes were said (`_say_how_read_once`)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # (listed already: the test after a fit reads its split now)
            self._say_how_read_once(stage)
            return
        path = self.skip_list_path
        if path is None and self.trainer is not None:
            path = os.path.join(self.trainer.default_root_dir, "skipped_media.tsv")
        self.skips = SkipList(path, earlier=self.earlier_skips)
        reading_notes.clear_stale()
        once.clear_stale()
        listed = self.source.clips()
        if not listed:
            where = getattr(self.source, "root", None) or getattr(self.source, "path", None)
            raise ValueError(f"no media files in {where}" if where else "the data source lists no clips")
        known = dict(self.skips.reasons)  # (before this setup adds to it)
        known_bad = {k: self.skips.reasons[k] for c in listed for k in (c.name, c.segment) if k in self.skips}
        selection = index_clips(listed, self.spec, self.index_cache, self.probe_jobs, self.probe_timeout, say=False)
        unit = "clips" if any(c.segment != c.name for c in listed) else "files"  # (a manifest's spans of files)
        self._units = split_units(listed)  # (a manifest's group: its clips share a split)
        self.rejected = known_bad | selection.rejected
        usable = {c.segment for c in selection.clips}
        self._left_out = [c for c in listed if c.segment not in usable]
        listing = self.skip_list_split
        counted = listed if listing is None else [c for c in listed if self._split_of(c) == listing]
        covers = Counter(c.segment if c.segment in selection.rejected else c.name for c in counted)
        self.skips.add_many(  # (those it holds already are not added again)
            self.rejected_in(listing or "all"),
            total=len(counted),
            unit=unit if listing is None else f"{unit} of the {listing} split",
            covers=covers,
        )
        held = [r for c in listed if (r := known.get(c.segment) or known.get(c.name)) is not None]
        if held:  # (add_many says nothing of what the list held: a resumed run would not mention them)
            partly = sum(c.start < self.skips.readable_until(c) < math.inf for c in listed) if self.stream else 0
            log.warning(
                "skipping %d of %d %s already listed in %s (%s)%s",
                len(held),
                len(listed),
                unit,
                self.skips.path,
                count_reasons(held),
                f"; {partly} of them streamed up to where they failed" if partly else "",
            )
        # files that failed in an earlier attempt of this run stay listed (the readers pass over them), so
        # that a resumed run draws from the same list in the same order
        if self.skips.none_readable(selection.clips):  # (a stream reads a file up to where it failed)
            where = f"; each is listed with its reason in {self.skips.path}" if self.skips.path else ""
            if self.skips.path and listing is not None:  # (the other splits' files are not its to list)
                where = f"; those of the {listing} split are listed with their reasons in {self.skips.path}"
            why = self.skips.reasons | self.rejected
            reasons = [why.get(c.segment) or why[c.name] for c in listed]
            hint = missing_stream_hint(reasons, self.spec.modalities, self.modalities_from)
            raise ValueError(f"none of the {len(listed)} {unit} can be used: {count_reasons(reasons)}{hint}{where}")
        self.clips = selection.clips
        self.splits = {name: [] for name in SPLITS}
        for clip in self.clips:
            split = self._split_of(clip)
            if split not in self.splits:
                raise ValueError(f"clip {clip.name} has split {split!r}; expected one of {SPLITS}")
            self.splits[split].append(clip)
        if self.validated_on and self.splits["val"]:
            self._keep_the_runs_validation(warn=stage in (None, "fit"))
        units = {self._units[c.file_key] for c in self.clips}  # (files, or a manifest's groups of them)
        hashed = [c for c in self.clips if c.split is None]
        if not self.splits["train"] and len(units) < MIN_FILES_FOR_VALIDATION and hashed:
            self._train_on_all(hashed, warn=stage in (None, "fit"))
        if not self.splits["train"] and stage in (None, "fit"):
            why = self.why_empty("train") or (
                f"val_fraction={self.val_fraction}, test_fraction={self.test_fraction}: lower the fractions, or "
                "name each file's split in a manifest"
            )
            raise ValueError(f"no training clips among {len(self.clips)} ({why})")
        if self.val_fraction > 0 and not self.splits["val"] and self.splits["train"]:
            self._ensure_validation(warn=stage in (None, "fit"))
        self._selection = selection
        self._skipped_at_setup = set(self.skips.reasons)
        self._say_how_read_once(stage)
        if stage in (None, "fit") and rank_zero_only.rank == 0:
            log.info("data: %s", self.split_summary())
            self._say_unread_pictures()

    def _say_unread_pictures(self) -> None:
        """One line when the config reads only the sound of files that are mostly videos (``data=manifest``
        reads audio unless told otherwise: a probe's manifest of videos then trained on their sound alone)."""
        if self.spec.modalities != ("audio",) or self.modalities_from is not None:
            return
        videos = {c.file_key for c in self.clips if c.info is not None and c.info.has_video}
        files = {c.file_key for c in self.clips}
        if len(videos) * 2 > len(files):
            log.info(
                "data: %d of the %d files are videos, of which this run reads the sound alone "
                "(data.modalities=[audio]); data.modalities=[audio,video] tokenizer=av reads both, "
                "data.modalities=[video] tokenizer=video the pictures",
                len(videos),
                len(files),
            )

    def _say_how_read_once(self, stage: str | None) -> None:
        """`say_how_read` of the splits this stage reads that no earlier stage did (the files other stages
        read would be noise): the test after a fit says its files' notes at the test, once."""
        if not self.says_how_read_on_setup:
            return
        splits = [
            s for s in STAGE_SPLITS.get(stage) or ((stage,) if stage in SPLITS else SPLITS) if s not in self._said
        ]
        self._said.update(splits)
        if splits:
            self.say_how_read([c for split in splits for c in self.splits[split]])

    def say_how_read(self, clips: list[ClipInfo]) -> None:
        """Log how these clips (of this setup's) are read where it is not plainly (`selection.say_how_read`):
        a caller that reads some of a split (evaluate's ``max_files``) says it of those alone."""
        say_how_read(self._selection, self.spec, clips)

    def split_summary(self) -> str:
        """``14 files: 11 train, 1 val (a.mp4), 2 test (b.mp4, c.mp4)``: how many files each split has,
        and which they are for validation and test where they are few (what ``val/*`` was measured on);
        of a manifest with groups, which groups (``32 files in 8 groups: ..., 4 val (group talk3)``)."""
        counts = []
        train = {c.file_key for c in self.splits["train"]}
        for name in SPLITS:
            keys = sorted({c.file_key for c in self.splits[name]})
            if name == "val" and keys and set(keys) == train:  # (too few files to hold one out: `_ensure_validation`)
                counts.append(f"{len(keys)} val (the training files)")
                continue
            units = sorted({self._units[key] for key in keys})  # (a file's own, or its group's: `split_units`)
            named = name != "train" and 0 < len(units) <= NAMED_FILES
            counts.append(f"{len(keys)} {name}" + (f" ({_units_named(units)})" if named else ""))
        unit = "synthetic clips" if any(isinstance(c.media, SyntheticClip) for c in self.clips) else "files"
        files = len({c.file_key for c in self.clips})
        grouped = {key for key in {c.file_key for c in self.clips} if self._units[key].startswith(GROUP)}
        if grouped:
            groups = len({self._units[key] for key in grouped})
            in_groups = f"in {groups} group{'s' if groups > 1 else ''}"
            unit += f" {in_groups}" if len(grouped) == files else f" ({len(grouped)} {in_groups})"
        more = ""
        for name, (called, remedy) in HELD_OUT.items():
            fraction = getattr(self, f"{name}_fraction")
            # hashed there (a manifest's are its own), and not trained on (validation on the training files)
            held = {c.file_key for c in self.splits[name] if c.split is None} - train
            if held and len(held) > 2 * fraction * files:  # (few files: the hash held out more)
                more += (
                    f"; the {called} split holds {len(held)} of the {files} (data.{name}_fraction={fraction:g}), "
                    f"never trained on: {remedy}"
                )
        return f"{files} {unit}: {', '.join(counts)}{more}"

    def _train_on_all(self, hashed: list, warn: bool) -> None:
        """Train on the files of a folder too small to hold any out: with one or two files (or groups of
        a manifest), whether one trains was a matter of its name's hash (a manifest's own splits stay as
        they are)."""
        moved = {c.file_key for c in hashed}
        for name in ("val", "test"):
            self.splits[name] = [c for c in self.splits[name] if c.file_key not in moved]
        self.splits["train"] = hashed
        groups = {self._units[key] for key in moved if self._units[key].startswith(GROUP)}
        level = logging.WARNING if warn else logging.DEBUG
        log.log(
            level,
            "only %d usable file(s)%s, none hashed into training: training on them all",
            len(moved),
            f" in {len(groups)} group(s)" if groups else "",
        )

    def _ensure_validation(self, warn: bool) -> None:
        """Give validation one file when there are enough (moved from training), else, in training, the
        training files (with a warning: val/* then measures fit). Outside training (evaluation) validation
        then stays empty: a command that asks for it says so rather than score training files."""
        files = {c.file_key for c in self.clips}
        train = self.splits["train"]
        unit = self._units  # (each file's split unit: the file, or its manifest group)
        fixed = self._fixed_units()
        movable = sorted(
            {(c.split_hash(unit[c.file_key]), unit[c.file_key]) for c in train if unit[c.file_key] not in fixed}
        )
        units = {unit[c.file_key] for c in train}
        if len(files) >= MIN_FILES_FOR_VALIDATION and len(units) >= 2 and movable:
            seconds = Counter()
            for c in train:
                start, end = clip_span(c, self.spec)
                seconds[unit[c.file_key]] += end - start
            key = validation_unit(self._the_runs_validation([key for _, key in movable], unit), seconds)
            self.splits["val"] = [replace(c, split="val") for c in train if unit[c.file_key] == key]
            self.splits["train"] = [c for c in train if unit[c.file_key] != key]
            level = logging.INFO if warn else logging.DEBUG  # (the split evaluation asks for is its own line)
            moved = len({c.file_key for c in self.splits["val"]})
            group = one_line(key.removeprefix(GROUP))
            log.log(
                level,
                "no file hashed into validation (val_fraction=%g): validating on %s%.1f s of the training files' "
                "%.1f s)",
                self.val_fraction,
                f"group {group} ({moved} file{'s' if moved > 1 else ''}, "
                if key.startswith(GROUP)
                else f"{one_line(key)} (",
                seconds[key],
                seconds.total(),
            )
            return
        if len(files) < MIN_FILES_FOR_VALIDATION:
            why = f"only {len(files)} usable file(s)"
        elif not movable:
            why = self.why_empty("val")
        elif len({c.file_key for c in train}) < 2:
            why = f"only {len({c.file_key for c in train})} training file(s)"
        else:
            why = f"all training files are in one group ({one_line(next(iter(units)).removeprefix(GROUP))})"
        if warn:
            log.warning("%s: validating on the training files, so val/* measures fit, not generalisation", why)
            self.splits["val"] = list(train)

    def _fixed_units(self) -> set[str]:
        """The split units (`split_units`) a row of the source names the split of: the manifest's word,
        never moved between splits."""
        return {self._units[c.file_key] for c in self.clips if c.split is not None}

    def _keep_the_runs_validation(self, warn: bool) -> None:
        """Where a checkpoint's data is read again and files hash into validation, the training files its
        run moved there (`_ensure_validation`: in `validated_on`, not in `trained_on`) stay there too: a
        resumed run, given a new file that hashed into validation, trained on the one its val/* had
        measured. (A manifest's fixed splits stay; some file stays in training.)"""
        unit = self._units
        realpath = os.path.realpath
        recorded = {realpath(f) for f in self.validated_on or ()} - {realpath(f) for f in self.trained_on or ()}
        fixed = self._fixed_units()
        train = self.splits["train"]
        kept = {unit[c.file_key] for c in train if realpath(c.name) in recorded} - fixed
        if not kept or kept == {unit[c.file_key] for c in train}:
            return
        self.splits["val"] += [replace(c, split="val") for c in train if unit[c.file_key] in kept]
        self.splits["train"] = [c for c in train if unit[c.file_key] not in kept]
        log.log(
            logging.INFO if warn else logging.DEBUG,
            "validation keeps %s, which the checkpoint's run validated on, beside the files hashed into it since",
            _units_named(sorted(kept)),
        )

    def _the_runs_validation(self, units: list[str], unit_of: dict[str, str]) -> list[str]:
        """Of these split units of training files (`split_units`; ``unit_of``: each file key's), where a
        checkpoint's data is read again (`validated_on`, `trained_on`), the one its run validated on,
        else those it did not train on: the unit it moved to validation, whatever the files usable now
        or this version's rule would choose."""
        names: dict[str, set[str]] = {}
        for c in self.splits["train"]:
            names.setdefault(unit_of[c.file_key], set()).add(os.path.realpath(c.name))
        for files, held in ((self.validated_on, True), (self.trained_on, False)):
            recorded = {os.path.realpath(f) for f in files or ()}
            if chosen := [u for u in units if bool(names[u] & recorded) == held] if recorded else []:
                return chosen
        return units

    def why_empty(self, split: str) -> str:
        """Why ``split`` holds no clip: a manifest's rows of it that cannot be used, its split column, or
        the fraction of the files hashed into it."""
        if left := sum(c.split == split for c in self._left_out):
            where = f", listed with their reasons in {self.skips.path}" if self.skips and self.skips.path else ""
            return f"the manifest's {left} {split} row(s) cannot be used{where}"
        if self.clips and all(c.split is not None for c in self.clips):
            return f"the manifest's split column puts no row in {split}"
        files = len({c.file_key for c in self.clips})
        if split == "val" and files < MIN_FILES_FOR_VALIDATION:  # (a run on them validated on its training files)
            return (
                f"only {files} usable file(s), too few to hold one out: a run on them validates on its training files"
            )
        return f"data.{split}_fraction={getattr(self, split + '_fraction'):g}" if split in ("val", "test") else ""

    def rejected_in(self, split: str) -> dict[str, str]:
        """The files left out (`rejected`, with their reasons) that ``split`` would have held ("all": every one)."""
        if split == "all":
            return dict(self.rejected)
        held = [c for c in self._left_out if self._split_of(c) == split]
        names = {c.segment for c in held} | {c.name for c in held}  # (the list names a file, or a span of one)
        return {name: why for name, why in self.rejected.items() if name in names}

    def _split_of(self, clip: ClipInfo) -> str:
        return clip.split_of(self.val_fraction, self.test_fraction, self._units[clip.file_key])

    def failed_when_read(self) -> dict[str, list[str]]:
        """The files that failed when read since `setup` listed the data (in a loader worker, or here), by
        split: the skip list's names added since, which the file shared with the workers holds."""
        if self.skips is None:
            return {}
        listed = SkipList(self.skips.path).reasons if self.skips.path else self.skips.reasons
        split_of = {key: name for name, clips in self.splits.items() for c in clips for key in (c.name, c.segment)}
        failed: dict[str, list[str]] = {}
        for name in listed.keys() - self._skipped_at_setup:
            failed.setdefault(split_of.get(name, "train"), []).append(name)
        return {split: sorted(names) for split, names in failed.items()}

    def _loader(self, dataset, batch_size: int, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            **worker_options(self.num_workers),
            collate_fn=collate,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            timeout=self.timeout if self.num_workers > 0 else 0.0,
        )

    def cover_context(self, *tokenizers) -> None:
        """Read at least the audio before each window that these tokenizers' first frame needs (their
        ``win_length - hop_length``: `Decoding.context_samples`), whatever ``audio_context_seconds`` says."""
        need = [t.decoding.context_samples / self.spec.sample_rate for t in tokenizers if t.decoding.context_samples]
        if need and max(need) > self.spec.audio_context_seconds:
            self.spec = replace(self.spec, audio_context_seconds=max(need))

    def _fitting(self):
        """The trainer running this module, if any (a stand-in that only names the run folder is not one)."""
        trainer = self.trainer
        return trainer if trainer is not None and hasattr(trainer, "global_step") else None

    def _position(self) -> tuple[int, int, int]:
        """(optimizer steps done, rank, world size): where a resumed run's data continues, and where a
        new epoch does (`trainer.limit_train_batches` ends epochs; the loader is built again for each).
        ``trainer.overfit_batches`` always starts at the first batches: it trains on them alone."""
        trainer = self._fitting()
        if trainer is None:
            return 0, 0, 1
        steps = 0 if trainer.overfit_batches else trainer.global_step * trainer.accumulate_grad_batches
        return steps, trainer.global_rank, trainer.world_size

    def _order(self) -> dict:
        """The settings a resumed run's data order depends on, the training clips included."""
        _, _, world = self._position()
        train = self.splits.get("train", [])
        clips = [c.segment for c in train]
        digest = hashlib.sha1(os.fsencode("\n".join(clips))).hexdigest()[:8]
        # a file rewritten with another length since: its rows walk another number of windows
        lengths = [(i.audio_duration, i.video_duration) if (i := c.info) is not None else None for c in train]
        return {
            "seed": self.seed,
            "training clips": f"{len(clips)} ({digest})",
            "training clip lengths": hashlib.sha1(repr(lengths).encode()).hexdigest()[:8],
            "data.batch_size": self.batch_size,
            "data.clip_seconds": self.clip_seconds,
            "data.stream": self.stream,
            "processes": world,
            "trainer.accumulate_grad_batches": getattr(self.trainer, "accumulate_grad_batches", 1),
        }

    def state_dict(self) -> dict:
        """Saved in checkpoints by Lightning, to check a resume against (`load_state_dict`), the split
        fractions, so that an evaluation of the checkpoint's val or test split reads its files, and the
        window validation and test score in, which a test of the checkpoint alone is compared with."""
        return {
            "order": self._order(),
            "split": {"val_fraction": self.val_fraction, "test_fraction": self.test_fraction},
            "eval window": self.eval_window_seconds,
            "training clips": self._clip_record("train"),
            "validation clips": self._clip_record("val"),
            "failed training files": self._failed_training_files(),
        }

    def _failed_training_files(self) -> dict[str, tuple[str, float | None]]:
        """The skip list's training files (or spans), with where a stream read each up to: a run resumed in
        another folder starts a list of its own, and without them its streams would count every window of
        a file that failed part-way (`StreamWindows`), landing elsewhere than the interrupted run."""
        if self.skips is None:
            return {}
        keys = self._made_once("training keys", "train", lambda clips: {k for c in clips for k in (c.name, c.segment)})
        return self.skips.entries(keys)

    def _clip_record(self, split: str) -> bytes:
        """`clip_record` of a split's clips (`_made_once`)."""
        return self._made_once(split, split, clip_record)

    def _made_once(self, key: str, split: str, make):
        """``make(clips)`` of a split's clips, made once for each list of them: every save would otherwise
        remake it (0.2 s for 100,000 files, in every process)."""
        clips = self.splits.get(split, [])
        made = self._records.get(key)
        if made is None or made[0] != (id(clips), len(clips)):
            made = self._records[key] = ((id(clips), len(clips)), make(clips))
        return made[1]

    def load_state_dict(self, state: dict) -> None:
        """A run resumed with other batch sizes, windows or processes continues from the same step, but
        in another data order: windows are read again or passed over. Say so, naming the training files
        that changed."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return  # (a checkpoint loaded to test)
        failed = state.get("failed training files", {})
        lacked = [reason for name, (reason, _) in failed.items() if name not in self._skipped_at_setup]
        if self.skips is not None:  # (every process: whichever takes the list's lock first writes them)
            self.skips.carry(failed)
        self._skipped_at_setup |= set(failed)  # (they failed in the checkpoint's run, not in this one)
        if not trainer.is_global_zero:
            return  # (another process of the same run: one says it)
        if lacked:
            log.warning(
                "the checkpoint's run listed %d training files that failed when read, which %s lacked: "
                "listed there too (%s), so that this run reads what the interrupted one would have",
                len(lacked),
                self.skips.path or "this run's skip list",
                count_reasons(lacked),
            )
        now = self._order()
        changed = [f"{k} {v} -> {now[k]}" for k, v in state.get("order", {}).items() if k in now and now[k] != v]
        if changed:
            clips = self._changes(state, "training clips", "train")
            log.warning(
                "resuming with other data settings (%s): the run goes on from its step in a different data order, "
                "so some windows are read again and others passed over%s",
                ", ".join(changed),
                f"; training clips since the checkpoint: {clips}" if clips else "",
            )
        if val := self._changes(state, "validation clips", "val"):
            log.warning(
                "validation clips since the checkpoint: %s: val/* from now on are not comparable with the earlier "
                "validations', nor is the best checkpoint's score",
                val,
            )
        window = state.get("eval window")
        if window is not None and not math.isclose(window, self.eval_window_seconds, rel_tol=1e-9):
            log.warning(
                "validation windows of %g s (data.%s), the checkpoint's run validated in %g s: val/* from now on are "
                "not comparable with the earlier validations', nor is the best checkpoint's score "
                "(data.eval_window_seconds=%.15g validates as it did)",
                self.eval_window_seconds,
                self.eval_window_key,
                window,
                window,
            )

    def _changes(self, state: dict, key: str, split: str) -> str | None:
        """The split's clips added, removed or rewritten since ``state`` (`clip_changes`); None where its
        record is absent (checkpoints written before it was kept)."""
        record = state.get(key)
        return clip_changes(record, self.splits.get(split, [])) if isinstance(record, bytes) else None

    def train_dataloader(self) -> RestartingLoader:
        """Endless: training is counted in steps, and a resumed run continues with the next batch. A
        decoder crash in a worker lists the file and starts a new loader at the same batch (`RestartingLoader`)."""
        steps, rank, world = self._position()
        trainer = self._fitting()
        limit = None if trainer is None or trainer.overfit_batches else trainer.limit_train_batches
        if limit is not None and not (isinstance(limit, float) and limit in (1.0, math.inf)):  # epochs end early
            if trainer.reload_dataloaders_every_n_epochs != 1:
                log.warning(
                    "trainer.limit_train_batches=%s ends every epoch early, and each epoch would read the same "
                    "batches again: set trainer.reload_dataloaders_every_n_epochs=1 (the shipped trainer configs do)",
                    limit,
                )
            if isinstance(limit, int) and limit % trainer.accumulate_grad_batches:
                log.warning(
                    "trainer.limit_train_batches=%d is not a multiple of trainer.accumulate_grad_batches=%d: each "
                    "epoch's last step takes fewer batches, and the next epoch passes over the batches it left",
                    limit,
                    trainer.accumulate_grad_batches,
                )
        if self.stream:

            def build(done: int) -> DataLoader:
                dataset = StreamWindows(
                    self.splits["train"],
                    self.clip_seconds,
                    self.batch_size,
                    self.spec,
                    self.seed,
                    self.skips,
                    start_step=steps + done,
                    rank=rank,
                    world=world,
                )
                workers = min(self.num_workers, 1)  # (one worker at most: said once, in __init__)
                return DataLoader(
                    dataset,
                    batch_size=None,
                    num_workers=workers,
                    **worker_options(workers),
                    pin_memory=self.pin_memory,
                    timeout=self.timeout if workers > 0 else 0.0,
                )

        else:

            def build(done: int) -> DataLoader:
                dataset = WindowDataset(self.splits["train"], self.clip_seconds, self.spec, self.seed, self.skips)
                start = (steps + done) * self.batch_size
                sampler = ResumableSampler(len(dataset), self.seed, start=start, rank=rank, world=world)
                return self._loader(dataset, self.batch_size, sampler)

        return RestartingLoader(build, self.skips)

    def _eval(self, split: str) -> RestartingLoader | EvenPasses:
        """Every clip of the split, whole; a decoder crash in a worker lists the file and the pass starts
        again without it (its first batch marked ``restarted``: the scores so far are void). Under FSDP,
        every process's pass has as many batches (`EvenPasses`)."""

        def build(done: int) -> DataLoader:
            dataset = SequentialWindows(self.splits[split], self.eval_window_seconds, self.spec, self.skips)
            return self._loader(dataset, self.eval_batch_size)

        loader = RestartingLoader(build, self.skips, resume=False)
        strategy = getattr(self._fitting(), "strategy", None)
        if isinstance(strategy, FSDPStrategy) and strategy.world_size > 1:
            return EvenPasses(loader, lambda t: strategy.reduce(t.to(strategy.root_device), reduce_op="sum"))
        return loader

    def val_dataloader(self) -> RestartingLoader | EvenPasses:
        return self._eval("val")

    def test_dataloader(self) -> RestartingLoader | EvenPasses:
        return self._eval("test")
