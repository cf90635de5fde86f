"""Manifests: a CSV (with a header) or JSON lines file listing clips, read into `ClipInfo` records
with every row checked (its line named when it cannot be used), and written back."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ttt_mm.data.groups import joined
from ttt_mm.data.index import RECORD_FIELDS
from ttt_mm.data.sources import JSON_LINES_SUFFIXES, SPLITS, ClipInfo, dataset_root
from ttt_mm.messages import missing, one_line
from ttt_mm.storage.atomic import write_csv

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "start", "end", "label", "split", "group")
"""The columns `ManifestSource` reads (only ``path`` is required) and `write_manifest` writes."""


@dataclass(frozen=True)
class ManifestSource:
    """A CSV (with a header) or JSONL manifest: ``path`` and optional ``start``, ``end``, ``label``,
    ``split`` (train, val or test) and ``group`` columns.

    Relative paths are taken from the manifest's folder. String labels become indices of their
    sorted set (`classes` names them). Rows with an ``error`` field (unreadable files listed by the
    probe command) are clips like the others: the dataset index probes each file again (a fixed one
    is read) and leaves out those that still fail, each listed with its reason like a bad file of a
    folder. Rows repeating the path, start and end of an earlier row with the same label, split and
    group are left out (a copy would be read twice and could land in two
    splits or folds); a repeat with a different label, split or group is an error, as it cannot be
    told which one is meant. The file is read and checked once per source; a row that cannot be
    used is an error naming its line.
    """

    path: str

    def rows(self) -> list[dict]:
        """The rows used (header names and values stripped of spaces), as read."""
        return [row for _, row, _ in self._table]

    def classes(self) -> list[str]:
        """Label names by index (``ClipInfo.label``): the sorted string labels, or the numbers of integer labels."""
        return _label_names(self.path, self.rows())

    def clips(self) -> list[ClipInfo]:
        names = _label_names(self.path, self.rows())
        index = {n: i for i, n in enumerate(names)}
        keys: dict[str, str] = {}  # file -> the key of its first row: one key per file, however spelled
        folder = _folder(Path(self.path))
        paths = [Path(str(row["path"])) for _, row, _ in self._table]
        inherited = self._inherited_splits
        splits = [row.get("split") or split for (_, row, _), split in zip(self._table, inherited, strict=True)]
        _warn_of_paths_from_here(self.path, folder, paths)
        _warn_of_overlaps(self.path, self._files, [span for _, _, span in self._table], splits)
        out = []
        for (_, row, (start, end)), path, real, split in zip(self._table, paths, self._files, splits, strict=True):
            media = _media_path(folder, path)
            label = row.get("label")
            out.append(
                ClipInfo(
                    str(media),
                    start=start,
                    end=end,
                    label=-1 if _unlabelled(label) else index[_label_name(label)],
                    split=split,
                    key=keys.setdefault(real, _split_key(path)),
                    group=_group(row),
                )
            )
        return out

    @cached_property
    def _files(self) -> list[str]:
        """The file of each row used, resolved (links, ``..``): one file however its rows spell it."""
        folder = _folder(Path(self.path))
        return [os.path.realpath(_media_path(folder, Path(str(row["path"])))) for _, row, _ in self._table]

    @cached_property
    def _inherited_splits(self) -> list[str | None]:
        """The split each row without one takes (None for the others): the one the other rows of its
        file and of its group (joined where they share a file: `ttt_mm.data.groups`) name, so that no
        file or conversation is both trained on and validated (the hash would put its rows anywhere).
        A file or group whose rows name several splits leaves the rest to the hash, with a warning (a
        group, with one in any case: the column meant to keep it together)."""
        rows = [row for _, row, _ in self._table]
        units = joined(self._files, [_group(row) for row in rows])
        named: dict[int, set[str]] = {}
        groups: dict[int, str] = {}  # unit -> its least group value
        for row, unit in zip(rows, units):
            if row.get("split"):
                named.setdefault(unit, set()).add(row["split"])
            if (g := _group(row)) is not None:
                groups[unit] = min(groups.get(unit, g), g)
        if parted := sorted((groups[u], sorted(s)) for u, s in named.items() if len(s) > 1 and u in groups):
            group, splits = parted[0]
            log.warning(
                "%s: the split column puts %d group(s) in several splits (e.g. group %s: %s): such a group is "
                "partly trained on and partly held out; give all of a group's rows one split to keep it together",
                self.path,
                len(parted),
                one_line(group),
                ", ".join(splits),
            )
        mixed = {  # unit -> a file of it
            unit: real
            for row, unit, real in zip(rows, units, self._files)
            if not row.get("split") and len(named.get(unit, ())) > 1
        }
        if mixed:
            log.warning(
                "%s: %d file(s) or group(s) with rows of several splits also have rows without one, whose split "
                "is drawn by a hash (of the group's name, else the file's path; e.g. %s): give those rows a split",
                self.path,
                len(mixed),
                next(iter(mixed.values())),
            )
        return [
            None if row.get("split") or len(named.get(u, ())) != 1 else next(iter(named[u]))
            for row, u in zip(rows, units)
        ]

    @cached_property
    def _table(self) -> list[tuple[int, dict, tuple[float, float | None]]]:
        """``(line, row, (start, end))`` of every row used."""
        manifest = dataset_root(self.path, "manifest's path", "a CSV or JSONL file")
        if manifest.is_dir():
            raise ValueError(
                f"manifest {manifest} is a folder; data=manifest needs a CSV or JSONL file "
                "(for a folder of media use data=audio_folder, video_folder, av_folder or class_folders)"
            )
        if not manifest.is_file() and str(self.path).startswith("~"):
            raise FileNotFoundError(missing(f"manifest {manifest}", self.path))
        if not manifest.is_file():
            where = "" if manifest.is_absolute() else f" (a relative path: from the current folder, {Path.cwd()})"
            raise FileNotFoundError(f"manifest {manifest} not found{where}")
        try:
            text = manifest.read_text(encoding="utf-8-sig")  # Excel starts its UTF-8 CSVs with a byte-order mark
        except UnicodeDecodeError:
            raise ValueError(f"manifest {manifest} is not a UTF-8 text file (CSV or JSONL)") from None
        if manifest.suffix.lower() in JSON_LINES_SUFFIXES:
            rows = _json_lines(manifest, text)
        else:
            rows = _csv_rows(manifest, text)
        for line, row in rows:
            if "path" not in row:
                raise ValueError(f"{manifest}, line {line}: no 'path' column ({_columns_read(row)})")
            if row.get("path") in (None, ""):
                raise ValueError(f"{manifest}, line {line}: no 'path'")
            if row.get("split") not in (None, "", *SPLITS):
                raise ValueError(f"{manifest}, line {line}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
        unknown = [c for c in dict.fromkeys(c for _, row in rows for c in row) if c not in _KNOWN_COLUMNS]
        if unknown:
            log.warning(
                "%s: unknown column%s %s ignored (the columns read: %s)",
                manifest,
                "s" if len(unknown) > 1 else "",
                ", ".join(repr(c) for c in unknown),
                ", ".join(MANIFEST_COLUMNS),
            )
        return _without_repeats(manifest, [(line, row, _span(manifest, line, row)) for line, row in rows])


# what the probe command writes beside path is known too: its output is a manifest ("": a trailing comma)
_KNOWN_COLUMNS = {"", *MANIFEST_COLUMNS, *RECORD_FIELDS}


def _columns_read(row: dict) -> str:
    """What a row without a ``path`` column was read as, and the likely slip."""
    names = ", ".join(repr(c) for c in row) or "none"
    if len(row) == 1 and any(d in next(iter(row)) for d in ";\t|"):
        return f"the one column read is {names}: columns are separated by commas"
    return f"the columns read: {names}; names are lower case"


def _csv_rows(manifest: Path, text: str) -> list[tuple[int, dict]]:
    """``(line, row)`` of a CSV with a header; rows shorter than the header get empty values."""
    reader = csv.reader(io.StringIO(text, newline=""))  # a quoted value may hold a line break
    header = [name.strip() for name in next((row for row in reader if any(v.strip() for v in row)), [])]
    at = f"{manifest}, line {reader.line_num}"  # (the header's: blank lines before it are passed over)
    if header and "path" not in header:  # (checked here too: a one-line file has no row to say it)
        raise ValueError(f"{at}: no 'path' column ({_columns_read(dict.fromkeys(header))})")
    if twice := sorted({name for name in header if name and header.count(name) > 1}):
        raise ValueError(f"{at}: column {twice[0]!r} appears twice in the header")
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        if any(value.strip() for value in values[len(header) :]):
            raise ValueError(
                f"{manifest}, line {reader.line_num}: {len(values)} values under {len(header)} columns "
                "(quote a path that holds a comma)"
            )
        values += [""] * (len(header) - len(values))
        rows.append((reader.line_num, {name: value.strip() for name, value in zip(header, values)}))
    return rows


class _RepeatedKey(Exception):
    """A JSON object names a key twice (``json`` would keep the last value silently)."""


def _object_once_per_key(pairs: list[tuple[str, object]]) -> dict:
    keys = [k.strip() for k, _ in pairs]
    if twice := sorted({k for k in keys if keys.count(k) > 1}):
        raise _RepeatedKey(twice[0])
    return dict(pairs)


def _json_lines(manifest: Path, text: str) -> list[tuple[int, dict]]:
    """``(line, row)`` of a JSON lines file (one object per line; blank lines skipped)."""
    rows = []
    for line, item in enumerate(text.split("\n"), 1):  # (not splitlines: a JSON string may hold U+2028 as it is)
        if not item.strip():
            continue
        try:
            row = json.loads(item, object_pairs_hook=_object_once_per_key)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest}, line {line}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        except _RepeatedKey as exc:
            raise ValueError(f"{manifest}, line {line}: key {exc.args[0]!r} appears twice") from None
        if not isinstance(row, dict):
            raise ValueError(f'{manifest}, line {line}: not a JSON object ({{"path": ...}})')
        rows.append((line, {k.strip(): v.strip() if isinstance(v, str) else v for k, v in row.items()}))
    return rows


def _span(manifest: Path, line: int, row: dict) -> tuple[float, float | None]:
    """A row's ``(start, end)`` in seconds (end None: to the end of the file)."""
    start, end = _seconds(manifest, line, row, "start") or 0.0, _seconds(manifest, line, row, "end")
    if end is not None and end <= start:
        where = "before" if end < start else "at"
        raise ValueError(f"{manifest}, line {line}: end {end:g} is {where} start {start:g}; the clip would be empty")
    return start, end


def _seconds(manifest: Path, line: int, row: dict, column: str) -> float | None:
    value = row.get(column)
    if value in (None, ""):
        return None
    try:
        seconds = math.nan if isinstance(value, bool) else float(value)  # (JSON true is not 1 s)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{manifest}, line {line}: {column} {value!r} is not a time in seconds (a number >= 0)")
    return seconds


def _without_repeats(manifest: Path, rows: list[tuple]) -> list[tuple]:
    """The rows without those repeating an earlier row's file and span (logged in one line); a file
    under two names (a link and its target) is one file, as in class folders. A row with an ``error``
    (the probe command's record of a bad file) gives way to another row of the same clip, whatever
    their order: that one says what the clip is."""
    first: dict[tuple, tuple] = {}
    kept: dict[tuple, tuple] = {}
    repeats = []
    folder = _folder(manifest)
    for line, row, (start, end) in sorted(rows, key=lambda r: bool(r[1].get("error"))):
        key = (os.path.realpath(_media_path(folder, Path(str(row["path"])))), start, end)
        if key not in first:
            first[key] = (line, row)
            kept[key] = (line, row, (start, end))
            continue
        if row.get("error"):
            continue
        earlier, other = first[key]
        for column in ("label", "split", "group"):
            if _cell(column, other.get(column)) != _cell(column, row.get(column)):
                raise ValueError(
                    f"{manifest}, lines {earlier} and {line}: the same clip ({row['path']} from {start:g} to "
                    f"{'the end' if end is None else f'{end:g}'}) with different {column}s "
                    f"({other.get(column)!r}, {row.get(column)!r}); a clip can have only one"
                )
        repeats.append((line, earlier, row["path"]))
    if repeats:
        line, earlier, name = repeats[0]
        log.warning(
            "%s: left out %d repeated row%s (the path, start and end of an earlier row; the first: line %d, %s, "
            "repeats line %d)",
            manifest,
            len(repeats),
            "s" if len(repeats) > 1 else "",
            line,
            name,
            earlier,
        )
    return sorted(kept.values(), key=lambda r: r[0])  # (in the manifest's order)


LOOKED_AT = 64
"""Relative paths of a manifest looked for from the current folder too (`_warn_of_paths_from_here`):
the first, as a manifest written from the wrong folder shows it in every row."""


def _warn_of_paths_from_here(manifest: str, folder: Path, paths: list[Path]) -> None:
    """One warning where relative paths name no file from the manifest's folder but do from the current
    one: a manifest written beside the data it lists, as ``data/clips/a.wav`` run from the project's top."""
    if folder.resolve() == Path.cwd().resolve():
        return
    relative = list(dict.fromkeys(p for p in paths if not p.is_absolute()))[:LOOKED_AT]  # (a stat or two each)
    if here := [p for p in relative if not (folder / p).exists() and p.exists()]:
        log.warning(
            "%s: %d of %d relative path(s) looked at name no file from the manifest's folder (%s), where relative "
            "paths start, but do from the current folder (e.g. %s): write them from the manifest's folder, or absolute",
            manifest,
            len(here),
            len(relative),
            folder,
            one_line(str(here[0])),
        )


def _warn_of_overlaps(
    manifest: str, files: list[str], spans: list[tuple[float, float | None]], splits: list[str | None]
) -> None:
    """One warning where spans of one file in different splits overlap (a whole-file row and a span
    of it, say): their common part is trained on and held out. Spans that only meet, or rows whose
    split is left to the hash, are not counted."""
    by_file: dict[str, list[tuple[float, float, str]]] = {}
    for real, (start, end), split in zip(files, spans, splits):
        if split:
            by_file.setdefault(real, []).append((start, math.inf if end is None else end, split))
    found = []  # (file, (start, end, split) of two overlapping spans)
    for real, rows in by_file.items():
        reach: dict[str, tuple[float, float, str]] = {}  # split -> its span reaching furthest so far
        for span in sorted(rows):
            start, end, split = span
            if other := next((r for sp, r in reach.items() if sp != split and r[1] > start), None):
                found.append((real, other, span))
                break
            if split not in reach or end > reach[split][1]:
                reach[split] = span
    if found:
        real, a, b = found[0]
        said = " and ".join(f"{s:g}-{'end' if e == math.inf else f'{e:g}'} s in {sp}" for s, e, sp in (a, b))
        log.warning(
            "%s: %d file(s) have spans in different splits that overlap (e.g. %s: %s): their common part is "
            "in both splits (trained on and held out, or validated and tested); give overlapping spans one split",
            manifest,
            len(found),
            one_line(real),
            said,
        )


def _folder(manifest: Path) -> Path:
    """Where a row's relative path starts: the folder of the manifest itself, a link to the file
    followed (its paths were written where it lives, not where it is linked from); links among the
    folders above it are kept, so clip names stay as the user spells the path."""
    path = Path(manifest)
    for _ in range(40):  # (a loop of links: the index reports its files)
        if not path.is_symlink():
            break
        target = Path(os.readlink(path))
        path = target if target.is_absolute() else Path(os.path.normpath(path.parent / target))
    return path.parent


def _media_path(folder: Path, path: Path) -> Path:
    """The file a row's path names: a relative one is taken from ``folder`` (`_folder`)."""
    return path if path.is_absolute() else folder / path


def _cell(column: str, value: object) -> str:
    """A cell as compared between rows: empty, unlabelled and no group (`_group`) are the same, a number
    and its text too, and a label the class it names ("01" and 1)."""
    if (
        value is None
        or (column == "label" and _unlabelled(value))
        or (column == "group" and not _group({column: value}))
    ):
        return ""
    return _label_name(value) if column == "label" else str(value)


def _label_names(manifest: str, rows: list[dict]) -> list[str]:
    labels = {_label_name(r["label"]) for r in rows if not _unlabelled(r.get("label"))}
    numbers = {x for x in labels if _label_number(x) is not None}
    if numbers and numbers != labels:
        raise ValueError(f"{manifest}: the label column mixes numbers and names; use one or the other")
    if numbers:
        return [str(i) for i in range(max(int(x) for x in numbers) + 1)]
    return sorted(labels)


def _split_key(path: Path) -> str:
    """What a clip's split is hashed from, and embed names its output by: its path as the manifest
    writes it, normalised (``./a.wav`` and ``sub/../a.wav`` are ``a.wav``), so that every span of a
    file lands in one split, and relative paths split alike wherever the data is moved (absolute ones
    are hashed as written: moved, they split anew). A file spelled several ways (relative and
    absolute, or a link and its target) takes the key of its first row."""
    return os.path.normpath(path)


def _label_name(label: object) -> str:
    """The class a label names: a whole number as written without leading zeros or decimals ("007",
    7.0 and "7.0" are class 7: pandas writes an integer column with gaps as floats); a JSON boolean
    as ``false`` / ``true``."""
    if isinstance(label, bool):
        return str(label).lower()
    number = _label_number(label)
    return str(label) if number is None else str(number)


def _label_number(label: object) -> int | None:
    """The whole number a label is written as, else None."""
    if isinstance(label, bool):
        return None
    if isinstance(label, int):
        return label
    if isinstance(label, float):
        return int(label) if label.is_integer() else None
    if isinstance(label, str) and re.fullmatch(r"-?\d+(\.0*)?", label):
        return int(label.split(".")[0])
    return None


def _group(row: dict) -> str | None:
    """A row's group (the ``group`` column), None where it has none (a JSON NaN, as pandas writes a
    missing value, included: as a group, it would join every row without one)."""
    group = row.get("group")
    return None if group in (None, "") or (isinstance(group, float) and math.isnan(group)) else str(group)


def _unlabelled(label: object) -> bool:
    """An empty label, a JSON NaN (what pandas and ``json.dumps`` write for a missing value), or a
    negative number (-1 is what unlabelled clips carry)."""
    if isinstance(label, float) and math.isnan(label):
        return True
    number = _label_number(label)
    return label in (None, "") or (number is not None and number < 0)


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write a CSV manifest with the `MANIFEST_COLUMNS` (missing fields empty), under a temporary name
    renamed into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_csv(target, rows, list(MANIFEST_COLUMNS))
