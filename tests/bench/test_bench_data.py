"""``python -m ttt_mm.bench data``: every row runs end to end (it reads items without collating them)."""

from __future__ import annotations

from ttt_mm.bench.data import main


def test_every_row_of_the_data_benchmark_runs(capsys):
    assert main(["--seconds", "2", "--window", "1", "--repeat", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()
    kinds = [line.split()[0] for line in rows if line.split() and line.split()[0] in ("audio", "video", "av")]
    assert kinds.count("audio") == 6 and kinds.count("video") == 3 and kinds.count("av") == 3
