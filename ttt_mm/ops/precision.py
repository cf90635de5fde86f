"""Autocast off around the exact paths, on any device."""

from __future__ import annotations

import contextlib

import torch


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast turned off: it would run the paths' dot products in bfloat16. A device without autocast
    (``meta``, which runs a model for its shapes alone) has nothing to turn off."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
