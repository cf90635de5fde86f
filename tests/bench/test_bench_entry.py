"""``python -m ttt_mm.bench``: every suite is listed and reachable, --help exits 0, a wrong name 2."""

from __future__ import annotations

import importlib

import pytest

from ttt_mm.bench.__main__ import SUITES, main


def test_help_lists_every_suite_and_a_wrong_name_is_an_error(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {name} " in out for name in SUITES)
    assert main(["no-such-suite"]) == 2 and "usage: python -m ttt_mm.bench" in capsys.readouterr().err
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
