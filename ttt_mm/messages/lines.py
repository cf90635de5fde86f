"""An error, a file name or a list of them made to fit one line."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message, stripped; its type's name when it says nothing."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost error of a chain raised ``from`` one another: what a constructor said, under Hydra's
    nested "Error in call to target ..." errors."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def one_line(name: str) -> str:
    """A file name as a log line shows it: a line break in it escaped, so that the line stays one."""
    return name.replace("\r", "\\r").replace("\n", "\\n")


def first_of(items: list[str], at_most: int, sep: str = ", ") -> str:
    """The first ``at_most`` items joined, and how many more there are: ``a, b and 3 more``."""
    more = f" and {len(items) - at_most} more" if len(items) > at_most else ""
    return sep.join(items[:at_most]) + more


SKIPS_NAMED = 5
"""Files a command's closing summary names of those it skipped; the rest are counted (its output
folder lists them all)."""


def skips_named(skipped: list[dict], all_in: str | None = None) -> str:
    """The first `SKIPS_NAMED` of a command's skipped files (``path``, ``reason``), each with its
    reason: ``a.wav (reason); b.mp4 (reason) and 3 more``, and where some go unnamed, the file that
    lists them ``all_in`` (``... and 3 more (all in skipped_media.tsv)``)."""
    named = first_of([f"{one_line(s['path'])} ({s['reason']})" for s in skipped], SKIPS_NAMED, sep="; ")
    return named + (f" (all in {all_in})" if all_in and len(skipped) > SKIPS_NAMED else "")


def why_no_folder(folder: str | os.PathLike, err: OSError) -> str:
    """Why ``folder`` could not be made, from ``mkdir``'s error: a file (or a link to nothing) where a
    folder on its path must be (``File exists`` or ``Not a directory`` named neither), else the error's
    own words."""
    for above in [Path(folder), *Path(folder).parents]:
        if not os.path.lexists(above):
            continue
        if os.path.islink(above) and not os.path.exists(above):
            with contextlib.suppress(OSError):  # (a link that cannot be read: said as mkdir said it)
                return f"{above} is a link to {os.readlink(above)}, which does not exist"
        elif not os.path.isdir(above):
            return f"{above} is a file, not a folder"
        break
    return err.strerror or str(err)


def missing(said: str, path: str | os.PathLike) -> str:
    """``<said> does not exist`` of a ``path`` (``said`` names it: ``dataset root /x``), and where the path
    starts with ``~``, that no shell expanded it (bash expands a ``~`` after ``=`` only in an argument
    shaped as a variable's assignment: ``ckpt_path=~/x``, not ``data.root=~/x``; and never quoted); a
    relative path, the folder it was looked for in (a resume from another folder, a config file's path)."""
    text = f"{said} does not exist"
    if os.fspath(path).startswith("~"):
        text += f" (a ~ reaches a command as it is, not as your home folder: write {os.path.expanduser(path)})"
    elif not os.path.isabs(path):
        text += f" (relative to the folder the command runs in, {os.getcwd()})"
    return text
