"""Bad files found so far, shared by every DataLoader worker through one append-only file.

Each line is ``<path>\\t<reason>``, with backslashes, tabs and line breaks in either written as
``\\\\``, ``\\t``, ``\\n`` and ``\\r`` (file names may hold them), so every entry reads back
exactly. A file that a training stream read part of before it failed has a third field, the second
of the file from which it is left out (`SkipList.readable_until`): its windows before that were
trained on, and a resumed stream counts them to land where the interrupted one was. A file is
logged (one WARNING) only when it is first added, whichever worker finds it: additions take an
exclusive lock and re-read the file first. A run that starts with an existing skip list never
opens those files again (but for what a stream read of them before they failed). Files the dataset index
leaves out are added together (`SkipList.add_many`), with one log line counting them by kind.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence

from ttt_mm.storage.locks import exclusive

log = logging.getLogger("ttt_mm.data")

REFRESH_S = 1.0
"""How often lookups re-read the file for other processes' entries (each addition reads it anyway)."""


class SkipList:
    """Paths to skip, with reasons; kept in memory and, when ``path`` is set, in a TSV file.

    ``earlier=False`` leaves out the entries the file already holds (an evaluation reads every file
    afresh, even into a training run's folder): only what is added from now on counts, and is appended."""

    def __init__(self, path: str | os.PathLike | None = None, earlier: bool = True) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reasons: dict[str, str] = {}
        self.read_to: dict[str, float] = {}  # where a listed file is readable up to (`readable_until`)
        self._version: tuple[int, int] | None = None  # the file's time and size when last read
        self._skip_lines = 0  # lines of the file that are not ours to read
        self._torn: str | None = None  # the name of a last line read without its line break (`_parse`)
        self._looked = -math.inf  # when the file was last looked at (`_refresh`)
        if not earlier and self.path is not None and os.path.exists(self.path):
            with _open(self.path, "r") as f:
                text = f.read()
            self._skip_lines = text.count("\n") + (text != "" and not text.endswith("\n"))  # (a torn line: one)
        self._refresh()

    def _refresh(self) -> None:
        """Read what other processes added, looking at the file at most every `REFRESH_S` (a lookup per
        clip of a long list would cost a stat each): a clip listed meanwhile is only tried once more."""
        now = time.monotonic()
        if self.path is None or now - self._looked < REFRESH_S:
            return
        self._looked = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if (version := (st.st_mtime_ns, st.st_size)) != self._version:  # (two appends may share a clock tick)
            self._version = version
            with _open(self.path, "r") as f:
                self._parse(f.read())

    def _parse(self, text: str) -> None:
        lines = text.split("\n")  # not splitlines: it also breaks at what a name may hold
        for number, line in enumerate(lines[self._skip_lines :], self._skip_lines):
            name, _, reason = line.partition("\t")
            reason, _, read_to = reason.partition("\t")
            name = _unescape(name)
            if not name or (name in self.reasons and name != self._torn):
                continue
            # a last line without its line break is being appended, or was cut by a killed run: its number
            # may be cut (all of the file out, until the line is read whole)
            torn = number == len(lines) - 1
            self.reasons[name] = _unescape(reason)
            self.read_to.pop(name, None)
            if read_to and not torn:
                with contextlib.suppress(ValueError):
                    self.read_to[name] = float(read_to)
            self._torn = name if torn else None

    def __contains__(self, name: str) -> bool:
        self._refresh()
        return name in self.reasons

    def __len__(self) -> int:
        return len(self.reasons)

    def holds(self, clip) -> bool:
        """Whether a clip (a `ClipInfo`) is listed: its file, or this span of it (`ClipInfo.segment`)."""
        return clip.name in self or clip.segment in self

    def reason(self, clip, default: str = "") -> str:
        """Why a listed clip (`holds`) is: this span's own reason, else its file's; ``default`` where neither."""
        return self.reasons.get(clip.segment) or self.reasons.get(clip.name, default)

    def holds_all(self, clips: Sequence) -> bool:
        """Whether every clip is listed (`holds`), so none is left to read whole; True for none."""
        return all(self.holds(c) for c in clips)

    def none_readable(self, clips: Sequence) -> bool:
        """Whether no clip has a window left to read in a stream (`readable_until`, which reads a listed
        file up to where it failed); True for none."""
        return all(self.readable_until(c) <= c.start for c in clips)

    def readable_until(self, clip) -> float:
        """The second of its file from which a clip is not read: ``inf`` for a clip not listed, ``-inf``
        for one listed whole, else where a stream's read of the clip failed part-way through (its file's,
        listed by its name, holds for each span of it; a span's, by `ClipInfo.segment`, for that span)."""
        until = math.inf
        for key in {clip.name, clip.segment}:
            if key in self:
                until = min(until, self.read_to.get(key, -math.inf))
        return until

    def add(self, name: str, reason: str, read_to: float | None = None) -> bool:
        """Record a bad file (or a span of one, by its `ClipInfo.segment`), and with ``read_to`` the
        second of the file from which it fails (what comes before was read); returns False (and logs
        nothing) if it was already known."""
        if not self._append({name: reason}, {} if read_to is None else {name: read_to}):
            return False
        where = f" (added to {self.path})" if self.path else ""
        since = f" from {self.read_to[name]:.3f} s on" if self.read_to.get(name, 0) > 0 else ""  # (0: all of it)
        log.warning("skipping %s%s: %s%s", _escape(name), since, self.reasons[name], where)
        return True

    def add_many(
        self, reasons: Mapping[str, str], total: int, unit: str = "files", covers: Mapping[str, int] | None = None
    ) -> int:
        """Record many bad files at once (of ``total`` listed) with one log line; returns how many were new.
        ``unit``: what was listed (``clips`` where some are spans of a file); ``covers``: how many of
        those each name stands for (a file's name: all its spans; 1 where not given)."""
        added = self._append(reasons)
        if added:
            where = f"; each with its reason in {self.path}" if self.path else ""
            each = [r for name, r in added.items() for _ in range((covers or {}).get(name, 1))]
            log.warning("skipping %d of %d %s (%s)%s", len(each), total, unit, count_reasons(each), where)
        return len(added)

    def entries(self, names: set[str]) -> dict[str, tuple[str, float | None]]:
        """``name -> (reason, read_to)`` of the listed ones among ``names``, as the file holds them now (what
        other processes added included): what a checkpoint carries to a resume with a list of its own."""
        self._looked = -math.inf  # (read the file now, not at most every `REFRESH_S`)
        self._refresh()
        return {name: (reason, self.read_to.get(name)) for name, reason in self.reasons.items() if name in names}

    def carry(self, entries: Mapping[str, tuple[str, float | None]]) -> dict[str, str]:
        """Add `entries` that are not listed yet, with where each is readable to; returns them (nothing logged)."""
        read_to = {name: at for name, (_, at) in entries.items() if at is not None}
        return self._append({name: reason for name, (reason, _) in entries.items()}, read_to)

    def _append(self, reasons: Mapping[str, str], read_to: Mapping[str, float] | None = None) -> dict[str, str]:
        """Add the entries not known yet (with where each is readable to, where given), under the file
        lock; returns them."""
        new = {name: " ".join(reason.split()) for name, reason in reasons.items() if name not in self}  # one line
        read_to = read_to or {}
        if new and self.path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with _open(self.path, "a+") as f:  # (closing releases the lock)
                exclusive(f, self.path)
                f.seek(0)
                text = f.read()
                self._parse(text)
                new = {name: reason for name, reason in new.items() if name not in self.reasons}
                torn = CUT_SHORT if text and not text.endswith("\n") else ""  # (its writer held the lock: killed)
                f.write(torn + "".join(_line(name, reason, read_to.get(name)) for name, reason in new.items()))
                f.flush()
        self.reasons.update(new)
        self.read_to.update({name: read_to[name] for name in new if name in read_to})
        return new


CUT_SHORT = "\t(cut short by a killed run)\n"
"""What ends a last line found without its line break by the next writer: a field no number reads as,
so that a number cut short in it (``12.`` of ``12.5``) is not read as where the file is readable to."""


def _line(name: str, reason: str, read_to: float | None) -> str:
    """One entry of the file; ``read_to`` as `repr` writes it, which reads back as the same float."""
    return f"{_escape(name)}\t{_escape(reason)}" + ("" if read_to is None else f"\t{read_to!r}") + "\n"


def _open(path: str, mode: str):
    """The skip list as text: UTF-8, file names that are not (undecodable bytes) kept as they are, no
    newline translation."""
    return open(path, mode, encoding="utf-8", errors="surrogateescape", newline="")


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _escape(text: str) -> str:
    return text.translate(str.maketrans(_ESCAPES))


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m[1], m[0]), text)


_NUMBER = re.compile(r"(?:(?<![\w.)\]])-)?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
"""A number in a reason, with its sign where the minus stands alone ("-3 dB"; not "0-60", a span)."""


def _gist(reason: str) -> tuple[str, list[str]]:
    """A reason without its parenthesised details, what follows a comma and a leading count, as a
    ``str.format`` template with each number left in it as ``{}``; and those numbers. A reason with
    nothing left (all details) is its own template, without numbers."""
    kind, previous = reason, None
    while kind != previous:  # innermost parentheses first: "(... (invalid data))"
        kind, previous = re.sub(r"\s*\([^()]*\)", "", kind), kind
    kind = re.sub(r"^\d+ (?!of )", "", kind.split(", ")[0]).strip()  # ("8 of the 8 frames": a part, kept)
    if not kind:
        return reason.replace("{", "{{").replace("}", "}}"), []
    return _NUMBER.sub("{}", kind.replace("{", "{{").replace("}", "}}")), _NUMBER.findall(kind)


def reason_kind(reason: str) -> str:
    """A reason without its particulars (numbers, parenthesised details, what follows a comma), to
    count reasons by kind: "10 NaN/Inf audio samples, the first at 0.250 s" -> "NaN/Inf audio samples"."""
    form, numbers = _gist(reason)
    return form.format(*["N"] * len(numbers))


def count_reasons(reasons: Iterable[str]) -> str:
    """``"3 x not a readable media container, 2 x only 0.2 to 0.4 s of audio, 1 x decoder crashed: SIGABRT"``,
    the commonest first; a number left in a kind is given as the range it spans, or as ``N`` where
    another number of the kind varies too (two ranges side by side would read as one: "32 to 40 to 39")."""
    kinds: dict[str, list[list[str]]] = {}
    for reason in reasons:
        form, numbers = _gist(reason)
        kinds.setdefault(form, []).append(numbers)
    parts = []
    for form, numbers in sorted(kinds.items(), key=lambda kind: -len(kind[1])):
        spans = []
        for values in zip(*numbers):
            low, high = min(values, key=float), max(values, key=float)
            spans.append(low if float(low) == float(high) else (low, high))
        ranges = sum(isinstance(span, tuple) for span in spans)
        spans = [span if not isinstance(span, tuple) else "N" if ranges > 1 else " to ".join(span) for span in spans]
        parts.append(f"{len(numbers)} x {form.format(*spans)}")
    return ", ".join(parts)


SILENT_TRACK = "the audio is digital silence"
"""Why a run that reads video and audio leaves out a video whose sound is all zeros (`ttt_mm.data.selection`):
as one without sound, which ``data.missing_audio=silence`` reads."""


def missing_stream_hint(reasons: list[str], modalities: tuple[str, ...], chosen_by: str | None) -> str:
    """What to set when most files lack a stream that the run reads (sound files read as videos, say);
    ``chosen_by``: what decided the modalities, when not the config (then it is named instead)."""
    for stream, other in (("video", "audio"), ("audio", "video")):
        silent = (
            sum(reason_kind(r) == SILENT_TRACK for r in reasons) if stream == "audio" and other in modalities else 0
        )
        lacking = sum(reason_kind(r) == f"no {stream} stream" for r in reasons) + silent
        if stream not in modalities or lacking <= len(reasons) / 2:
            continue
        what = f"no {stream} stream" + (" or only digital silence" if silent else "")
        if chosen_by:
            return f" ({lacking} have {what}, which {chosen_by} reads: modalities=[{','.join(modalities)}])"
        silence = " (or data.missing_audio=silence)" if stream == "audio" and other in modalities else ""
        need = f"data.modalities=[{other}] tokenizer={other}{silence}"
        return f" ({lacking} have {what}: files of {other} alone need {need})"
    return ""


def unusable_message(clips: Sequence, skips: SkipList) -> str:
    """The error when no clip is left: how many there were and why each kind failed."""
    reasons = [skips.reason(c, "unknown") for c in clips]
    where = f" (each listed with its reason in {skips.path})" if skips.path else ""
    return f"none of the {len(clips)} clips can be read: {count_reasons(reasons)}{where}"
