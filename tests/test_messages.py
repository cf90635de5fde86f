"""One-line wording shared by logs, skip lists and summaries; what a run says once."""

import errno
import io
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttt_mm.messages import first_line, first_of, missing, once, one_line, skips_named, why_no_folder


@pytest.mark.parametrize(
    ("items", "said"),
    [([], ""), (["a"], "a"), (["a", "b", "c"], "a, b, c"), (["a", "b", "c", "d", "e"], "a, b, c and 2 more")],
)
def test_a_list_past_its_limit_names_its_first_items_and_counts_the_rest(items, said):
    assert first_of(items, 3) == said


def test_a_list_is_joined_with_the_separator_given():
    assert first_of(["a (why)", "b (why)"], 1, sep="; ") == "a (why) and 1 more"


def test_skipped_files_are_named_each_on_the_summarys_one_line():
    """A line break in a name split a command's closing "skipped N file(s)" line."""
    skipped = [{"path": "take\n1.wav", "reason": "empty file"}, {"path": "b.wav", "reason": "too short"}]
    assert skips_named(skipped) == "take\\n1.wav (empty file); b.wav (too short)"
    assert first_of(["a (why)", "b (why)"], 2, sep="; ") == "a (why); b (why)"


def test_a_name_with_line_breaks_stays_on_one_line():
    assert one_line("a\nb\rc.wav") == "a\\nb\\rc.wav"


def test_a_missing_path_that_starts_with_a_tilde_is_said_to_be_unexpanded(monkeypatch):
    """``data.root=~/x`` reaches the command as it is (no shell expands it there): "~/x does not exist"."""
    monkeypatch.setenv("HOME", "/home/me")
    assert missing("dataset root /no/x", "/no/x") == "dataset root /no/x does not exist"
    assert missing("input=~/x", "~/x") == (
        "input=~/x does not exist (a ~ reaches a command as it is, not as your home folder: write /home/me/x)"
    )


def test_a_missing_relative_path_names_the_folder_it_was_looked_for_in(tmp_path, monkeypatch):
    """``root: ../clips`` in a config file, resumed from another folder: nothing said where it was looked for."""
    monkeypatch.chdir(tmp_path)
    assert missing("dataset root ../clips", "../clips") == (
        f"dataset root ../clips does not exist (relative to the folder the command runs in, {tmp_path})"
    )


def test_a_folder_that_cannot_be_made_names_what_stands_in_its_way(tmp_path, monkeypatch):
    """mkdir said "File exists" or "Not a directory" of a path the message did not name."""
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "disk").symlink_to(tmp_path / "unmounted")
    (tmp_path / "ok").mkdir()
    refused = OSError(errno.ENOTDIR, "Not a directory")
    assert (
        why_no_folder(tmp_path / "notes.txt" / "a" / "b", refused)
        == f"{tmp_path / 'notes.txt'} is a file, not a folder"
    )
    link = f"{tmp_path / 'disk'} is a link to {tmp_path / 'unmounted'}, which does not exist"
    assert why_no_folder(tmp_path / "disk" / "run", refused) == link
    denied = OSError(errno.EACCES, "Permission denied")  # (a folder in the way is no file: mkdir's own words)
    assert why_no_folder(tmp_path / "ok" / "run", denied) == "Permission denied"
    lstat = os.lstat  # a folder this user may not look into: Path.exists raised there, inside the except

    def locked(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "ok")):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", locked)
    assert why_no_folder(tmp_path / "ok" / "run", denied) == "Permission denied"


def test_an_error_is_said_by_its_first_line_with_text_or_else_by_its_type():
    assert first_line(ValueError("\n  bad header  \nmore")) == "bad header"
    assert first_line(KeyError()) == "KeyError"


def _first_time_in_a_child(what: str, answers) -> None:
    answers.put(once.first_time(what))


def test_a_thing_is_said_once_per_run_also_by_the_processes_it_starts():
    """A warning said by a DataLoader worker came again from every worker of every later pass (each
    validation starts new ones): the run is the process that started them, and one mark serves all."""
    what = f"damaged: /data/{os.getpid()}-{time.monotonic_ns()}.mp4"
    assert once.first_time(what) and not once.first_time(what)
    answers = multiprocessing.get_context("fork").Queue()
    for said in (what, what + " (another)"):
        child = multiprocessing.get_context("fork").Process(target=_first_time_in_a_child, args=(said, answers))
        child.start()
        child.join(30)
    assert [answers.get(timeout=30), answers.get(timeout=30)] == [False, True]
    assert not once.first_time(what + " (another)")  # (said by the child, for this run)


def test_marks_of_runs_that_are_over_are_cleared():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    over, running = Path(once._mark(gone.pid, "a")), Path(once._mark(os.getpid(), "b"))
    over.touch()
    running.touch()
    once.clear_stale()
    assert not over.exists() and running.exists()
    running.unlink()


def test_marks_left_by_a_former_holder_of_this_runs_pid_are_cleared():
    """A container's run gets the same small pid every time: the marks of one killed before made the
    next one keep its warnings to itself, as said already."""
    from ttt_mm.processes import alive

    former, own = Path(once._mark(os.getpid(), "former")), Path(once._mark(os.getpid(), "own"))
    former.touch()
    os.utime(former, (alive._STARTED - 60, alive._STARTED - 60))  # (written before this process began)
    own.touch()
    once.clear_stale()
    assert not former.exists() and own.exists()
    own.unlink()


def test_marks_of_another_pid_namespace_are_left_alone(monkeypatch):
    """Containers sharing /tmp number their processes from 1: a run in one removed the live marks of a
    run in another (no such pid in its eyes), and two runs with the same pid read each other's."""
    from ttt_mm.processes import alive

    here = alive.scoped("ttt-mm-said")
    assert here != "ttt-mm-said" and here.startswith("ttt-mm-said.ns")  # (Linux: this process's namespace)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    monkeypatch.setattr(alive, "_pid_namespace", lambda: "1")
    theirs = Path(once._mark(gone.pid, "theirs").replace(here, alive.scoped("ttt-mm-said")))
    assert theirs.name.startswith("ttt-mm-said.ns1-")
    theirs.touch()
    once.clear_stale()
    assert theirs.exists()  # (its pid is gone here, not necessarily there)
    monkeypatch.setattr(once, "_PREFIX", alive.scoped("ttt-mm-said"))  # (seen from that namespace)
    once.clear_stale()
    assert not theirs.exists()


def test_a_files_bar_where_the_output_is_no_terminal_says_how_far_it_is_in_plain_lines(monkeypatch, caplog):
    """A linear probe piped to a file said nothing for minutes: tqdm's bar is off there."""
    from ttt_mm.messages import progress

    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # (no terminal, also under pytest -s)
    with caplog.at_level(logging.INFO, logger="ttt_mm.messages.progress"):
        bar = progress.FilesBar(["a", "b", "c"], "features", shown=True)
        assert [item for item in bar if bar.set_postfix(skipped=1) is None] == ["a", "b", "c"]
        assert list(progress.FilesBar(["a", "b"], "embed", shown=False)) == ["a", "b"]  # (progress=false: nothing)
    assert [m.split(", 0.")[0] for m in caplog.messages] == ["features: 1 of 3 files", "features: 2 of 3 files"]
    assert all(m.endswith(" min, skipped 1") for m in caplog.messages)  # (the last file: the command's own end says)
