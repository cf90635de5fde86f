"""How a constructor refuses an argument: by its name alone at the start of the message, so that a
config error can name the key it came from (`ttt_mm.tasks.common.config_error_message`)."""

from __future__ import annotations


def check_positive(**arguments: float) -> None:
    """Sizes, counts and rates must be above zero: zero divides by zero or makes nothing, and a
    negative size fails far from its cause."""
    for name, value in arguments.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive; got {value}")
