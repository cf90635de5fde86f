"""`exclusive` and `held`: a filesystem that takes no locks is written to unlocked, with one warning,
not an error (Lustre's default mount, some FUSE and SMB mounts)."""

import errno
import fcntl
import logging
import os

import pytest

from ttt_mm.data.index import index_files
from ttt_mm.data.skiplist import SkipList
from ttt_mm.storage import locks
from ttt_mm.storage.locks import exclusive, held


def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")


def test_a_filesystem_without_locks_is_written_to_unlocked_and_said_once(tmp_path, monkeypatch, caplog):
    """The skip list, the dataset index and a sweep's results ended the run with ENOLCK."""
    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.setattr(locks, "_said", set())
    with caplog.at_level(logging.WARNING, logger=locks.__name__):
        skips = SkipList(tmp_path / "skipped_media.tsv")
        skips.add("a.wav", "empty file")
        skips.add("b.wav", "empty file")
        with held(tmp_path / "results.csv"):
            (tmp_path / "results.csv").write_text("row\n")
        (tmp_path / "a.wav").write_bytes(b"")
        records, _ = index_files([str(tmp_path / "a.wav")], tmp_path / "cache")
    assert SkipList(tmp_path / "skipped_media.tsv").reasons == {"a.wav": "empty file", "b.wav": "empty file"}
    assert records[str(tmp_path / "a.wav")]["error"] == "empty file (0 bytes)"
    said = [r.getMessage() for r in caplog.records if "takes no file locks" in r.getMessage()]
    assert said == [
        f"{folder}: its filesystem takes no file locks (No locks available): processes that write there at once "
        "are not kept apart"
        for folder in (tmp_path, tmp_path / "cache")
    ]  # (once per folder)


def test_a_lock_held_elsewhere_is_refused_without_waiting_and_other_errors_are_raised(tmp_path, monkeypatch):
    path = tmp_path / "x.lock"
    with open(path, "w") as mine, open(path) as theirs:
        assert exclusive(mine, path)
        with pytest.raises(BlockingIOError):
            exclusive(theirs, path, blocking=False)

    def bad_descriptor(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", bad_descriptor)
    with pytest.raises(OSError, match="Bad file descriptor"):  # (not the filesystem's lack of locks: raised)
        exclusive(3, path)


def test_another_users_lock_file_is_taken_to_read_and_where_that_cannot_lock_the_block_runs(tmp_path, monkeypatch):
    """A lock file made by another user (0644) cannot be opened to write; NFS then refuses flock on one
    opened to read (EBADF), which ended a sweep's report with a traceback."""
    real_open = os.open

    def not_ours(path, flags, *args):
        if str(path).endswith(".lock") and flags & os.O_RDWR:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args)

    (tmp_path / ".results.csv.lock").write_text("")
    monkeypatch.setattr(os, "open", not_ours)
    with held(tmp_path / "results.csv"):  # (a local filesystem: flock takes the file opened to read)
        (tmp_path / "results.csv").write_text("a\n")

    def nfs(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", nfs)
    with held(tmp_path / "results.csv"):
        (tmp_path / "results.csv").write_text("b\n")
    assert (tmp_path / "results.csv").read_text() == "b\n"
