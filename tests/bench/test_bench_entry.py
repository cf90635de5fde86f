"""``python -m ttt_mm.bench``: every suite is listed and reachable, --help exits 0, a wrong name 2."""

from __future__ import annotations

import importlib

from ttt_mm.bench.__main__ import SUITES, main


def test_help_lists_every_suite_and_a_wrong_name_is_an_error(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {name} " in out for name in SUITES)
    assert main(["no-such-suite"]) == 2 and "usage: python -m ttt_mm.bench" in capsys.readouterr().err
    assert all(callable(importlib.import_module(module).main) for module, _ in SUITES.values())
