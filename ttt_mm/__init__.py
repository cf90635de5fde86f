"""ttt-mm: Test-Time Training backbones for very long audio and video sequences.

Old import paths of modules that moved (`MOVED`: into ``ttt_mm.embed``, ``ttt_mm.eval``,
``ttt_mm.linear_probe``, ``ttt_mm.data.decode`` and ``ttt_mm.storage``, or renamed) still work until
the next release: importing one gives the module at its new home and a DeprecationWarning (names
that moved between modules likewise, through `moved_names`). They are
resolved by a small import hook rather than by shim files, so the package's top level holds only
``backbone``, ``module`` and ``checkpoint`` beside its sub-packages (the one moved command, ``python -m
ttt_mm.data.probe``, keeps a file: ``-m`` needs one).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

__version__ = "0.1.0"

MOVED = {
    "ttt_mm.embedder": "ttt_mm.embed",
    "ttt_mm.embed_stream": "ttt_mm.embed",
    "ttt_mm.embed_files": "ttt_mm.embed.files",
    "ttt_mm.hear": "ttt_mm.embed.hear",
    "ttt_mm.metrics": "ttt_mm.eval.metrics",
    "ttt_mm.plots": "ttt_mm.eval.plots",
    "ttt_mm.report": "ttt_mm.eval.report",
    "ttt_mm.rollout": "ttt_mm.eval.rollout",
    "ttt_mm.scoring": "ttt_mm.eval.scoring",
    "ttt_mm.data.windows": "ttt_mm.data.media",
    "ttt_mm.data.io": "ttt_mm.data.decode",
    "ttt_mm.data.guard": "ttt_mm.data.decode.guard",
    "ttt_mm.data.isolation": "ttt_mm.data.decode.isolation",
    "ttt_mm.data.atomic": "ttt_mm.storage.atomic",
    "ttt_mm.data.training": "ttt_mm.data.training_order",
    "ttt_mm.eval.features": "ttt_mm.linear_probe.features",
    "ttt_mm.eval.folds": "ttt_mm.linear_probe.folds",
    "ttt_mm.eval.linear_probe": "ttt_mm.linear_probe.classifier",
    "ttt_mm.embed.checkpoint": "ttt_mm.checkpoint",
}
"""Deprecated module path -> its new home (the old paths go in the next release)."""


def moved_names(module: str, homes: dict[str, str]):
    """A module ``__getattr__`` (PEP 562) for names that moved out of ``module``: ``homes`` maps each
    to the module it lives in now, which gives it, with a DeprecationWarning (until the next release)."""

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} is deprecated; import it from {homes[name]}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the paths in `MOVED` and loads each as the module at its new home (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        # stacklevel 2 is the importing line: the import system's own frames are skipped
        warnings.warn(f"{spec.name} is deprecated; import {new} instead", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        """The module was executed at its new home."""


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())  # before the path finders: the old files may linger
