"""Argument types shared by the benchmark commands: a count or a length of zero or less is refused
by argparse with a usage message, not met later as a division by zero or an empty table."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {text}")
    return value


def length_or_zero(text: str) -> int:
    """A length where 0 means "leave those rows out"."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: leave them out); got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text}")
    return value


def add_lact_arguments(p: argparse.ArgumentParser) -> None:
    """The LaCT layer's shape, the same in every benchmark that times one (as released by default)."""
    p.add_argument("--lact-chunk", type=positive_int, default=2048, help="LaCT tokens per fast-weight update")
    p.add_argument("--lact-window", type=positive_int, default=256, help="LaCT attention window (tokens)")
    p.add_argument("--lact-fast-heads", type=positive_int, default=4, help="LaCT fast-weight heads (4: as released)")
