"""What every entry point shares: the config folder, the config error, and the config's resolvers
(registered on import, so anything that composes ``conf/`` imports this module first)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


class ConfigError(ValueError):
    """A config value that cannot work; the message says which key and why."""


def _run_dir(ckpt_path: str | None, default: str) -> str:
    """Resuming from ``<run>/checkpoints/<name>.ckpt`` continues in ``<run>``; otherwise ``default``."""
    if not ckpt_path:
        return default
    return str(Path(ckpt_path).resolve().parent.parent)


def _eq(a, b) -> bool:
    """``${eq:${model.backbone.variant},mamba}``: one config value switching another on."""
    return a == b


OmegaConf.register_new_resolver("run_dir", _run_dir, replace=True)
OmegaConf.register_new_resolver("eq", _eq, replace=True)
