"""The exact paths' precision: the dtype they compute and keep their state in, and autocast off around
them, on any device."""

from __future__ import annotations

import contextlib

import torch


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast turned off: it would run the paths' dot products in bfloat16. A device without autocast
    (``meta``, which runs a model for its shapes alone) has nothing to turn off."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def exact_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, else float32: what the exact paths compute in (bf16 or fp16 inputs
    included) and keep their carried state in."""
    return torch.float64 if dtype == torch.float64 else torch.float32
