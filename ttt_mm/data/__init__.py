"""Media in, tensors out: decoding (`io`), clip sources, datasets, and the Lightning DataModule.

`MediaDataModule` is imported on first use, so that the probe command, benchmarks and DataLoader
workers do not pay for importing Lightning.
"""

from typing import Any

from ttt_mm.data.datasets import ReadSpec, SequentialWindows, WindowDataset, collate, iter_windows
from ttt_mm.data.io import MediaError, MediaInfo, probe, read_audio, read_video
from ttt_mm.data.skiplist import SkipList
from ttt_mm.data.sources import (
    ClassFolderSource,
    ClipInfo,
    FolderSource,
    LibriSpeechSource,
    ManifestSource,
    SyntheticSource,
)
from ttt_mm.data.synthetic import SyntheticClip

__all__ = [
    "ClassFolderSource",
    "ClipInfo",
    "FolderSource",
    "LibriSpeechSource",
    "ManifestSource",
    "MediaDataModule",
    "MediaError",
    "MediaInfo",
    "ReadSpec",
    "SequentialWindows",
    "SkipList",
    "SyntheticClip",
    "SyntheticSource",
    "WindowDataset",
    "collate",
    "iter_windows",
    "probe",
    "read_audio",
    "read_video",
]


def __getattr__(name: str) -> Any:
    if name == "MediaDataModule":
        from ttt_mm.data.datamodule import MediaDataModule

        return MediaDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
