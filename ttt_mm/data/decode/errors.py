"""A file that cannot be used (`MediaError`, whose reason is what the skip list records; `NothingDecodes`
for a stream with no frame to re-encode, `FramesRefused` for damage a decoder stopped at), and the
checks every read starts with: the file exists, is a regular file and is not empty."""

from __future__ import annotations

import os


class MediaError(RuntimeError):
    """A file cannot be used; `reason` says why in words (also what the skip list records)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) and the kind when raised inside a DataLoader worker
        return (type(self), (self.path, self.reason))


class NothingDecodes(MediaError):
    """A stream none of whose frames decodes: no re-encode could start from it, so no hint says so."""


class FramesRefused(MediaError):
    """A decoder refused data it was decoding frames from (damage): another decoder may pass over it."""


class NotAsProbed(MediaError):
    """The file is no longer the one that was probed (or is gone): none of it is read, not only from the
    window where this was found."""


def stat_reason(path: str, exc: OSError) -> str:
    """Why a file cannot be used, when ``os.stat`` fails; a link whose target is gone is named as such,
    since the file listed is there."""
    if not isinstance(exc, FileNotFoundError):
        return f"cannot stat: {exc.strerror}"
    try:
        return f"broken symbolic link (to {os.readlink(path)})" if os.path.islink(path) else "file not found"
    except OSError:  # removed meanwhile
        return "file not found"


def checked_stat(path: str) -> os.stat_result:
    """``os.stat`` of a file a decoder may open; a `MediaError` for anything else."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise MediaError(path, stat_reason(path, exc)) from None
    if not os.path.isfile(path):
        raise MediaError(path, "not a regular file")
    if st.st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return st


CANNOT_OPEN = "cannot open"
"""How `open_reason` begins: not a property of the file's content (a ``chmod`` keeps size and mtime)."""


def open_reason(path: str) -> str | None:
    """Why a file cannot be opened for reading (permissions), or None: decoders would report it as a
    file they cannot parse."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # (non-blocking: never waits on a FIFO)
    except OSError as exc:
        return f"{CANNOT_OPEN}: {exc.strerror}"
    return None


ZEROED_TAIL_BYTES = 65536
"""Zero bytes at a file's end from which it is said to be unfinished: space that a download or copy set
aside and did not fill (a torrent's, a disk's). Compressed media end in a few at most."""


def zeroed_tail_bytes(path: str) -> int | None:
    """How many zero bytes end the file where they are `ZEROED_TAIL_BYTES` or more, else None."""
    zeros = zero_bytes_at_end(path)
    return zeros if zeros >= ZEROED_TAIL_BYTES else None


def zero_bytes_at_end(path: str) -> int:
    """How many zero bytes end the file (a few KB read for most files: their last bytes are not zeros)."""
    zeros, block = 0, 4096
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            f.seek(max(0, end - block))
            data = f.read(end - max(0, end - block))
            kept = len(data.rstrip(b"\0"))
            zeros += len(data) - kept
            if kept:
                break
            end, block = end - len(data), min(2 * block, 1 << 20)
    return zeros


def version_key(path: str, st: os.stat_result) -> tuple:
    """Cache key of one version of a file."""
    return (path, st.st_mtime_ns, st.st_size)


def without_frames(exc: MediaError) -> MediaError:
    """``exc`` without its traceback and the decoder error it replaced, whose frames hold the failed
    reader: kept in a list, they would keep it alive until a garbage collection."""
    exc.__context__ = None
    return exc.with_traceback(None)
