"""``python -m ttt_mm.data.probe``: a manifest with reasons for bad files, clear exits for one file."""

from __future__ import annotations

import json
import shutil

from ttt_mm.data import ManifestSource
from ttt_mm.data.probe import main


def test_folder_manifest_lists_good_and_bad_files(media, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for name, target in [
        ("av", "sub/a.mp4"),
        ("wav16k", "b.wav"),
        ("zero", "c.mp4"),
        ("nan", "d.wav"),
        ("corrupt", "e.mkv"),
    ]:
        shutil.copy(media[name], data / target)
    (data / "readme.txt").write_text("ignored")
    manifest = tmp_path / "manifest.jsonl"
    assert main([str(data), "-o", str(manifest)]) == 0
    rows = {r["path"]: r for r in map(json.loads, manifest.read_text().splitlines())}
    assert sorted(rows) == [
        "data/b.wav",
        "data/c.mp4",
        "data/d.wav",
        "data/e.mkv",
        "data/sub/a.mp4",
    ]  # relative to the manifest
    good = rows["data/sub/a.mp4"]
    assert (
        good["has_audio"]
        and good["has_video"]
        and good["n_frames"] == 90
        and (good["width"], good["height"]) == (160, 120)
    )
    assert rows["data/b.wav"]["sample_rate"] == 16000 and rows["data/b.wav"]["silent"] is False
    assert rows["data/c.mp4"]["error"] == "empty file (0 bytes)"
    assert "NaN/Inf" in rows["data/d.wav"]["error"] and "not a readable media container" in rows["data/e.mkv"]["error"]
    assert "5 files" in capsys.readouterr().err
    clips = ManifestSource(str(manifest)).clips()
    assert sorted(c.name for c in clips) == [str(data / "b.wav"), str(data / "sub" / "a.mp4")]


def test_single_bad_file_exits_nonzero_with_the_reason(media, tmp_path, capfd):
    assert main([str(media["truncated"]), "-o", str(tmp_path / "m.jsonl")]) == 1
    out, err = capfd.readouterr()  # file-descriptor level: decord's native prints would show here
    assert err == f"error: {media['truncated']}: not a readable media container (ffmpeg could not open it)\n"


def test_missing_path_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "-o", str(tmp_path / "m.jsonl")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
