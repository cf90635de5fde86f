"""Media in, tensors out: decoding (`decode`), the dataset index (`index`: every file probed once, in a
subprocess) and the clips a reader can use (`selection`), clip sources, datasets, and the Lightning
DataModule.

`MediaDataModule` is imported on first use, so that the probe command, benchmarks and DataLoader
workers do not pay for importing Lightning.
"""

import warnings
from typing import Any

from ttt_mm.data.datasets import ReadSpec, SequentialWindows, collate, iter_windows
from ttt_mm.data.decode import MediaError, MediaInfo, read_audio, read_video
from ttt_mm.data.index import index_files
from ttt_mm.data.manifest import ManifestSource
from ttt_mm.data.selection import Selection, index_clips
from ttt_mm.data.skiplist import SkipList
from ttt_mm.data.sources import ClassFolderSource, ClipInfo, FolderSource, LibriSpeechSource, SyntheticSource
from ttt_mm.data.synthetic import SyntheticClip
from ttt_mm.data.training_order import WindowDataset

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
    "Selection",
    "SkipList",
    "SyntheticClip",
    "SyntheticSource",
    "WindowDataset",
    "collate",
    "index_clips",
    "index_files",
    "iter_windows",
    "read_audio",
    "read_video",
]


def __getattr__(name: str) -> Any:
    if name == "MediaDataModule":
        from ttt_mm.data.datamodule import MediaDataModule

        return MediaDataModule
    if name == "probe":  # the name also of the old command module, ttt_mm.data.probe
        warnings.warn(
            "ttt_mm.data.probe (the function) is deprecated: use ttt_mm.data.decode.probe for one file in this "
            "process, or ttt_mm.data.index_files to probe files in subprocesses",
            DeprecationWarning,
            stacklevel=2,
        )
        from ttt_mm.data.decode import probe

        return probe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
