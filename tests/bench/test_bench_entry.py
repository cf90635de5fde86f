"""``python -m ttt_mm.bench``: every suite is listed and reachable, --help exits 0, a wrong name 2."""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path

import pytest

from ttt_mm.bench.__main__ import SUITES, main
from ttt_mm.bench.media import media_files


def test_help_lists_every_suite_and_a_wrong_name_is_an_error(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {name} " in out for name in SUITES)
    assert main(["no-such-suite"]) == 2
    said = capsys.readouterr().err
    assert said.startswith("error: no suite 'no-such-suite'\nusage: python -m ttt_mm.bench")
    assert all(callable(importlib.import_module(module).main) for module, _ in SUITES.values())


@pytest.mark.parametrize(
    "argv",
    [
        ["index", "--count", "0"],
        ["corrupt", "x", "--out", "y", "--count", "-1"],
        ["data", "--window", "0"],
        ["embed", "--audio-minutes", "nan"],
        ["layers", "--threads", "0"],
        ["layers", "--lengths", "4096", "0"],
        ["kernels", "--repeats", "0"],
    ],
)
def test_a_count_or_length_below_one_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2 and "must be" in capsys.readouterr().err


def test_a_real_folder_without_media_is_refused_before_anything_is_generated(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no media here")
    assert main(["index", "--real", str(tmp_path)]) == 2
    assert f"no media files under {tmp_path}" in capsys.readouterr().err


def test_a_real_file_reached_through_links_is_counted_once(tmp_path):
    """The index checks it once; three links to it divided its cost per file by four."""
    (tmp_path / "a.wav").write_bytes(b"")
    for name in ("b.wav", "c.wav", "d.mp4"):
        (tmp_path / name).symlink_to(tmp_path / "a.wav")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.ogg").write_bytes(b"")
    (tmp_path / "clips.mp4").mkdir()  # (a folder named like a media file: the corrupt benchmark tried to read it)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "0001_zero_a.wav").write_bytes(b"")
    assert [p.name for p in media_files(tmp_path, outside=tmp_path / "out")] == ["a.wav", "e.ogg"]


@pytest.mark.parametrize(
    "argv,said",
    [
        (
            ["data", "--real", "{tmp}/nowhere"],
            "--real {tmp}/nowhere holds none of the files of fetch-real-media.sh that this benchmark reads",
        ),
        (
            ["data", "--real", "{tmp}"],
            "--real {tmp} holds none of the files of fetch-real-media.sh that this benchmark reads",
        ),
        (["corrupt", "{tmp}/gone.flac", "--out", "{tmp}/o"], "{tmp}/gone.flac does not exist"),
        (["corrupt", "{tmp}", "--out", "{tmp}/o"], "no media files under {tmp}"),
    ],
)
def test_a_folder_or_file_that_holds_no_media_to_read_is_one_usage_error(argv, said, tmp_path, capsys):
    """``data --real`` of a wrong folder ran without its real rows and said nothing; ``corrupt`` of a
    path that is not there, or of a folder without media, ended in a traceback."""
    (tmp_path / "notes.txt").write_text("no media here")
    with pytest.raises(SystemExit) as exit:
        main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.splitlines()
    assert exit.value.code == 2 and err[-1] == f"python -m ttt_mm.bench {argv[0]}: error: {said.format(tmp=tmp_path)}"
    assert not (tmp_path / "o").exists()


def test_corrupts_time_per_file_counts_every_file_the_probe_read(tmp_path, monkeypatch, capsys):
    """A second run into the same --out probed the first run's variants too, and its wall time was
    divided by this run's count alone (2 written, 6 probed: three times the real cost per file)."""
    from ttt_mm.bench import corrupt

    (tmp_path / "a.wav").write_bytes(b"RIFF" + bytes(64))
    out = tmp_path / "out"
    out.mkdir()
    for i in range(4):  # an earlier run's variants
        (out / f"9{i:03d}_zero_a.wav").write_bytes(bytes(8))

    def probe(command, **_):
        listed = sorted(p.name for p in out.iterdir() if p.suffix == ".wav")
        Path(command[command.index("-o") + 1]).write_text("".join(json.dumps({"path": n}) + "\n" for n in listed))
        return subprocess.CompletedProcess(command, 0, "", "")

    clock = iter([100.0, 106.0])
    monkeypatch.setattr(corrupt.subprocess, "run", probe)
    monkeypatch.setattr(corrupt.time, "monotonic", lambda: next(clock))
    assert corrupt.main([str(tmp_path / "a.wav"), "--out", str(out), "--count", "2"]) == 0
    table = capsys.readouterr().out
    assert (
        "| wall time / files probed (s), startup included | 1.000 |" in table
        and "| files listed / written | 2 / 2 |" in table
    )


def test_a_corrupt_run_whose_probe_fails_reports_no_earlier_runs_records(tmp_path, monkeypatch, capsys):
    """The variants' names repeat run to run: a probe that failed before writing its manifest had the
    previous run's records counted as its own."""
    from ttt_mm.bench import corrupt

    (tmp_path / "a.wav").write_bytes(b"RIFF" + bytes(64))
    out = tmp_path / "out"
    paths = corrupt.write_variants([tmp_path / "a.wav"], out, 2, 0)
    (out / "probe.jsonl").write_text("".join(json.dumps({"path": p.name}) + "\n" for p in paths))  # (the last run's)
    monkeypatch.setattr(corrupt.subprocess, "run", lambda command, **_: subprocess.CompletedProcess(command, 1, "", ""))
    corrupt.main([str(tmp_path / "a.wav"), "--out", str(out), "--count", "2"])
    table = capsys.readouterr().out
    assert "| exit status | 1 |" in table and "| files listed / written | 0 / 2 |" in table


def test_corrupt_leaves_out_an_empty_source_and_says_so(tmp_path, capsys):
    """A 0-byte file among the sources stopped the command with a ValueError traceback."""
    from ttt_mm.bench import corrupt

    (tmp_path / "a.wav").write_bytes(b"RIFF" + bytes(64))
    (tmp_path / "empty.wav").write_bytes(b"")
    assert corrupt._media([str(tmp_path)], tmp_path / "out") == [tmp_path / "a.wav"]
    assert capsys.readouterr().out == f"left out an empty file {tmp_path / 'empty.wav'}: nothing to corrupt\n"
