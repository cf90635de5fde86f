"""Where clips come from: folders, class folders, manifests, LibriSpeech, or the synthetic set.

Each source is a small typed object (Hydra builds it) whose `clips()` lists `ClipInfo` records
without opening any media, so listing is cheap and happens before DataLoader workers start. Which
of the listed files a dataset reads (their streams, whether they decode at all) is decided from the
dataset index (`ttt_mm.data.index`), the same for every source.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ttt_mm.data.atomic import write_csv
from ttt_mm.data.io import MediaInfo
from ttt_mm.data.synthetic import SyntheticClip

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".g722")
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
    ".wmv",
    ".flv",
    ".3gp",
)
MEDIA_EXTENSIONS = AUDIO_EXTENSIONS + VIDEO_EXTENSIONS
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
    related clips together: cross-validation never splits a group.
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
        return f"{self.name}@{self.start:g}-{'end' if self.end is None else f'{self.end:g}'}"

    def split_hash(self) -> float:
        """A number in [0, 1) drawn from the key: what decides the split when the clip has none."""
        digest = hashlib.sha1((self.key or self.name).encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def split_of(self, val_fraction: float, test_fraction: float) -> str:
        """The clip's split: its own, or a deterministic hash of its key."""
        if self.split is not None:
            return self.split
        u = self.split_hash()
        return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


class ClipSource(Protocol):
    def clips(self) -> list[ClipInfo]: ...


def _media_files(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a directory")
    wanted = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in wanted and p.is_file())


@dataclass(frozen=True)
class FolderSource:
    """Every media file under ``root``, recursively, chosen by extension; no labels."""

    root: str
    extensions: tuple[str, ...] = MEDIA_EXTENSIONS

    def clips(self) -> list[ClipInfo]:
        root = Path(self.root)
        return [
            ClipInfo(str(p), key=p.relative_to(root).as_posix()) for p in _media_files(root, tuple(self.extensions))
        ]


@dataclass(frozen=True)
class ClassFolderSource:
    """``root/<class>/<file>`` (UCF101, Kinetics): the label is the index of the sorted class name."""

    root: str
    extensions: tuple[str, ...] = MEDIA_EXTENSIONS

    def classes(self) -> list[str]:
        return sorted(d.name for d in Path(self.root).iterdir() if d.is_dir())

    def clips(self) -> list[ClipInfo]:
        root = Path(self.root)
        names = self.classes() if root.is_dir() else []
        out = []
        for label, name in enumerate(names):
            for p in _media_files(root / name, tuple(self.extensions)):
                out.append(ClipInfo(str(p), label=label, key=p.relative_to(root).as_posix()))
        if not out:
            raise FileNotFoundError(f"no media files in class folders under {root} (expected root/<class>/<file>)")
        return out


_LIBRISPEECH = re.compile(r"(\d+)-(\d+)-(\d+)\.flac$")


@dataclass(frozen=True)
class LibriSpeechSource:
    """A LibriSpeech split (``root/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``).

    The label is the speaker's index among the sorted speaker ids of the split.
    """

    root: str

    def clips(self) -> list[ClipInfo]:
        root = Path(self.root)
        files = [p for p in _media_files(root, (".flac",)) if _LIBRISPEECH.search(p.name)]
        files = [p for p in files if p.parent.parent.name == p.name.split("-")[0]]
        if not files:
            raise FileNotFoundError(
                f"no LibriSpeech files under {root} (expected <speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac)"
            )
        speakers = sorted({p.parent.parent.name for p in files}, key=int)
        index = {s: i for i, s in enumerate(speakers)}
        return [ClipInfo(str(p), label=index[p.parent.parent.name], key=p.relative_to(root).as_posix()) for p in files]


MANIFEST_COLUMNS = ("path", "start", "end", "label", "split", "group")
"""The columns `ManifestSource` reads (only ``path`` is required) and `write_manifest` writes."""


@dataclass(frozen=True)
class ManifestSource:
    """A CSV (with a header) or JSONL manifest: ``path`` and optional ``start``, ``end``, ``label``,
    ``split`` (train, val or test) and ``group`` columns.

    Relative paths are taken from the manifest's folder. String labels become indices of their
    sorted set (`classes` names them). Rows with an ``error`` field (unreadable files listed by the
    probe command) are left out.
    """

    path: str

    def rows(self) -> list[dict]:
        manifest = Path(self.path)
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest {manifest} not found")
        text = manifest.read_text()
        if manifest.suffix.lower() in JSON_LINES_SUFFIXES:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = list(csv.DictReader(text.splitlines()))
        for number, row in enumerate(rows, 1):
            if not row.get("path"):
                raise ValueError(f"{manifest}: row {number} has no 'path'")
        return [r for r in rows if not r.get("error")]

    def classes(self) -> list[str]:
        """Label names by index (``ClipInfo.label``): the sorted string labels, or the numbers of integer labels."""
        return _label_names(self.path, self.rows())

    def clips(self) -> list[ClipInfo]:
        base = Path(self.path).parent
        rows = self.rows()
        names = _label_names(self.path, rows)
        index = {n: i for i, n in enumerate(names)}
        out = []
        for row in rows:
            path = Path(row["path"])
            full = path if path.is_absolute() else base / path
            label = row.get("label")
            end = row.get("end")
            out.append(
                ClipInfo(
                    str(full),
                    start=float(row.get("start") or 0.0),
                    end=None if end in (None, "") else float(end),
                    label=-1 if _unlabelled(label) else index[str(label)],
                    split=row.get("split") or None,
                    key=str(row["path"]),
                    group=None if row.get("group") in (None, "") else str(row["group"]),
                )
            )
        return out


def _label_names(manifest: str, rows: list[dict]) -> list[str]:
    labels = {str(r["label"]) for r in rows if not _unlabelled(r.get("label"))}
    numbers = {x for x in labels if _is_int(x)}
    if numbers and numbers != labels:
        raise ValueError(f"{manifest}: the label column mixes numbers and names; use one or the other")
    if numbers:
        return [str(i) for i in range(max(int(x) for x in numbers) + 1)]
    return sorted(labels)


def _unlabelled(label: object) -> bool:
    """An empty label, or a negative number (-1 is what unlabelled clips carry)."""
    return label in (None, "") or (_is_int(label) and int(label) < 0)


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write a CSV manifest with the `MANIFEST_COLUMNS` (missing fields empty), under a temporary name
    renamed into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_csv(target, rows, list(MANIFEST_COLUMNS))


def _is_int(value: object) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())


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
