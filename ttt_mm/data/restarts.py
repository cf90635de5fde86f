"""Loaders that go on after a decoder crash: the file is listed and the loader built again.

A native decoder that crashes on a file kills the DataLoader worker reading it (SIGSEGV, SIGABRT: no
``except`` runs), and PyTorch then ends the iteration with an error that names no file. The index
opens every file once in a sandbox (`ttt_mm.data.decode.isolation`), but a file can still fail deeper
in, hours into a run. `RestartingLoader` turns that into what a readable failure is: the file (named
by its worker's note, `ttt_mm.data.reading_notes`) goes into the skip list with the signal, one line
is logged, and a new loader goes on.

- Training: it starts at the batch the training loop was waiting for. The data orders are pure
  functions of the position (`ttt_mm.data.training_order`), so random windows are those that the run
  would have read had the file failed in Python (a window of the listed file replaced by its
  stand-in). In a stream every row restarts its state at the first batch after the restart; a row
  whose file crashed on its first window goes on as after a failure in Python, but one that had
  read part of the file goes on that many windows further along the clips after it (the new
  stream's fast-forward leaves the listed file out from its start).
- Evaluation (validation, test): leaving a file out changes which worker reads what, so the pass
  starts again, its first batch marked ``restarted`` (`SequenceModel` drops what it had scored).
  Under ``trainer.limit_val_batches`` the batches before the restart count towards the limit, so
  that pass scores fewer.

PyTorch reports a dead worker from a SIGCHLD handler too, which raises wherever the training process
happens to be (in the middle of a forward pass). The loader's workers are taken off that handler's
list, so their death surfaces where it can be handled: in the loader's own wait for data, within 5 s
(or ``data.timeout`` when that is set). Where PyTorch lacks the internals this uses, a crash ends the
run as before (`ttt_mm.tasks.resume_advice.where_to_resume` then names the file and lists it for the resumed run).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from ttt_mm.data import reading_notes
from ttt_mm.data.decode.isolation import CRASH_SIGNALS, crash_reason, signal_name
from ttt_mm.data.skiplist import SkipList

log = logging.getLogger(__name__)

RAISED_IN_WORKER = re.compile(r"Caught \w+ in DataLoader worker process")
"""How PyTorch raises again, in the reading process, an error a worker raised and lived on after (the
dataset's own, such as "none of the 4 clips can be read"): not a worker that died."""
DEATH_WAIT_S = 5.0
"""How long a loader error that a dying worker causes waits for the worker's exit to show."""


_DYING = (RuntimeError, OSError, EOFError)
"""What a loader raises when a worker died: PyTorch's "exited unexpectedly" or "killed by signal", or
an error of the pipe or socket the dead worker was sending a batch through (seen before its exit is)."""
_END, _CRASHED = object(), object()


class RestartingLoader:
    """A loader that is built again when a decoder crash kills one of its workers (the file listed in
    ``skips``): training's at the batch the loop waited for, an evaluation pass's from its start.

    Args:
        build: ``build(n)`` is the loader that starts ``n`` batches after the first one of this loader
            (an evaluation pass is built with ``n = 0`` only).
        skips: the skip list its datasets read (the same object: a new loader's workers start with the
            crashed file in it).
        resume: True for the training orders, pure functions of the position; False for an evaluation
            pass, whose order leaving out a file changes: it is read again from its start, its first
            batch marked ``batch["restarted"] = True`` (what was scored before it is void).
    """

    def __init__(self, build: Callable[[int], DataLoader], skips: SkipList, resume: bool = True) -> None:
        self.build, self.skips, self.resume = build, skips, resume
        self.loader, self.offset = build(0), 0  # the loader in use, and where it starts

    def __iter__(self) -> Iterator:
        done, restarted = self.offset, False
        while True:
            batches = self._started(self.loader)
            while batches is not None:
                batch = self._next(batches)
                if batch is _END:
                    return
                if batch is _CRASHED:
                    break
                if restarted and not self.resume:
                    batch["restarted"] = True
                elif restarted and "reset" in batch:  # a row inside the crashed file now stands elsewhere
                    batch["reset"] = torch.ones_like(batch["reset"])
                restarted = False
                yield batch
                done += 1
            del batches
            done = done if self.resume else 0
            self.loader, self.offset, restarted = self.build(done), done, True
            where = f"batch {done} of this epoch (the one the training step waited for)" if self.resume else "its start"
            log.info("a new data loader goes on from %s", where)

    def _started(self, loader: DataLoader):
        """``iter(loader)`` off PyTorch's SIGCHLD handler, or None when a worker that persists from the
        last pass (``persistent_workers``, still reading ahead) crashed meanwhile: ``iter`` waits for it."""
        try:
            batches = iter(loader)
        except _DYING as exc:
            self._list_the_crash(getattr(loader, "_iterator", None), exc)
            return None
        _unwatched(batches)
        return batches

    def _next(self, batches):
        """The next batch, `_END`, or `_CRASHED` once the crash is listed."""
        try:
            return next(batches)
        except StopIteration:
            return _END
        except _DYING as exc:
            self._list_the_crash(batches, exc)
            return _CRASHED

    def _list_the_crash(self, batches, exc: BaseException) -> None:
        """Lists the file whose decoder killed a worker; re-raises ``exc`` for any other error, or when
        no worker died of a signal, one died otherwise (SIGKILL: memory) or left no note."""
        text = str(exc)
        if RAISED_IN_WORKER.search(text) or (isinstance(exc, RuntimeError) and "DataLoader worker" not in text):
            raise exc  # (the dataset's own error, raised again by the loader: its worker lives)
        workers = list(getattr(batches, "_workers", []))
        deadline = time.monotonic() + DEATH_WAIT_S
        while not (dead := [w for w in workers if w.exitcode is not None and w.exitcode < 0]):
            if time.monotonic() > deadline:
                raise exc
            time.sleep(0.05)  # (a pipe cut by a dying worker can be seen before its exit is)
        how = {w: signal_name(-w.exitcode) for w in dead}
        names = {w: reading_notes.peek(w.pid) for w in dead}
        if any(how[w] not in CRASH_SIGNALS or names[w] is None or names[w] in self.skips for w in dead):
            # (killed from outside, not while reading, or a listed file read again, which includes one that a
            # stream reads up to where it failed in Python: its entry stays, so a new loader would crash again)
            raise exc
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        for worker in workers:  # (the notes of the workers stopped mid-read go too)
            reading_notes.left_by(worker.pid)
        for worker in dead:
            self.skips.add(names[worker], crash_reason(how[worker]))


def _unwatched(batches) -> None:
    """Takes a loader's workers off PyTorch's SIGCHLD handler (see the module's docstring)."""
    if not getattr(batches, "_worker_pids_set", False):
        return
    try:
        from torch.utils.data._utils import signal_handling

        signal_handling._remove_worker_pids(id(batches))
    except (ImportError, AttributeError, RuntimeError):
        return
    batches._worker_pids_set = False
