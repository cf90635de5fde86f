"""``python -m ttt_mm.bench data``: every row runs end to end (it reads items without collating them)."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from ttt_mm.bench.data import REAL_FILES, main


def test_every_row_of_the_data_benchmark_runs(capsys):
    assert main(["--seconds", "2", "--window", "1", "--repeat", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()
    kinds = [line.split()[0] for line in rows if line.split() and line.split()[0] in ("audio", "video", "av")]
    assert kinds.count("audio") == 6 and kinds.count("video") == 3 and kinds.count("av") == 3


def test_real_files_missing_from_the_media_folder_are_named(tmp_path, capsys):
    """With some of them missing, their rows were left out of the table without a word."""
    ogg = tmp_path / REAL_FILES[0][1]
    ogg.parent.mkdir(parents=True)
    sf.write(ogg, np.zeros(16000, np.float32), 16000, format="OGG", subtype="VORBIS")
    assert main(["--seconds", "2", "--window", "1", "--repeat", "1", "--real", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert sorted(line.split()[1] for line in err.splitlines() if line.startswith("--real:")) == sorted(
        {str(tmp_path / rel) for _, rel in REAL_FILES[1:]}
    )
