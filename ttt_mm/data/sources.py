"""Where clips come from: folders, class folders, LibriSpeech, or the synthetic set (manifests:
`ttt_mm.data.manifest`).

Each source is a small typed object (Hydra builds it) whose `clips()` lists `ClipInfo` records
without opening any media, so listing is cheap and happens before DataLoader workers start. Which
of the listed files a dataset reads (their streams, whether they decode at all) is decided from the
dataset index (`ttt_mm.data.index`), the same for every source.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ttt_mm.data.decode import MediaInfo
from ttt_mm.data.synthetic import SyntheticClip
from ttt_mm.messages import first_of, missing, one_line

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".mp2",
    ".m4a",
    ".m4b",
    ".aac",
    ".ac3",
    ".eac3",
    ".mka",
    ".caf",
    ".amr",
    ".wv",
    ".w64",
    ".au",
    ".aif",
    ".aiff",
    ".wma",
    ".g722",
)
VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".vob",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
)
MEDIA_EXTENSIONS = AUDIO_EXTENSIONS + VIDEO_EXTENSIONS
SPLITS = ("train", "val", "test")
JSON_LINES_SUFFIXES = (".jsonl", ".json", ".ndjson")
MANIFEST_SUFFIXES = (".csv", *JSON_LINES_SUFFIXES)
"""File endings read as manifests (`ManifestSource`): CSV, or JSON lines (one object per line)."""


@dataclass(frozen=True)
class ClipInfo:
    """One clip: a file (or synthetic clip) and the span of it to use.

    ``key`` names the clip stably (the path relative to the dataset root) and decides its split
    when ``split`` is not given; every segment of one file shares it, so a file never straddles
    train and validation. ``info`` is what the dataset index found in the file (its streams,
    durations and the backend to read each with); readers probe the file themselves without it.
    ``group`` (a manifest's ``group`` column, e.g. a conversation or a recording session) keeps
    related clips together: neither the train/val/test split nor cross-validation parts a group.
    """

    media: str | SyntheticClip
    start: float = 0.0
    end: float | None = None  # None: to the end of the media
    label: int = -1
    split: str | None = None  # "train", "val" or "test"; None: decided by hashing `key`
    key: str = ""
    info: MediaInfo | None = None
    group: str | None = None

    @property
    def name(self) -> str:
        """What batches report as ``"path"`` and what the skip list records."""
        return str(self.media)

    @property
    def segment(self) -> str:
        """The name of this span of the file: ``name@start-end`` (``end``: to the file's end) for a
        part of a file, else ``name``. What concerns only the span (too short, say) is recorded under
        it, so that the file's other segments stay in."""
        if not self.start and self.end is None:
            return self.name
        return f"{self.name}@{_seconds(self.start)}-{'end' if self.end is None else _seconds(self.end)}"

    @property
    def file_key(self) -> str:
        """Which file the clip is a span of: its key, else its name. Every span of one file shares it."""
        return self.key or self.name

    def split_hash(self, unit: str | None = None) -> float:
        """A number in [0, 1) drawn from the clip's split unit (`ttt_mm.data.groups.split_units`: its
        manifest group's, else its key): what decides the split when the clip has none."""
        digest = hashlib.sha1(os.fsencode(unit or self.file_key)).digest()  # (a name that is not UTF-8: its bytes)
        return int.from_bytes(digest[:8], "big") / 2**64

    def split_of(self, val_fraction: float, test_fraction: float, unit: str | None = None) -> str:
        """The clip's split: its own, or a deterministic hash of its split unit (None: its key)."""
        if self.split is not None:
            return self.split
        u = self.split_hash(unit)
        return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def _seconds(t: float) -> str:
    """``t`` as short as it reads back exactly (``30``, ``12.5``, ``3600.125``): spans that differ
    anywhere get different names (``:g`` keeps 6 digits, so 12345.61 and 12345.64 shared one)."""
    text = repr(float(t))
    return text.removesuffix(".0")


class ClipSource(Protocol):
    def clips(self) -> list[ClipInfo]: ...


def dataset_root(
    value: str | os.PathLike, what: str = "dataset root", fix: str = "or . for the current folder"
) -> Path:
    """``value`` as a path; FileNotFoundError where it is empty: read as the current folder, an unset
    shell variable (``data.root=$DATA``) had every file below it listed."""
    if not str(value).strip():
        raise FileNotFoundError(f"the {what} is empty (data.root=''; an unset shell variable?): name it, {fix}")
    return Path(value)


def _media_files(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under ``root`` with these extensions, through links to folders elsewhere (a folder is
    walked once, so a link cycle ends; a link to a folder inside ``root`` is skipped, its files are
    listed under their own path), each file once (`_each_file_once`). Broken links are listed too,
    so that the dataset index reports them as unreadable instead of them vanishing."""
    return [found.path for found in _each_file_once(_walk(root, extensions, root))]


@dataclass(frozen=True)
class _Found:
    path: Path
    real: str  # the file's real path: one per file, whatever names lead to it
    linked: bool  # reached through a link below the dataset's root


def _walk(root: Path, extensions: tuple[str, ...], base: Path) -> list[_Found]:
    """The media files under ``root`` (a part of the dataset at ``base``), sorted by path. Hidden names
    (starting with ``.``: a Mac's ``._a.wav`` beside ``a.wav``, ``.ipynb_checkpoints``) are left out,
    counted in one log line."""
    if not root.exists():
        raise FileNotFoundError(missing(f"dataset root {root}", root))
    if not root.is_dir():  # (one file: a manifest of one row, data=manifest, reads it)
        if root.suffix.lower() in MANIFEST_SUFFIXES:
            fix = "a manifest is read with data=manifest"
        else:
            fix = "to use one file, list it in a manifest (data=manifest)"
        raise FileNotFoundError(f"dataset root {root} is a file, not a folder; {fix}")
    wanted = _suffixes(extensions)
    top, real_base = os.path.realpath(root), os.path.realpath(base)
    walked = {top}
    found, hidden = [], []
    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=_unlistable):
        real_folder = os.path.realpath(folder)  # once per folder: resolving every file would cost 2-3x
        linked_folder = real_folder != os.path.normpath(os.path.join(real_base, os.path.relpath(folder, base)))
        for name in names:
            if os.path.splitext(name)[1].lower() not in wanted:
                continue
            path = os.path.join(folder, name)
            if name.startswith("."):
                hidden.append(path)
                continue
            if os.path.islink(path):
                found.append(_Found(Path(path), os.path.realpath(path), True))
            else:
                found.append(_Found(Path(path), os.path.join(real_folder, name), linked_folder))
        follow = []
        for name in sorted(subfolders):
            path = os.path.join(folder, name)
            if name.startswith("."):
                hidden.append(path + os.sep)
                continue
            real = os.path.realpath(path)
            if real in walked or (os.path.islink(path) and os.path.commonpath([real, top]) == top):
                continue
            walked.add(real)
            follow.append(name)
        subfolders[:] = follow
    if hidden:
        log.info(
            "%s: left out %d hidden name(s), starting with '.': %s",
            root,
            len(hidden),
            first_of([one_line(h) for h in hidden], 3),
        )
    return sorted(found, key=lambda f: f.path)


def _suffixes(extensions: tuple[str, ...]) -> set[str]:
    """``("mp4", ".WAV")`` as the suffixes a file name ends in: ``{".mp4", ".wav"}``."""
    return {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}


def _each_file_once(found: list[_Found]) -> list[_Found]:
    """``found`` (in its order) without a second name of one file (a link to it, or a path through a
    linked folder): one file listed twice could be trained and validated on, or carry two labels. Of
    the names of one file, the one through no link below the dataset's root is kept, else the first."""
    chosen: dict[str, _Found] = {}
    for f in found:
        if f.real not in chosen or (chosen[f.real].linked and not f.linked):
            chosen[f.real] = f
    kept = {f.path for f in chosen.values()}
    if left := [f for f in found if f.path not in kept]:
        named = [f"{one_line(str(f.path))} (as {one_line(str(chosen[f.real].path))})" for f in left]
        log.info("%d file name(s) left out, another name of a file listed: %s", len(left), first_of(named, 3))
    return [f for f in found if f.path in kept]


def _warn_of_two_classes(found: list[tuple[_Found, int]], kept: dict[str, int], names: list[str]) -> None:
    """One warning when a file sits under several class folders (by links): a clip has one label, and
    it keeps the one of the name `_each_file_once` kept."""
    classes: dict[str, set[int]] = {}
    for f, label in found:
        classes.setdefault(f.real, set()).add(label)
    torn = {real: sorted(names[c] for c in labels) for real, labels in classes.items() if len(labels) > 1}
    if torn:
        real, among = next(iter(torn.items()))
        log.warning(
            "%d file(s) sit under more than one class folder; each keeps one label, e.g. %s (in %s) is %r",
            len(torn),
            one_line(real),
            ", ".join(among),
            names[kept[real]],
        )


def _unlistable(error: OSError) -> None:
    log.warning("%s: cannot list this folder (%s); its files are left out", error.filename, error.strerror)


@dataclass(frozen=True)
class FolderSource:
    """Every media file under ``root``, recursively, chosen by extension; no labels."""

    root: str
    extensions: tuple[str, ...] = MEDIA_EXTENSIONS

    def clips(self) -> list[ClipInfo]:
        root = dataset_root(self.root)
        return [
            ClipInfo(str(p), key=p.relative_to(root).as_posix()) for p in _media_files(root, tuple(self.extensions))
        ]


@dataclass(frozen=True)
class ClassFolderSource:
    """``root/<class>/<file>`` (UCF101, Kinetics): the label is the index of the sorted class name."""

    root: str
    extensions: tuple[str, ...] = MEDIA_EXTENSIONS

    def classes(self) -> list[str]:
        """The class folders' names, sorted; hidden folders (``.ipynb_checkpoints``) are no class."""
        return sorted(d.name for d in dataset_root(self.root).iterdir() if d.is_dir() and not d.name.startswith("."))

    def clips(self) -> list[ClipInfo]:
        root = dataset_root(self.root)
        if not root.exists():
            raise FileNotFoundError(missing(f"dataset root {root}", root))
        names = self.classes() if root.is_dir() else []
        found = [(f, label) for label, name in enumerate(names) for f in _walk(root / name, self.extensions, root)]
        if root.is_dir():
            _say_what_is_in_no_class(root, {f.real for f, _ in found}, self.extensions)
        labels = {f.path: label for f, label in found}
        once = _each_file_once([f for f, _ in found])
        _warn_of_two_classes(found, {f.real: labels[f.path] for f in once}, names)
        out = [ClipInfo(str(f.path), label=labels[f.path], key=f.path.relative_to(root).as_posix()) for f in once]
        if not out:
            raise FileNotFoundError(f"no media files in class folders under {root} (expected root/<class>/<file>)")
        return out


def _say_what_is_in_no_class(root: Path, listed: set[str], extensions: tuple[str, ...]) -> None:
    """Logs what lies beside the class folders: hidden folders (no class), and media files that no
    class folder lists (through a link), which are left out."""
    entries, wanted = sorted(root.iterdir()), _suffixes(extensions)
    if hidden := [d.name + os.sep for d in entries if d.is_dir() and d.name.startswith(".")]:
        log.info("%s: hidden folder(s) are no class and left out: %s", root, first_of(hidden, 3))
    loose = [
        one_line(p.name)
        for p in entries
        if p.suffix.lower() in wanted and not p.name.startswith(".") and not p.is_dir()
        if os.path.realpath(p) not in listed
    ]
    if loose:
        log.warning(
            "%s: %d media file(s) in no class folder left out (root/<class>/<file>): %s",
            root,
            len(loose),
            first_of(loose, 3),
        )


_LIBRISPEECH = re.compile(r"(\d+)-(\d+)-(\d+)\.flac$")


@dataclass(frozen=True)
class LibriSpeechSource:
    """A LibriSpeech split (``root/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``).

    The label is the speaker's index among the sorted speaker ids of the split.
    """

    root: str

    def clips(self) -> list[ClipInfo]:
        root = dataset_root(self.root)
        files = [p for p in _media_files(root, (".flac",)) if _LIBRISPEECH.search(p.name)]
        files = [p for p in files if p.parent.parent.name == p.name.split("-")[0]]
        if not files:
            raise FileNotFoundError(
                f"no LibriSpeech files under {root} (expected <speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac)"
            )
        speakers = sorted({p.parent.parent.name for p in files}, key=int)
        index = {s: i for i, s in enumerate(speakers)}
        return [ClipInfo(str(p), label=index[p.parent.parent.name], key=p.relative_to(root).as_posix()) for p in files]


@dataclass(frozen=True)
class SyntheticSource:
    """``num_clips`` procedural clips of ``duration`` seconds (see `ttt_mm.data.synthetic`)."""

    num_clips: int = 256
    duration: float = 60.0
    seed: int = 0

    def clips(self) -> list[ClipInfo]:
        clips = [SyntheticClip(self.seed, i, self.duration) for i in range(self.num_clips)]
        return [ClipInfo(c, end=self.duration, label=c.label, key=str(c)) for c in clips]


def relative_to(path: str, root: str) -> str:
    """``path`` relative to ``root`` when inside it, else absolute (for portable manifests)."""
    path, root = os.path.abspath(path), os.path.abspath(root)
    return os.path.relpath(path, root) if os.path.commonpath([path, root]) == root else path
