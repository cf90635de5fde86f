"""How the pipeline says things in one line (logs, skip lists, summaries give each file or failure
a single line): an error by its first line, a file name with its line breaks escaped (`lines`)."""

from ttt_mm.messages.lines import first_line, one_line

__all__ = ["first_line", "one_line"]
