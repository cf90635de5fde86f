"""An error or a file name made to fit one line."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message, stripped; its type's name when it says nothing."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def one_line(name: str) -> str:
    """A file name as a log line shows it: a line break in it escaped, so that the line stays one."""
    return name.replace("\r", "\\r").replace("\n", "\\n")
