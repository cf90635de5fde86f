"""Files written whole or not at all."""

from __future__ import annotations

import json
import math
import os
import re
import signal

import numpy as np
import pytest

from ttt_mm.storage import atomic
from ttt_mm.storage.atomic import replaced, replaced_with_sidecar, signals_held, temporary_path, write_json, write_text


def test_a_finished_block_replaces_the_file_and_a_failed_one_leaves_it_as_it_was(tmp_path):
    target = tmp_path / "metrics.json"
    write_text(target, "old\n")
    with replaced(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".tmp"
        tmp.write_text("new\n")
        assert target.read_text() == "old\n"  # nothing is visible under the final name until the block ends
    assert target.read_text() == "new\n"

    with pytest.raises(RuntimeError, match="killed"), replaced(target) as tmp:
        tmp.write_text("half of a fil")
        raise RuntimeError("killed")
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_temporary_names_never_end_in_the_final_suffix(tmp_path):
    assert temporary_path(tmp_path / "a.npy").name.endswith(".tmp") and temporary_path("x/b.json").parent.name == "x"


def test_a_final_name_near_the_length_limit_still_gets_a_temporary_name(tmp_path):
    target = tmp_path / ("n" * 240 + ".npy")  # a legal name, too long for the temporary one's additions
    write_text(target, "rows\n")
    assert target.read_text() == "rows\n" and len(list(tmp_path.iterdir())) == 1
    assert len(temporary_path(target).name.encode()) <= atomic.NAME_MAX


def test_temporary_files_of_killed_runs_are_swept_and_a_live_one_is_not(tmp_path):
    (tmp_path / "sub").mkdir()
    old, live = temporary_path(tmp_path / "sub" / "a.npy"), temporary_path(tmp_path / "b.npy")
    assert re.fullmatch(rf"\.a\.npy\.ttt-mm-{os.getpid()}-[0-9a-f]{{8}}\.tmp", old.name)  # (the pattern swept)
    earlier = tmp_path / ".c.npy.ttt-mm-123.tmp"  # (an earlier version's: no random part)
    kept = [tmp_path / "a.npy", tmp_path / ".hidden.tmp", tmp_path / "c.123.tmp"]  # not of this module's pattern
    kept.append(tmp_path / ".my_notes.42.tmp")  # (a user's, of a hidden file and a number: it was swept)
    for path in (old, earlier, live, *kept):
        path.write_text("x")
    for path in (old, earlier, *kept):
        os.utime(path, (0, 0))
    assert atomic.remove_stale_temporaries(tmp_path) == 2
    assert not old.exists() and not earlier.exists() and live.exists() and all(p.exists() for p in kept)


def test_each_writer_of_a_file_gets_its_own_temporary_name(tmp_path):
    """Named by the process alone, two threads (or processes of one id in two containers sharing the
    folder) writing one output wrote one temporary file, and one renamed the other's half-written file."""
    names = {temporary_path(tmp_path / "a.npy") for _ in range(100)}
    assert len(names) == 100 and {p.parent for p in names} == {tmp_path}


def test_json_and_csv_outputs_are_standard(tmp_path):
    """JSON has no NaN (a reader such as jq or JavaScript rejects the file): NaN and infinities become
    null, numpy scalars plain numbers; CSV cells of None or NaN stay empty and extra keys are left out."""
    atomic.write_json(tmp_path / "m.json", {"loss": float("nan"), "n": np.int64(3), "xs": [np.float32(0.5), -math.inf]})
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == {
        "loss": None,
        "n": 3,
        "xs": [0.5, None],
    }
    atomic.write_csv(tmp_path / "t.csv", [{"a": 1, "b": None, "extra": 2}, {"a": float("nan"), "b": "x"}], ["a", "b"])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["a,b", "1,", ",x"]


def test_names_that_are_not_utf8_keep_their_bytes_in_every_written_file(tmp_path):
    """A file name Python holds with surrogates (undecodable bytes) raised when a temporary name or a
    CSV or text output was encoded: the probe, evaluation and embed outputs that name such a file."""
    name = os.fsdecode(b"caf\xe9.wav")
    with replaced(tmp_path / name) as tmp:
        tmp.write_bytes(b"x")
    assert (tmp_path / name).read_bytes() == b"x"
    atomic.write_csv(tmp_path / "files.csv", [{"path": name}], ["path"])
    write_text(tmp_path / "names.txt", name)
    assert (tmp_path / "files.csv").read_bytes() == b"path\r\ncaf\xe9.wav\r\n"
    assert (tmp_path / "names.txt").read_bytes() == b"caf\xe9.wav"


def test_a_ctrl_c_while_a_file_and_its_sidecar_are_swapped_waits_until_both_are_in_place(tmp_path, monkeypatch):
    """embed overwrite=true, interrupted after the old sidecar went and before the new one came, kept
    the old rows without their sidecar: neither pair, and the output unreadable."""
    rows, sidecar = tmp_path / "a.npy", tmp_path / "a.json"
    rows.write_text("old rows")
    write_json(sidecar, {"rows": "old"})
    real_replace = os.replace

    def interrupted_meanwhile(*args):
        os.kill(os.getpid(), signal.SIGINT)  # (Ctrl-C, between the old sidecar's removal and the new one)
        real_replace(*args)

    monkeypatch.setattr(atomic.os, "replace", interrupted_meanwhile)
    with pytest.raises(KeyboardInterrupt), replaced_with_sidecar(rows, sidecar) as (tmp, data):
        tmp.write_text("new rows")
        data["rows"] = "new"
    assert rows.read_text() == "new rows" and json.loads(sidecar.read_text()) == {"rows": "new"}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(RuntimeError, match="killed"), replaced_with_sidecar(rows, sidecar) as (tmp, data):
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert rows.read_text() == "new rows" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npy"]


def test_a_signal_held_through_a_block_that_fails_still_reaches_its_handler():
    """The index cache's save, held against Ctrl-C and SIGTERM, failed on a full disk (OSError, caught
    by its caller, which goes on): the signal that came meanwhile was dropped, and the run went on."""
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with pytest.raises(OSError, match="disk full"), signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            assert received == []  # (held while the block runs)
            raise OSError("disk full")
        assert received == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt) as raised, signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            raise OSError("disk full")
        assert isinstance(raised.value.__context__, OSError)  # (the block's error kept as the signal's context)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sidecar_that_cannot_be_written_leaves_the_old_pair_whole(tmp_path):
    """The old sidecar went and the new file was renamed in before the sidecar was written: a value JSON
    cannot hold (or a full disk) then left the new rows without a sidecar, and the old pair gone."""
    rows, sidecar = tmp_path / "a.npy", tmp_path / "a.json"
    rows.write_text("old rows")
    write_json(sidecar, {"rows": "old"})
    with pytest.raises(TypeError), replaced_with_sidecar(rows, sidecar) as (tmp, data):
        tmp.write_text("new rows")
        data["rows"] = object()
    assert rows.read_text() == "old rows" and json.loads(sidecar.read_text()) == {"rows": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npy"]  # (no temporaries left)
