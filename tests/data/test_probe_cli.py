"""``python -m ttt_mm.tasks.probe``: every file listed, good or with its reason; clear exits for one
file; the old ``python -m ttt_mm.data.probe`` still works, with a deprecation warning."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from faults import interrupted_after
from mediafiles import tone, without_audio_decoder, write_short_flac, write_video, write_wav

import ttt_mm.data
from ttt_mm.data import ManifestSource, decode
from ttt_mm.data.decode.isolation import IsolatedPool
from ttt_mm.data.index import cache_file
from ttt_mm.tasks import probe
from ttt_mm.tasks.probe import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def data(media, tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    for name, target in [
        ("av", "sub/a.mp4"),
        ("wav16k", "b.wav"),
        ("zero", "c.mp4"),
        ("nan", "d.wav"),
        ("corrupt", "e.mkv"),
    ]:
        shutil.copy(media[name], root / target)
    (root / "readme.txt").write_text("ignored")
    return root


def test_folder_manifest_lists_good_and_bad_files(data, tmp_path, capsys):
    manifest = tmp_path / "manifest.jsonl"
    assert main([str(data), "-o", str(manifest), "--index-cache", str(tmp_path / "cache")]) == 0
    rows = {r["path"]: r for r in map(json.loads, manifest.read_text().splitlines())}
    assert sorted(rows) == ["data/b.wav", "data/c.mp4", "data/d.wav", "data/e.mkv", "data/sub/a.mp4"]  # relative
    good = rows["data/sub/a.mp4"]
    assert good["has_audio"] and good["has_video"] and good["n_frames"] == 90
    assert (good["width"], good["height"], good["video_backend"]) == (160, 120, "decord")
    assert rows["data/b.wav"]["sample_rate"] == 16000 and rows["data/b.wav"]["silent"] is False
    assert rows["data/c.mp4"]["error"] == "empty file (0 bytes)"
    assert "NaN/Inf" in rows["data/d.wav"]["error"] and "not a readable media container" in rows["data/e.mkv"]["error"]
    err = capsys.readouterr().err
    assert "5 files under" in err and "2 usable, 3 not" in err and "5 probed, 0 from the index cache" in err
    clips = ManifestSource(str(manifest)).clips()  # every file: the bad ones are left out, with reasons, when read
    assert sorted(c.name for c in clips) == sorted(str(data / p.removeprefix("data/")) for p in rows)
    assert main([str(data), "-o", str(manifest), "--index-cache", str(tmp_path / "cache")]) == 0
    assert "0 probed, 5 from the index cache" in capsys.readouterr().err  # the second run opens nothing


def test_the_summary_counts_usable_files_with_a_stream_that_is_not(tmp_path, capsys):
    """Such a file serves only configs that read its other stream: "usable" alone hid that."""
    (tmp_path / "data").mkdir()
    without_audio_decoder(
        write_video(tmp_path / "data" / "v.avi", seconds=1.0, audio_codec="pcm_s16le", video_codec="mpeg4")
    )
    write_wav(tmp_path / "data" / "a.wav", tone(1.0, 16000), 16000)
    assert main([str(tmp_path / "data"), "--index-cache", str(tmp_path / "cache")]) == 0
    err = capsys.readouterr().err
    assert f"2 files under {tmp_path / 'data'}: 2 usable (1 without a usable audio stream [1 x " in err
    assert ", 0 not." in err
    write_wav(tmp_path / "data" / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    assert main([str(tmp_path / "data"), "--index-cache", str(tmp_path / "cache")]) == 0
    assert "; 1 whose audio is digital silence), 0 not." in capsys.readouterr().err  # left out of audio-only runs


def _probed_alone_and_beside_a_whole_file(path: Path, capsys, alone: int = 0) -> tuple[str, str]:
    """What the probe says of ``path`` alone (exiting ``alone``), then of its folder with a whole WAV beside it."""
    write_wav(path.parent / "whole.wav", tone(1.0, 16000), 16000)
    said = []
    for target, status in ((path, alone), (path.parent, 0)):
        assert main([str(target), "--index-cache", str(path.parent.parent / "cache")]) == status
        said.append(capsys.readouterr().err)
    return said[0], said[1]


def test_a_file_that_decodes_short_of_its_stated_length_is_usable_and_said_to_be_truncated(tmp_path, capsys):
    """Training, evaluation and embedding warn about such a file; the probe called it plainly usable."""
    (tmp_path / "data").mkdir()
    short = write_short_flac(tmp_path / "data" / "short.flac", seconds=2.0, missing=5.0)
    alone, in_folder = _probed_alone_and_beside_a_whole_file(short, capsys)
    assert alone.startswith(
        f"{short}: usable (its audio decodes to 2.000 s of the 7.000 s the file states: truncated or corrupt, "
        "it is read as far as it goes). "
    )
    assert "2 usable (1 whose audio decodes well short of the length the file states), 0 not." in in_folder


def test_a_file_too_short_for_training_is_said_to_be(tmp_path, capsys):
    """A 1-frame video was "usable", and every command then left it out as shorter than data.min_seconds."""
    (tmp_path / "data").mkdir()
    brief = write_video(tmp_path / "data" / "brief.mp4", seconds=0.3, fps=10, width=64, height=48, audio_rate=None)
    alone, in_folder = _probed_alone_and_beside_a_whole_file(brief, capsys)
    assert alone.startswith(
        f"{brief}: usable (it is 0.300 s long, under data.min_seconds=0.5: training and evaluation leave it out "
        "unless that is lowered). "
    )
    assert (
        "2 usable (1 shorter than data.min_seconds=0.5, which training and evaluation leave out), 0 not." in in_folder
    )


def test_a_file_shorter_than_one_token_step_is_not_called_usable(tmp_path, capsys):
    """A 0.019 s sound was "usable ... unless data.min_seconds is lowered", and embed then refused it as
    shorter than one token step: no setting of the default models reads it (so the probe of it alone
    fails, as of a file that cannot be used: it exited 0)."""
    (tmp_path / "data").mkdir()
    blip = write_wav(tmp_path / "data" / "blip.wav", tone(0.019, 16000), 16000)
    alone, _ = _probed_alone_and_beside_a_whole_file(blip, capsys, alone=1)
    assert alone.startswith(
        f"{blip}: too short for the default models, which read nothing shorter than one token step (0.04 s of "
        "audio, 0.25 s of video) (it is 0.019 s long, "
    )


def test_a_stream_that_is_not_usable_is_not_also_said_to_be_read_as_far_as_it_goes():
    """A record can hold both a stream's error and the length it states (audio too short for the video)."""
    record = {"has_audio": True, "has_video": True, "audio_duration": 1.0, "audio_stated": 9.0}
    said = probe._stream_errors([record | {"audio_error": "audio ends 8 s before the video"}])
    assert said == "its audio stream is not usable: audio ends 8 s before the video"  # (not also read as far as...)
    assert "its audio decodes to 1.000 s of the 9.000 s the file states" in probe._stream_errors([record])


def test_an_output_named_other_than_json_lines_is_refused_before_probing(data, tmp_path, capsys):
    """data=manifest reads a .csv as CSV: JSON lines under that name failed only when a run read them."""
    assert main([str(data), "-o", str(tmp_path / "list.csv"), "--index-cache", str(tmp_path / "cache")]) == 2
    assert "name it list.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "list.csv").exists() and not (tmp_path / "cache").exists()
    assert main([str(data), "-o", str(tmp_path), "--index-cache", str(tmp_path / "cache")]) == 2  # (not "name it")
    assert (
        capsys.readouterr().err
        == f"error: -o {tmp_path} is a folder; -o names the file to write, e.g. -o manifest.jsonl\n"
    )


def test_a_folder_given_as_a_setting_is_told_to_come_alone(data, tmp_path, capsys):
    """``input=<folder>``, as the Hydra commands take it, was "no such file or directory" alone."""
    assert main([f"input={data}", "--index-cache", str(tmp_path / "cache")]) == 2
    said = f"error: input={data}: no such file or directory (give the path without input=: {data})\n"
    assert capsys.readouterr().err == said
    assert main([str(tmp_path / "none"), "--index-cache", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'none'}: no such file or directory\n"
    assert main(["", "--index-cache", str(tmp_path / "cache")]) == 2  # (an unset variable: not the current folder)
    assert capsys.readouterr().err.startswith("error: the path is empty (an unset shell variable?)")
    (tmp_path / "empty").mkdir()  # an empty manifest, exit 0: a script took it for a folder of nothing usable
    out = ["-o", str(tmp_path / "new" / "m.jsonl"), "--index-cache", str(tmp_path / "cache")]
    assert main([str(tmp_path / "empty"), "--extensions", "wav", *out]) == 2
    assert capsys.readouterr().err == f"error: no media files under {tmp_path / 'empty'} with the extensions wav\n"
    assert not (tmp_path / "new").exists()  # (said before -o's folder is made)


def test_an_output_that_cannot_be_written_is_one_error_line_before_or_after_probing(data, tmp_path, capsys):
    """-o under a file ended in a traceback (FileExistsError), and only once every file was probed."""
    (tmp_path / "taken").write_text("a file, not a folder")
    assert main([str(data), "-o", str(tmp_path / "taken" / "m.jsonl"), "--index-cache", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err == (  # (it said "File exists", of a file the message did not name)
        f"error: -o {tmp_path / 'taken' / 'm.jsonl'}: cannot make its folder: {tmp_path / 'taken'} is a file, "
        "not a folder\n"
    )
    assert not (tmp_path / "cache").exists()  # (refused before probing)
    # a folder no file can be made in, whoever asks (root passes os.access there): refused before probing too
    assert main([str(data), "-o", "/proc/m.jsonl", "--index-cache", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err.startswith("error: -o /proc/m.jsonl: cannot write in /proc: ")
    assert not (tmp_path / "cache").exists()

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probe, "write_text", full)
        assert main([str(data), "-o", str(tmp_path / "m.jsonl"), "--index-cache", str(tmp_path / "cache")]) == 1
    assert capsys.readouterr().err == f"error: -o {tmp_path / 'm.jsonl'}: No space left on device\n"


def test_without_an_output_the_records_go_to_stdout(data, tmp_path, capsys):
    assert main([str(data / "b.wav"), "--index-cache", str(tmp_path / "cache")]) == 0
    out, err = capsys.readouterr()
    (record,) = map(json.loads, out.splitlines())
    assert record["path"] == str(data / "b.wav") and record["audio_backend"] == "soundfile"
    assert err.startswith(f"{data / 'b.wav'}: usable. 1 probed, 0 from the index cache ")  # (not "1 file under")


def test_a_manifest_is_refused_as_not_what_probe_takes_and_left_out_of_the_index(data, tmp_path, capsys):
    """It was probed as a media file ("not a readable media container"), and its record cached."""
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"path": str(data / "b.wav")}) + "\n")
    assert main([str(manifest), "--index-cache", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {manifest} is a manifest (by its name): probe takes a folder")
    assert not (tmp_path / "cache").exists()


def test_a_single_file_that_only_embed_reads_says_so_in_its_own_words(tmp_path, capsys):
    """A file whose only stream is digital silence was "usable (1 whose audio is digital silence)": in
    a folder's words, and no config that trains or evaluates reads it."""
    silent = write_wav(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    assert main([str(silent), "--index-cache", str(tmp_path / "cache")]) == 0
    said = capsys.readouterr().err
    assert said.startswith(
        f"{silent}: usable by embed only (training and evaluation leave it out) (its audio is digital silence). "
    )


def test_single_bad_file_exits_nonzero_with_the_reason(media, tmp_path, capfd):
    assert main([str(media["truncated"]), "-o", str(tmp_path / "m.jsonl"), "--index-cache", str(tmp_path)]) == 1
    out, err = capfd.readouterr()  # file-descriptor level: decoders' native prints would show here
    assert err == (
        f"error: {media['truncated']}: not a readable media container (ffmpeg could not open it; an MP4/MOV file cut "
        "short before its index, the moov box: truncated, or still being written?)\n"
    )


def test_missing_path_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "-o", str(tmp_path / "m.jsonl")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option,value,said",
    [
        ("--timeout", "-5", "must be a number of seconds > 0; got '-5'"),  # (every file "hung: no answer in -5 s")
        ("--timeout", "0", "must be a number of seconds > 0; got '0'"),
        ("--jobs", "0", "must be a whole number > 0; got '0'"),
    ],
)
def test_a_time_limit_or_process_count_that_is_not_positive_is_refused_before_probing(
    option, value, said, tmp_path, capsys
):
    with pytest.raises(SystemExit) as ended:
        main([str(tmp_path), option, value])
    assert ended.value.code == 2 and capsys.readouterr().err.endswith(f"error: argument {option}: {said}\n")


def test_a_time_limit_and_a_process_count_that_are_positive_are_taken():
    args = probe.parse(["folder", "--timeout", "30", "--jobs", "3"])
    assert (args.timeout, args.jobs) == (30.0, 3)


def test_a_broken_link_is_listed_as_a_file_that_cannot_be_read(data, tmp_path, capsys, caplog):
    (data / "gone.wav").symlink_to("/nonexistent/x.ogg")
    manifest, cache = tmp_path / "manifest.jsonl", str(tmp_path / "cache")
    assert main([str(data), "-o", str(manifest), "--index-cache", cache]) == 0
    rows = {r["path"]: r for r in map(json.loads, manifest.read_text().splitlines())}
    assert rows["data/gone.wav"]["error"] == "broken symbolic link (to /nonexistent/x.ogg)"
    assert "6 files under" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.manifest"):
        ManifestSource(str(manifest)).clips()
    assert not caplog.records  # the fields of the probe's records are known to a manifest
    assert main([str(data / "gone.wav"), "--index-cache", cache]) == 1
    assert capsys.readouterr().err == f"error: {data / 'gone.wav'}: broken symbolic link (to /nonexistent/x.ogg)\n"


def test_ctrl_c_exits_130_with_one_line_and_a_rerun_takes_the_probed_files_from_the_cache(
    data, tmp_path, monkeypatch, capsys, caplog
):
    cache = tmp_path / "cache"
    with monkeypatch.context() as patch:
        patch.setattr(IsolatedPool, "map", interrupted_after(1))
        assert main([str(data), "-o", str(tmp_path / "m.jsonl"), "--index-cache", str(cache)]) == 130
    assert capsys.readouterr() == ("", "")  # no traceback; the one line is the index's (logged to stderr)
    kept = cache_file([str(p) for p in sorted(data.rglob("*.*")) if p.suffix != ".txt"], cache)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"interrupted: kept 1 of 5 probe results in the index cache {kept}; a re-run probes only the other 4"
    ]
    assert not (tmp_path / "m.jsonl").exists()
    assert main([str(data), "-o", str(tmp_path / "m.jsonl"), "--index-cache", str(cache)]) == 0
    assert "4 probed, 1 from the index cache" in capsys.readouterr().err

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(probe, "index_files", interrupt)  # Ctrl-C outside the probing
    assert main([str(data), "-o", str(tmp_path / "n.jsonl"), "--index-cache", str(cache)]) == 130
    err = capsys.readouterr().err
    assert (
        err
        == f"interrupted: {tmp_path / 'n.jsonl'} was not written; every file probed before stays in the index cache\n"
    )


def test_the_probe_function_has_one_name_and_the_old_one_warns():
    with pytest.warns(DeprecationWarning, match="ttt_mm.data.decode.probe"):
        old = ttt_mm.data.__getattr__("probe")
    assert old is decode.probe and "probe" not in ttt_mm.data.__all__


@pytest.mark.slow
def test_the_old_command_forwards_with_a_warning(media, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ttt_mm.data.probe", str(media["wav16k"]), "--index-cache", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "DeprecationWarning: python -m ttt_mm.data.probe is deprecated" in proc.stderr
    assert json.loads(proc.stdout)["audio_backend"] == "soundfile"


def test_files_with_stretches_missing_inside_a_stream_are_counted(tmp_path, capsys):
    """They are read with each gap filled, and training warns of each: the probe called them plainly usable."""
    times = [40 * i for i in range(25)] + [2000 + 40 * i for i in range(25)]  # (1 s without frames at 1 s)
    lost = write_video(tmp_path / "lost.mkv", 3.0, 25, 64, 48, audio_rate=None, times_ms=times)
    assert main([str(lost), "--index-cache", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().err.startswith(
        f"{lost}: usable (1.000 s inside its video is missing: the picture before each shows through it). "
    )
    gapped = {"has_audio": True, "has_video": True, "audio_duration": 9.0, "video_duration": 9.0}
    said = probe._stream_errors([gapped | {"audio_gaps": 0.5}, gapped | {"audio_gaps": 0.2, "video_gaps": 1.0}, {}])
    assert said == (
        "1 with stretches missing inside their video, the picture before each shows through it; "
        "2 with stretches missing inside their audio, read as silence in place"
    )
    unfinished = gapped | {"zeroed_tail": 70000}
    said = "its last 70000 bytes are zeros: an unfinished download or copy?"
    assert probe._stream_errors([unfinished]) == said
    assert (
        probe._stream_errors([unfinished, unfinished, gapped])
        == "2 ending in zero bytes: unfinished downloads or copies?"
    )
