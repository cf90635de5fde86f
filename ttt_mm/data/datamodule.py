"""LightningDataModule over any clip source: splits, random training windows, whole-file evaluation.

Nothing is decoded in the main process: `setup` only lists clips, and every decoder is opened in
the process that reads (each DataLoader worker gets its own, see `ttt_mm.data.guard`). Splits come
from the source (a manifest ``split`` column) or from a hash of each clip's key, so they never
change when files are added. The skip list defaults to ``<trainer.default_root_dir>/skipped_media.tsv``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import lightning as L
from torch.utils.data import DataLoader

from ttt_mm.data.datasets import ReadSpec, SequentialWindows, WindowDataset, collate
from ttt_mm.data.skiplist import SkipList
from ttt_mm.data.sources import ClipInfo, ClipSource, SyntheticSource
from ttt_mm.data.training import ResumableSampler, StreamWindows
from ttt_mm.tokenizers.base import FPS, FRAME_SIZE, SAMPLE_RATE

SPLITS = ("train", "val", "test")


class MediaDataModule(L.LightningDataModule):
    """Batches of media windows (see `ttt_mm.data.datasets.collate` for the keys).

    ``clip_seconds`` is the training window (random windows of random clips; with ``stream`` each
    batch row instead walks whole clips window by window, for training with carried state); evaluation
    walks each val/test clip whole in windows of ``eval_window_seconds`` (default ``clip_seconds``),
    which should be a multiple of the tokenizer's ``seconds_per_step``. The default source is the
    synthetic audio-visual set.
    """

    def __init__(
        self,
        source: ClipSource | None = None,
        modalities: Sequence[str] = ("audio", "video"),
        clip_seconds: float = 8.0,
        eval_window_seconds: float | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sample_rate: int = SAMPLE_RATE,
        fps: float = FPS,
        size: int = FRAME_SIZE,
        audio_context_seconds: float = 0.025,
        min_seconds: float = 0.5,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        seed: int = 0,
        skip_list: str | None = None,
        max_retries: int = 8,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        timeout: float = 0.0,
        stream: bool = False,
        root: str | None = None,
    ) -> None:
        super().__init__()
        self.source = SyntheticSource() if source is None else source
        self.spec = ReadSpec(tuple(modalities), sample_rate, fps, size, audio_context_seconds, min_seconds)
        self.clip_seconds = clip_seconds
        self.eval_window_seconds = clip_seconds if eval_window_seconds is None else eval_window_seconds
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers, self.pin_memory, self.timeout = num_workers, pin_memory, timeout
        self.persistent_workers = persistent_workers and num_workers > 0
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.skip_list_path, self.max_retries = skip_list, max_retries
        self.stream, self.root = stream, root
        self.splits: dict[str, list[ClipInfo]] = {}
        self.skips: SkipList | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        path = self.skip_list_path
        if path is None and self.trainer is not None:
            path = os.path.join(self.trainer.default_root_dir, "skipped_media.tsv")
        self.skips = SkipList(path)
        clips = [c for c in self.source.clips() if c.name not in self.skips]
        self.splits = {name: [] for name in SPLITS}
        for clip in clips:
            split = clip.split_of(self.val_fraction, self.test_fraction)
            if split not in self.splits:
                raise ValueError(f"clip {clip.name} has split {split!r}; expected one of {SPLITS}")
            self.splits[split].append(clip)
        if not self.splits["train"] and stage in (None, "fit"):
            fractions = f"val_fraction={self.val_fraction}, test_fraction={self.test_fraction}"
            raise ValueError(f"no training clips among {len(clips)} ({fractions})")

    def _loader(self, dataset, batch_size: int, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            timeout=self.timeout if self.num_workers > 0 else 0.0,
        )

    def _position(self) -> tuple[int, int, int]:
        """(optimizer steps done, rank, world size): where a resumed run's data continues."""
        trainer = self.trainer
        if trainer is None or not hasattr(trainer, "global_step"):
            return 0, 0, 1
        return trainer.global_step * trainer.accumulate_grad_batches, trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        """Endless: training is counted in steps, and a resumed run continues with the next batch."""
        steps, rank, world = self._position()
        if self.stream:
            dataset = StreamWindows(
                self.splits["train"],
                self.clip_seconds,
                self.batch_size,
                self.spec,
                self.seed,
                self.skips,
                start_step=steps,
                rank=rank,
                world=world,
            )
            # one process walks all rows in order: more workers would each repeat the same stream
            return DataLoader(
                dataset, batch_size=None, num_workers=min(self.num_workers, 1), pin_memory=self.pin_memory
            )
        dataset = WindowDataset(
            self.splits["train"], self.clip_seconds, self.spec, self.seed, self.skips, self.max_retries
        )
        sampler = ResumableSampler(len(dataset), self.seed, start=steps * self.batch_size, rank=rank, world=world)
        return self._loader(dataset, self.batch_size, sampler)

    def _eval(self, split: str) -> DataLoader:
        dataset = SequentialWindows(self.splits[split], self.eval_window_seconds, self.spec, self.skips)
        return self._loader(dataset, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._eval("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval("test")
