"""Process-local decoder caches and a watchdog, so that decoding is fork-safe and never hangs.

Decoder handles (decord readers, PyAV containers) own native state, decord's also native threads.
A forked DataLoader worker inherits the parent's Python objects but not those threads, so freeing
an inherited handle can crash or block: `LRUCache` therefore forgets everything it held in a
forked child, never freeing a native handle (``native=True`` caches), a child's garbage collector
never visits what it inherited, and each worker opens its own readers.
decord can also loop forever inside native code (a container that claims frames it cannot decode),
so `run_with_timeout` runs a call on a daemon thread and gives up after a deadline: the caller gets
an exception it can log and skip, and the stuck thread is left behind (it cannot be killed from
Python), counted, and capped.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MAX_HUNG_THREADS = 8
"""Stuck decoder threads one process may leave behind before every further decode is refused."""

_caches: list[LRUCache[Any]] = []
_abandoned: list[Any] = []  # handles that must never be freed in this process
_hung: list[str] = []  # descriptions of calls that never returned


def abandon(handle: Any) -> None:
    """Keep a native reader alive forever (its finalizer never runs); decord's is also detached."""
    if hasattr(handle, "_handle"):
        handle._handle = None  # decord readers free their native object only when this is set
    _abandoned.append(handle)


class LRUCache(Generic[T]):
    """Least-recently-used cache bounded by entry count and by a summed cost (e.g. samples).

    ``native``: the values are decoder handles, which a forked child must never free.
    """

    def __init__(self, max_items: int, max_cost: float = float("inf"), native: bool = False) -> None:
        self.max_items, self.max_cost, self.native = max_items, max_cost, native
        self._items: OrderedDict[Hashable, tuple[T, float]] = OrderedDict()
        self._cost = 0.0
        _caches.append(self)

    def get(self, key: Hashable) -> T | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value: T, cost: float = 0.0) -> T:
        self.pop(key)
        self._items[key] = (value, cost)
        self._cost += cost
        while len(self._items) > 1 and (len(self._items) > self.max_items or self._cost > self.max_cost):
            _, (_, old_cost) = self._items.popitem(last=False)
            self._cost -= old_cost
        return value

    def pop(self, key: Hashable) -> T | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self._cost -= item[1]
        return item[0]

    def clear(self) -> None:
        """Drop every entry (finalizers run as usual)."""
        self._items.clear()
        self._cost = 0.0

    def forget_inherited(self) -> None:
        """In a forked child: drop every entry, without running the finalizer of a native handle."""
        if self.native:
            for value, _ in self._items.values():
                abandon(value)
        self._items.clear()
        self._cost = 0.0

    def __len__(self) -> int:
        return len(self._items)


def _after_fork_in_child() -> None:
    for cache in _caches:
        cache.forget_inherited()
    # Nothing inherited is collected here: a reader held only by a reference cycle (say, a kept
    # exception whose traceback holds the frame that opened it) would otherwise be freed by this
    # child's collector, which then waits forever for decoder threads the child does not have.
    # Inherited cycles stay allocated (a worker's life); what the child makes itself is collected.
    gc.freeze()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _free_native_readers() -> None:
    """Free the cached readers while the interpreter still runs: decord's, freed only as it tears
    down (its decoding thread still running), can end a process that did its work with a crash (a real
    H.264 file with decoding errors: exit status 134 or 139)."""
    for cache in _caches:
        if cache.native:
            cache.clear()


atexit.register(_free_native_readers)


_stderr_lock = threading.Lock()
_stderr_depth = 0
_stderr_saved: int | None = None
_stderr_kept = False  # (`keep_native_stderr`)


def keep_native_stderr() -> None:
    """Leave file descriptor 2 as it is while native decoders run (`native_stderr_silenced`): in a
    process whose stderr is a file of its own, read for the last words of a decoder that aborts it."""
    global _stderr_kept
    _stderr_kept = True


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while native decoders run.

    decord prints its own errors to stderr (not through ffmpeg's log level), which would add
    native noise next to our one log line per bad file. Python-level writes to stderr from other
    threads during the call are lost too, so keep the calls short. Re-entrant across threads.
    """
    global _stderr_depth, _stderr_saved
    if _stderr_kept:
        yield
        return
    with _stderr_lock:
        if _stderr_depth == 0:
            try:
                sys.stderr.flush()
                _stderr_saved = os.dup(2)
            except (OSError, ValueError):  # no usable stderr: nothing to silence
                _stderr_saved = None
            else:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
        _stderr_depth += 1
    try:
        yield
    finally:
        with _stderr_lock:
            _stderr_depth -= 1
            if _stderr_depth == 0 and _stderr_saved is not None:
                os.dup2(_stderr_saved, 2)
                os.close(_stderr_saved)
                _stderr_saved = None


def hung_calls() -> int:
    """Decoder calls in this process that never returned (their threads may still be spinning)."""
    return len(_hung)


class DecodeTimeout(TimeoutError):
    """A native decode call did not return in time; its thread was left behind."""


def run_with_timeout(fn: Callable[[], T], timeout: float, what: str, abandon_on_timeout: Any = None) -> T:
    """Run `fn()` on a daemon thread; raise `DecodeTimeout` if it has not returned after `timeout` s.

    The native call releases the GIL, so waiting here costs nothing. On timeout `abandon_on_timeout`
    (the reader in use) is kept alive forever, since freeing it under a running thread would crash.
    """
    if len(_hung) >= MAX_HUNG_THREADS:
        raise RuntimeError(
            f"{len(_hung)} decoder calls never returned in this process (last: {_hung[-1]}); "
            "each may keep a CPU core busy, so no further decoding is attempted. Add those files "
            "to the skip list (or remove them) and restart."
        )
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"ttt-mm-decode: {what}"[:60], daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _hung.append(what)
        if abandon_on_timeout is not None:
            abandon(abandon_on_timeout)
        raise DecodeTimeout(f"{what} did not return within {timeout:.1f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]
