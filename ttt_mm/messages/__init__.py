"""How the pipeline says things in one line (logs, skip lists, summaries give each file or failure
a single line): an error by its first line, and a chain of them by its root cause; a file name with
its line breaks escaped; a long list by its first items and a count (`lines`); an argument a
constructor refuses, by its name (`arguments`); how far a command is through its files, in a line
every so often where no terminal shows a bar (`progress`)."""

from ttt_mm.messages.arguments import check_count, check_positive
from ttt_mm.messages.lines import first_line, first_of, missing, one_line, root_cause, skips_named, why_no_folder

__all__ = [
    "check_count",
    "check_positive",
    "first_line",
    "first_of",
    "missing",
    "one_line",
    "root_cause",
    "skips_named",
    "why_no_folder",
]
