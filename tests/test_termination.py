"""SIGTERM (a scheduler stopping a job) ends embed, evaluate, linear_probe and probe as Ctrl-C does,
with status 143: they ended without a word, a temporary file left beside their outputs."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from ttt_mm.processes.termination import forget_termination, sigterm_as_ctrl_c, terminated
from ttt_mm.storage.atomic import replaced_with_sidecar
from ttt_mm.tasks import probe
from ttt_mm.tasks.common import config_errors_end_the_command


def _terminate_me(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # (the signal arrives first)


@pytest.fixture(autouse=True)
def _forgotten():
    yield
    forget_termination()  # (a later test's Ctrl-C is a Ctrl-C)


def _wait_in_child(running) -> None:
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # (the default, from the fork on)
    running.set()
    time.sleep(30)


def test_sigterm_raises_ctrl_c_in_the_block_and_is_its_default_again_after():
    with sigterm_as_ctrl_c():
        with pytest.raises(KeyboardInterrupt):
            _terminate_me()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second one, during the cleanup: the end
    assert terminated() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with sigterm_as_ctrl_c():
        assert not terminated()  # (of this block only)


def test_a_process_forked_in_the_block_still_ends_on_sigterm():
    """A data loader's worker forked meanwhile would have taken it as Ctrl-C, as its parent does."""
    with sigterm_as_ctrl_c():
        context = multiprocessing.get_context("fork")
        running = context.Event()
        child = context.Process(target=_wait_in_child, args=(running,))
        child.start()
        assert running.wait(10)
        child.terminate()
        child.join(10)
    assert child.exitcode == -signal.SIGTERM


def test_a_command_terminated_says_so_in_one_line_and_exits_143(capsys):
    interrupted = "finished outputs are kept"
    with (
        pytest.raises(SystemExit) as ended,
        config_errors_end_the_command(interrupted=interrupted),
        sigterm_as_ctrl_c(),
    ):
        _terminate_me()
    assert ended.value.code == 143
    assert capsys.readouterr().err == "terminated (SIGTERM): finished outputs are kept\n"
    assert not terminated()  # said: a later Ctrl-C in this process (a sweep's next job) is said as one
    with pytest.raises(SystemExit) as ended, config_errors_end_the_command(interrupted=interrupted):
        raise KeyboardInterrupt
    assert ended.value.code == 130 and capsys.readouterr().err.startswith("interrupted: ")


def test_sigterm_while_an_output_and_its_sidecar_are_renamed_waits_for_both(tmp_path, monkeypatch):
    replace, calls = os.replace, []

    def terminated_at_the_first(src, dst):
        if not calls:
            os.kill(os.getpid(), signal.SIGTERM)  # (between the two renames, were it taken at once)
        calls.append(dst)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", terminated_at_the_first)
    with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():  # noqa: SIM117
        with replaced_with_sidecar(tmp_path / "a.npy", tmp_path / "a.json") as (tmp, data):
            tmp.write_bytes(b"rows")
            data["rows"] = 1
    assert len(calls) == 2 and (tmp_path / "a.npy").read_bytes() == b"rows"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npy"]


def test_every_signal_held_through_the_renames_takes_effect_after_them(tmp_path, monkeypatch):
    """Only the first was acted on: a SIGINT whose handler goes on, then a SIGTERM, lost the SIGTERM."""
    replace, said = os.replace, []

    def signalled_at_the_first(src, dst):
        if not said:
            said.append("renaming")
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", signalled_at_the_first)
    previous = signal.signal(signal.SIGINT, lambda *received: said.append("SIGINT"))
    try:
        with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():  # noqa: SIM117
            with replaced_with_sidecar(tmp_path / "a.npy", tmp_path / "a.json") as (tmp, data):
                tmp.write_bytes(b"rows")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert said == ["renaming", "SIGINT"] and terminated() and (tmp_path / "a.json").exists()


def test_the_probe_command_terminated_exits_143(tmp_path, monkeypatch, capsys):
    (tmp_path / "a.wav").write_bytes(b"")
    monkeypatch.setattr(probe, "index_files", _terminate_me)
    assert probe.main([str(tmp_path), "-o", str(tmp_path / "m.jsonl"), "--index-cache", str(tmp_path / "c")]) == 143
    assert capsys.readouterr().err.startswith(f"terminated (SIGTERM): {tmp_path / 'm.jsonl'} was not written;")
