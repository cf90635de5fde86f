"""How a constructor refuses an argument: by its name alone at the start of the message, so that a
config error can name the key it came from (`ttt_mm.tasks.config_errors.config_error_message`)."""

from __future__ import annotations

import math
import numbers


def check_positive(**arguments: float) -> None:
    """Rates and scales must be finite numbers above zero: zero divides by zero or makes nothing, a negative
    one fails far from its cause, and a string (``"2"``, a quoted override) fails in a comparison."""
    for name, value in arguments.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a number; got {value!r}")
        if not value > 0:
            raise ValueError(f"{name} must be positive; got {value}")
        if not math.isfinite(value):  # (an infinite rate or size turns every output into NaN)
            raise ValueError(f"{name} must be finite; got {value}")


def check_count(**arguments: int) -> None:
    """Sizes and counts must be whole numbers above zero: a float (``2.0``) fails later as a tensor
    size or a range, far from its cause."""
    for name, value in arguments.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be a whole number; got {value!r}")
        check_positive(**{name: value})
