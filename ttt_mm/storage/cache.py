"""The per-user cache folder that the dataset index and the compiled CPU loops share, so that one
setting (``$XDG_CACHE_HOME``) moves both."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/ttt-mm/<kind>`` (``~/.cache/ttt-mm/<kind>``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ttt-mm" / kind
