"""A bar over the files a command reads: tqdm's on a terminal; where the output is a file or a pipe
(a job's log), a plain line every `LINE_SECONDS` instead, so that a long run is not silent there."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)

LINE_SECONDS = 30.0
"""Seconds between the plain lines, as training's progress lines (`callbacks.progress_bar.line_seconds`)."""

T = TypeVar("T")


class FilesBar(Generic[T]):
    """Iterates ``items`` (``desc``: what is done to them), with tqdm's bar where ``shown`` and the output is a
    terminal, plain lines where it is not; nothing where not ``shown``. ``set_postfix`` as tqdm's."""

    def __init__(self, items: Sequence[T], desc: str, shown: bool, unit: str = "file") -> None:
        self.bar = tqdm(items, unit=unit, desc=desc, disable=not shown or None)
        self.items, self.desc, self.unit = items, desc, unit
        self.plain = shown and self.bar.disable  # (tqdm's None: off where the output is no terminal)
        self.postfix: dict[str, object] = {}

    def set_postfix(self, **values: object) -> None:
        self.postfix |= values
        self.bar.set_postfix(**values)

    def __iter__(self) -> Iterator[T]:
        start = last = time.monotonic()
        for done, item in enumerate(self.bar, 1):
            yield item
            now = time.monotonic()
            if self.plain and now - last >= LINE_SECONDS and done < len(self.items):
                last = now
                extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
                log.info(
                    "%s: %d of %d %ss, %.1f min%s",
                    self.desc,
                    done,
                    len(self.items),
                    self.unit,
                    (now - start) / 60,
                    extra,
                )
