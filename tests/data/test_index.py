"""The dataset index: probes in worker processes that may crash or hang, records cached on disk,
and the clips a reader can use chosen from them."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
import types

import pytest
from faults import (
    abort_in_a_decoder_call,
    abort_on_boom,
    abort_on_growing,
    denied_on_locked,
    hang_on_slow,
    interrupted_after,
    killed_or_failed,
    stuck_on_stuck,
)
from mediafiles import tone, write_video, write_wav

from ttt_mm.data import (
    ClipInfo,
    MediaDataModule,
    MediaError,
    ReadSpec,
    WindowDataset,
    decode,
    index,
    index_clips,
    index_files,
    selection,
)
from ttt_mm.data.decode.isolation import IsolatedPool
from ttt_mm.data.index import IndexCacheError, IndexInterrupted, cache_file, media_info
from ttt_mm.data.selection import SILENT_AUDIO, SILENT_TRACK, select
from ttt_mm.data.skiplist import SkipList
from ttt_mm.data.sources import FolderSource


@pytest.fixture
def folder(media, tmp_path):
    """Good and bad files of every kind, copied so that tests may touch them."""
    names = {
        "av": "av.mp4",
        "video_only": "video.mp4",
        "wav16k": "tone.wav",
        "corrupt": "noise.mkv",
        "zero": "zero.mp4",
    }
    root = tmp_path / "data"
    root.mkdir()
    for key, name in names.items():
        shutil.copy(media[key], root / name)
    return root


def test_records_list_streams_and_the_backend_of_each(folder, tmp_path):
    write_video(folder / "av1.mkv", seconds=1.0, fps=8, audio_rate=None, video_codec="libsvtav1")
    write_video(folder / "dfpwm.avi", seconds=1.0, fps=8, audio_rate=22050, audio_codec="dfpwm")
    records, run = index_files(sorted(folder.iterdir()), tmp_path / "cache")
    by_name = {os.path.basename(p): r for p, r in records.items()}
    av = by_name["av.mp4"]
    assert (av["has_audio"], av["has_video"], av["audio_backend"], av["video_backend"]) == (
        True,
        True,
        "pyav",
        "decord",
    )
    assert av["n_frames"] == 90 and (av["width"], av["height"]) == (160, 120) and av["sample_rate"] == 16000
    assert by_name["tone.wav"]["audio_backend"] == "soundfile" and by_name["tone.wav"]["has_video"] is False
    assert by_name["video.mp4"]["has_audio"] is False and "error" not in by_name["video.mp4"]
    assert by_name["av1.mkv"]["video_backend"] == "pyav"  # AV1: decord's FFmpeg has no decoder for it
    assert (by_name["dfpwm.avi"]["video_backend"], by_name["dfpwm.avi"]["audio_backend"]) == ("decord", "pyav")
    assert by_name["noise.mkv"]["error"] == "not a readable media container (ffmpeg could not open it)"
    assert by_name["zero.mp4"]["error"] == "empty file (0 bytes)"
    assert run.probed == 7 and run.cached == 0 and not run.failures
    info = media_info(by_name["dfpwm.avi"])
    assert info.has_audio and info.audio_backend == "pyav" and info.size == (160, 120)


def test_a_second_run_probes_nothing_and_a_touched_file_again(folder, tmp_path):
    files = sorted(folder.iterdir())
    first, run = index_files(files, tmp_path / "cache")
    assert run.probed == len(files)
    cached = [p.name for p in (tmp_path / "cache").iterdir()]
    assert sorted(cached) == sorted([run.cache.name, run.cache.with_suffix(".lock").name])  # no temporary left
    again, run2 = index_files(files, tmp_path / "cache")
    assert (run2.probed, run2.cached) == (0, len(files)) and again == first
    later = time.time() + 5
    os.utime(folder / "tone.wav", (later, later))
    third, run3 = index_files(files, tmp_path / "cache")
    assert (
        run3.probed == 1 and third[str(folder / "tone.wav")]["mtime_ns"] != first[str(folder / "tone.wav")]["mtime_ns"]
    )
    lines = [json.loads(line) for line in run3.cache.read_text().splitlines()]
    assert sorted(r["path"] for r in lines) == sorted(map(str, files))  # one record per file, rewritten whole
    assert cache_file([str(f) for f in files], tmp_path / "cache") == run.cache

    lines = run3.cache.read_bytes().splitlines(keepends=True)
    run3.cache.write_bytes(lines[0][:20] + b"\xff\xfe" + lines[0][20:] + b"".join(lines[1:]))  # a damaged byte
    fourth, run4 = index_files(files, tmp_path / "cache")
    assert (run4.probed, run4.cached) == (1, len(files) - 1) and fourth == third  # its line's file, probed again
    # lines that parse but are no record of a file (one failed the run at the next save: os.stat(None))
    lines = run4.cache.read_text().splitlines()
    wrong = json.loads(lines[0]) | {"bytes": str(json.loads(lines[0])["bytes"])}
    damaged = ['{"path": null}', "[1, 2]", json.dumps(wrong), *lines[1:]]
    run4.cache.write_text("\n".join(damaged) + "\n")
    fifth, run5 = index_files(files, tmp_path / "cache")
    assert (run5.probed, run5.cached) == (1, len(files) - 1) and fifth == third
    assert "null" not in run5.cache.read_text() and len(run5.cache.read_text().splitlines()) == len(files)


def test_a_run_that_waits_for_another_indexing_the_same_files_says_so(folder, tmp_path, caplog):
    """A probe waited minutes on another run's indexing of the same media tree without a line."""
    files = sorted(folder.iterdir())
    lock_path = cache_file([str(f) for f in files], tmp_path / "cache").with_suffix(".lock")
    lock_path.parent.mkdir(parents=True)
    other = open(lock_path, "w")  # noqa: SIM115 (another process's hold: the locks of two opens exclude each other)
    fcntl.flock(other, fcntl.LOCK_EX)
    said = threading.Event()  # (released once the wait is said, however slowly the run reaches the lock)

    class Released(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("waiting for another process"):
                said.set()

    threading.Thread(target=lambda: (said.wait(60), other.close())).start()
    handler = Released()
    logging.getLogger("ttt_mm.data.index").addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="ttt_mm.data.index"):
            _, run = index_files(files, tmp_path / "cache")
    finally:
        logging.getLogger("ttt_mm.data.index").removeHandler(handler)
    assert f"waiting for another process indexing these files (it holds {lock_path})" in caplog.messages
    assert run.probed == len(files)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ttt_mm.data.index"):
        index_files(files, tmp_path / "cache")  # (nobody else: no wait said)
    assert not [m for m in caplog.messages if m.startswith("waiting")]


def test_a_run_over_some_of_a_folders_files_keeps_the_records_of_the_others(folder, tmp_path):
    """It rewrites the index (a file of it changed): the files it was not given keep their records, and
    a later run over the whole folder probes none of them again."""
    files = sorted(folder.iterdir())
    index_files(files, tmp_path / "cache")
    later = time.time() + 5
    os.utime(files[0], (later, later))
    _, some = index_files(files[:-1], tmp_path / "cache")
    assert some.probed == 1 and some.cache == cache_file([str(f) for f in files], tmp_path / "cache")
    _, whole = index_files(files, tmp_path / "cache")
    assert (whole.probed, whole.cached) == (0, len(files))


def test_files_indexed_in_the_cache_of_another_folder_are_not_probed_again(folder, tmp_path):
    """A run over a dataset indexes its subfolders' files in the dataset folder's cache. A run over one
    subfolder, or over a manifest listing files of several subfolders indexed one by one, probed them
    all again (each set of files has a cache of the folder that holds them all)."""
    data = tmp_path / "set"
    for sub, name in (("a", "tone.wav"), ("b", "av.mp4"), ("b", "video.mp4")):
        (data / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name, data / sub / name)
    everything = sorted(str(p) for p in data.rglob("*.*"))
    first, whole = index_files(everything, tmp_path / "cache")
    part_files = sorted(str(p) for p in (data / "b").iterdir())
    part, run = index_files(part_files, tmp_path / "cache")
    assert whole.probed == 3 and (run.probed, run.cached) == (0, 2) and run.cache != whole.cache
    assert part == {p: first[p] for p in part_files}
    assert sorted(json.loads(line)["path"] for line in run.cache.read_text().splitlines()) == part_files  # kept
    for sub in ("a", "b"):
        index_files(sorted((data / sub).iterdir()), tmp_path / "per_folder")
    _, listed = index_files(everything, tmp_path / "per_folder")
    assert (listed.probed, listed.cached) == (0, 3)
    later = time.time() + 5
    os.utime(data / "a" / "tone.wav", (later, later))  # the dataset's cache describes the file as it was
    _, changed = index_files([str(data / "a" / "tone.wav")], tmp_path / "cache")
    assert (changed.probed, changed.cached) == (1, 0)
    cache_file([str(data / "file")], tmp_path / "unreadable").mkdir(parents=True)  # (the dataset's: a folder)
    _, passed_over = index_files(part_files, tmp_path / "unreadable")
    assert passed_over.probed == 2


def test_a_file_reached_through_a_link_is_probed_once_whichever_way(folder, tmp_path):
    """A folder of links to a dataset's files, then a manifest listing the files themselves: each file was
    probed again (its records were keyed by the path it was reached by)."""
    links = tmp_path / "links"
    links.mkdir()
    (links / "t.wav").symlink_to(folder / "tone.wav")
    (links / "v.mp4").symlink_to(folder / "av.mp4")
    tone, av = str(folder / "tone.wav"), str(folder / "av.mp4")
    linked, first = index_files([links / "t.wav"], tmp_path / "cache")
    assert first.probed == 1 and linked[str(links / "t.wav")]["path"] == str(links / "t.wav")
    direct, second = index_files([tone, av], tmp_path / "cache")
    assert (second.probed, second.cached) == (1, 1)  # av.mp4 only
    assert direct[tone] == linked[str(links / "t.wav")] | {"path": tone}
    both, third = index_files([links / "v.mp4", tone, links / "t.wav"], tmp_path / "cache")  # the other way round
    assert (third.probed, third.cached) == (0, 2) and list(both) == [str(links / "v.mp4"), tone, str(links / "t.wav")]
    assert both[str(links / "v.mp4")] == direct[av] | {"path": str(links / "v.mp4")}
    # a name decoders read otherwise (not UTF-8: decord cannot open it; another extension) is its own record
    odd = [os.fsdecode(os.fsencode(links) + b"/caf\xe9.wav"), str(links / "t.flac")]
    for name in odd:
        os.symlink(tone, name)
    _, own = index_files(odd, tmp_path / "cache")
    assert (own.probed, own.cached) == (2, 0)
    kept = {json.loads(line)["path"] for line in own.cache.read_text(errors="surrogateescape").splitlines()}
    assert set(odd) <= kept


def test_compressed_audio_longer_than_the_decode_cache_is_warned_about_once(media, tmp_path, caplog, monkeypatch):
    """Such a track is decoded whole for a window whenever another file's audio was read in between."""
    monkeypatch.setattr(selection, "AUDIO_CACHE_SAMPLES", 16000 * 2)  # 2 s: the 3 s AAC track is longer
    clips = [ClipInfo(str(media["av"])), ClipInfo(str(media["wav16k"]))]  # the WAV is read by seeking
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        index_clips(clips, ReadSpec(("audio",)), tmp_path / "cache")
    (line,) = [r.getMessage() for r in caplog.records if "compressed audio" in r.getMessage()]
    assert line.startswith("files whose compressed audio is longer than the decoded track a process keeps")
    assert f": 1 (the first: {media['av']}, " in line
    assert "extract such audio to FLAC" in line


def test_indexing_many_files_ends_with_a_line_that_says_it_is_done(tmp_path, caplog):
    """The progress line ("indexed 1 of 83 files") was the last word, and read like a final count."""
    files = [write_wav(tmp_path / f"{i}.wav", tone(0.6, 8000), 8000) for i in range(11)]
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        index_files([*files, tmp_path / "bad.wav"], tmp_path / "cache")
    assert re.match(
        r"probed 12 new or changed files in \d+ s: 1 of them cannot be read$", caplog.records[-1].getMessage()
    )


def test_a_file_that_cannot_be_opened_says_so_and_is_not_cached_as_corrupt(folder, tmp_path, monkeypatch):
    """Decoders called an unreadable file "not a readable media container", and the index kept that:
    a chmod keeps size and mtime, so the file stayed out after it was fixed."""
    locked, link = str(folder / "locked.wav"), folder / "gone.wav"
    shutil.copy(folder / "tone.wav", locked)
    link.symlink_to(folder / "missing.wav")
    real_open = os.open

    def denied(path, flags, *args, **kwargs):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)  # (in this process: what a probe worker meets)
    with pytest.raises(MediaError, match="cannot open: Permission denied"):
        decode.probe(locked)
    assert index.describe(locked)["error"] == "cannot open: Permission denied"
    monkeypatch.setattr(os, "open", real_open)
    records, run = index_files([locked, str(link)], tmp_path / "cache", task=denied_on_locked)
    assert records[locked]["error"] == "cannot open: Permission denied"
    assert run.cached == 0  # (a broken link was counted as cached)
    records, run = index_files([locked], tmp_path / "cache")  # permissions fixed: size and mtime as they were
    assert records[locked]["audio_backend"] == "soundfile" and (run.probed, run.cached) == (1, 0)
    monkeypatch.setattr(os, "open", denied)  # taken away again after a good probe: the cached record is not read
    records, _ = index_files([locked], tmp_path / "cache")
    assert records[locked]["error"] == "cannot open: Permission denied"  # (runs said "libsndfile cannot open")


def test_a_decoder_that_aborts_costs_its_file_not_the_caller(folder, tmp_path):
    shutil.copy(folder / "av.mp4", folder / "boom.mp4")
    files = sorted(folder.iterdir())
    records, run = index_files(files, tmp_path / "cache", jobs=2, task=abort_on_boom)
    boom = records[str(folder / "boom.mp4")]
    assert boom["error"].startswith("decoder crashed: SIGABRT")
    assert "std::bad_alloc" in boom["error"]  # the worker's last words are kept
    assert records[str(folder / "av.mp4")]["video_backend"] == "decord"  # the replacement worker went on
    assert all("error" not in records[str(folder / n)] for n in ("av.mp4", "video.mp4", "tone.wav"))
    _, again = index_files(files, tmp_path / "cache", task=abort_on_boom)
    assert again.probed == 0  # the crash is remembered: the file is never opened again


def test_a_decoder_that_aborts_inside_its_call_leaves_its_last_words_in_the_reason(folder, tmp_path):
    """Its stderr went to /dev/null while the call ran (the watchdog silences native chatter): the reason
    was "decoder crashed: SIGABRT" alone, where a worker's stderr is a file read for them."""
    shutil.copy(folder / "tone.wav", folder / "inside.wav")
    records, _ = index_files([folder / "inside.wav"], tmp_path / "cache", task=abort_in_a_decoder_call)
    assert records[str(folder / "inside.wav")]["error"].startswith("decoder crashed: SIGABRT (terminate called")


def test_a_crash_is_remembered_for_the_version_of_the_file_the_probe_read(folder, tmp_path):
    """A file that changed while its probe crashed (a copy still being written) was recorded under its size
    after the crash, a version no probe read: its crash was held against it until the file changed again."""
    growing = folder / "growing.wav"
    shutil.copy(folder / "tone.wav", growing)
    before = growing.stat().st_size
    records, _ = index_files([growing], tmp_path / "cache", task=abort_on_growing)
    assert records[str(growing)]["bytes"] == before and records[str(growing)]["error"].startswith("decoder crashed")
    records, again = index_files([growing], tmp_path / "cache")  # (the copy done: its new version is probed)
    assert again.probed == 1 and "error" not in records[str(growing)]


def test_a_probe_killed_from_outside_or_failing_in_its_process_is_not_held_against_the_file(folder, tmp_path):
    """An out-of-memory kill or a process out of file handles is not the file's doing: the run skips
    the file, and the next one probes it again (they were remembered until the file changed)."""
    for name in ("killed.wav", "handles.wav"):
        shutil.copy(folder / "tone.wav", folder / name)
    files = [str(folder / n) for n in ("killed.wav", "handles.wav", "tone.wav")]
    records, run = index_files(files, tmp_path / "cache", task=killed_or_failed)
    assert records[files[0]]["error"] == "decoder crashed: SIGKILL (the next run probes it again)"
    assert records[files[1]]["error"].startswith("decoder exited with status 1 (OSError: [Errno 24] Too many")
    assert records[files[1]]["error"].endswith("(the next run probes it again)")
    assert sorted(run.failures) == sorted(files[:2]) and "error" not in records[files[2]]
    assert set().union(*records.values()) <= {"path", *index.RECORD_FIELDS}  # (a manifest from them knows each)
    records, again = index_files(files, tmp_path / "cache")  # (the real probe)
    assert (again.probed, again.cached) == (2, 1)
    assert all(records[f]["audio_backend"] == "soundfile" for f in files)


def test_a_probe_that_dies_of_something_else_twice_in_a_row_is_held_against_the_file(folder, tmp_path):
    """Killed again (by the out-of-memory killer, say, which its decoding sets off), it would be probed
    again by every run."""
    shutil.copy(folder / "tone.wav", folder / "killed.wav")
    killed = str(folder / "killed.wav")
    index_files([killed], tmp_path / "cache", task=killed_or_failed)
    records, second = index_files([killed], tmp_path / "cache", task=killed_or_failed)
    assert second.probed == 1 and records[killed]["error"] == (
        "decoder crashed: SIGKILL (the second run in a row: remembered until the file changes)"
    )
    _, third = index_files([killed], tmp_path / "cache")
    assert (third.probed, third.cached) == (0, 1)


@pytest.mark.slow
def test_a_decoder_that_hangs_is_killed_after_the_timeout(folder, tmp_path):
    """The hanging worker sleeps an hour: that the call returns at all means it was killed."""
    shutil.copy(folder / "tone.wav", folder / "slow.wav")
    # (6 s: time for the real probes of the other files on a slow, busy machine)
    records, run = index_files(sorted(folder.iterdir()), tmp_path / "cache", jobs=2, timeout=6.0, task=hang_on_slow)
    slow = str(folder / "slow.wav")
    assert records[slow]["error"] == "decoder hung: no answer in 6 s (a longer probe timeout tries it again)"
    assert "error" not in records[str(folder / "tone.wav")]
    assert list(run.failures) == [slow]
    _, same = index_files([slow], tmp_path / "cache", timeout=6.0, task=hang_on_slow)
    assert same.probed == 0  # remembered under the same timeout
    again, longer = index_files([slow], tmp_path / "cache", timeout=7.0, task=hang_on_slow)
    assert longer.probed == 1 and again[slow]["error"].startswith("decoder hung: no answer in 7 s")


def test_an_interrupted_indexing_keeps_what_it_probed(folder, tmp_path, monkeypatch):
    files = [folder / "tone.wav", folder / "video.mp4", folder / "av.mp4", folder / "noise.mkv", folder / "zero.mp4"]
    cache = cache_file([str(f) for f in files], tmp_path / "cache")
    with monkeypatch.context() as patch:
        patch.setattr(IsolatedPool, "map", interrupted_after(2))
        with pytest.raises(KeyboardInterrupt) as caught:
            index_files(files, tmp_path / "cache")
    assert isinstance(caught.value, IndexInterrupted)
    assert str(caught.value) == f"interrupted: kept 2 of 5 probe results in the index cache {cache}; " + (
        "a re-run probes only the other 3"
    )
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name, cache.with_suffix(".lock").name]
    records, run = index_files(files, tmp_path / "cache")
    assert (run.probed, run.cached) == (3, 2) and records[str(folder / "video.mp4")]["has_video"]
    with monkeypatch.context() as patch:  # (before any probe ended: "kept 0 of 2 ... the other 2")
        patch.setattr(IsolatedPool, "map", interrupted_after(0))
        with pytest.raises(
            IndexInterrupted, match="^interrupted before the first of 2 probes ended: a re-run probes them all$"
        ):
            index_files([folder / "tone.wav", folder / "av.mp4"], tmp_path / "fresh")


def test_a_ctrl_c_while_the_index_is_saved_takes_effect_once_it_is_saved(folder, tmp_path, monkeypatch):
    """A signal during the save (a second one after an interrupt: `timeout` signals the whole process
    group) abandoned it, and the probe command then said that every file probed stayed in the cache."""
    files = [folder / "tone.wav", folder / "video.mp4"]
    save, signalled = index._save, []

    def signalled_once(path, records):
        if not signalled:
            signalled.append(True)
            signal.raise_signal(signal.SIGINT)  # (Python's handler: a KeyboardInterrupt, once the save lets it)
        save(path, records)

    monkeypatch.setattr(index, "_save", signalled_once)
    with pytest.raises(KeyboardInterrupt):
        index_files(files, tmp_path / "cache")
    assert signalled
    _, run = index_files(files, tmp_path / "cache")
    assert (run.probed, run.cached) == (0, 2)


def test_the_index_is_saved_while_probing(folder, tmp_path, monkeypatch):
    """A run killed outright (SIGKILL, a cluster's time limit) keeps what was saved before."""
    files = [str(folder / "tone.wav"), str(folder / "video.mp4")]
    cache = cache_file(files, tmp_path / "cache")
    saved = []

    def map_watching_the_cache(self, paths):
        for path in paths:
            yield path, self.task(path)
            saved.append(len(cache.read_text().splitlines()) if cache.exists() else 0)

    monkeypatch.setattr(index, "SAVE_SECONDS", 0.0)
    monkeypatch.setattr(IsolatedPool, "map", map_watching_the_cache)
    index_files(files, tmp_path / "cache")
    assert saved == [1, 2]


def test_the_files_after_a_hung_one_get_a_worker_of_their_own(media, tmp_path):
    """The hung worker is killed, not handed the next file (which would then be called hung too)."""
    names = ["slow.wav", "a.wav", "b.wav"]
    for name in names:
        shutil.copy(media["wav16k"], tmp_path / name)
    answers = dict(IsolatedPool(hang_on_slow, jobs=1, timeout=3).map([str(tmp_path / n) for n in names]))
    reasons = {os.path.basename(p): getattr(a, "reason", None) for p, a in answers.items()}
    assert reasons == {"slow.wav": "decoder hung: no answer in 3 s", "a.wav": None, "b.wav": None}


def test_a_worker_that_retires_after_a_stuck_decoder_takes_no_file_with_it(media, tmp_path):
    names = ["0stuck.wav", *(f"{i}good.wav" for i in range(1, 5))]
    for name in names:
        shutil.copy(media["wav16k"], tmp_path / name)
    answers = dict(IsolatedPool(stuck_on_stuck, jobs=1, timeout=30).map([str(tmp_path / n) for n in names]))
    errors = {os.path.basename(p): a.get("error") if isinstance(a, dict) else a.reason for p, a in answers.items()}
    assert errors == {"0stuck.wav": "decoding did not return"} | dict.fromkeys(names[1:])


def test_a_broken_link_is_listed_with_its_reason_in_the_runs_skip_list(media, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(media["wav16k"], data / "tone.wav")
    (data / "gone.ogg").symlink_to("/nonexistent/x.ogg")
    skipped = tmp_path / "run" / "skipped_media.tsv"
    source = FolderSource(str(data))
    dm = MediaDataModule(source, ["audio"], 1.0, val_fraction=0, test_fraction=0, skip_list=str(skipped))
    dm.index_cache = str(tmp_path / "cache")
    dm.setup("fit")
    assert [c.key for c in dm.clips] == ["tone.wav"]
    assert SkipList(skipped).reasons == {str(data / "gone.ogg"): "broken symbolic link (to /nonexistent/x.ogg)"}


def test_the_pool_answers_every_path_with_one_worker():
    paths = [f"/nonexistent/{i}.wav" for i in range(5)]
    answers = dict(IsolatedPool(abort_on_boom, jobs=1, timeout=30).map(paths))
    assert sorted(answers) == paths and all(a["error"] == "file not found" for a in answers.values())


def names(selection) -> list[str]:
    return sorted(os.path.basename(c.name) for c in selection.clips)


def test_configs_take_the_files_with_their_streams(folder, tmp_path):
    clips = [ClipInfo(str(p), key=p.name) for p in sorted(folder.iterdir())]
    records, _ = index_files([c.media for c in clips], tmp_path / "cache")
    video = select(clips, records, ReadSpec(("video",), size=32))
    assert names(video) == ["av.mp4", "video.mp4"]
    assert video.rejected[str(folder / "tone.wav")] == "no video stream (the model reads video)"
    assert names(select(clips, records, ReadSpec(("audio",)))) == ["av.mp4", "tone.wav"]
    skip = select(clips, records, ReadSpec(("audio", "video"), size=32))
    assert names(skip) == ["av.mp4"]
    assert (
        "no audio stream" in skip.rejected[str(folder / "video.mp4")]
        and "missing_audio=skip" in (skip.rejected[str(folder / "video.mp4")])
    )
    silence = select(clips, records, ReadSpec(("audio", "video"), size=32, missing_audio="silence"))
    assert names(silence) == ["av.mp4", "video.mp4"]
    assert silence.silent == {str(folder / "video.mp4"): "no audio stream"}
    assert all(c.info is not None for c in silence.clips)
    assert silence.rejected[str(folder / "zero.mp4")] == "empty file (0 bytes)"


def test_digital_silence_is_left_out_of_audio_only_training_and_evaluation(media, folder, tmp_path):
    shutil.copy(media["silence"], folder / "silence.wav")
    clips = [ClipInfo(str(folder / name)) for name in ("silence.wav", "tone.wav", "av.mp4")]
    records, _ = index_files([c.media for c in clips], tmp_path / "cache")
    audio = select(clips, records, ReadSpec(("audio",), skip_silent=True))
    assert names(audio) == ["av.mp4", "tone.wav"] and audio.rejected == {clips[0].media: SILENT_AUDIO}
    assert names(select(clips, records, ReadSpec(("audio",)))) == ["av.mp4", "silence.wav", "tone.wav"]  # embedding
    records[clips[2].media] = records[clips[2].media] | {"silent": True}  # a video with a placeholder track
    assert names(select(clips, records, ReadSpec(("audio",), skip_silent=True))) == ["tone.wav"]
    assert MediaDataModule(modalities=["audio"]).spec.skip_silent  # training and evaluation read through it


def test_a_video_with_a_digitally_silent_track_counts_as_one_without_sound(folder, tmp_path, caplog, monkeypatch):
    clip = ClipInfo(str(folder / "av.mp4"))
    records, _ = index_files([clip.media], tmp_path / "cache")
    records[clip.media] = records[clip.media] | {"silent": True}  # a placeholder track
    skip = select([clip], records, ReadSpec(("audio", "video"), size=32, skip_silent=True))
    assert not skip.clips
    assert skip.rejected == {clip.media: f"{SILENT_TRACK} (the model reads audio and video; data.missing_audio=skip)"}
    spec = ReadSpec(("audio", "video"), size=32, missing_audio="silence", skip_silent=True)
    silence = select([clip], records, spec)
    assert silence.silent == {clip.media: SILENT_TRACK} and silence.clips[0].info.has_audio is False  # not decoded
    kept = select([clip], records, ReadSpec(("audio", "video"), size=32))  # embedding reads the track itself
    assert not kept.silent and kept.clips[0].info.has_audio is True
    assert names(select([clip], records, ReadSpec(("video",), size=32, skip_silent=True))) == ["av.mp4"]
    broken = {clip.media: records[clip.media] | {"video_error": "decoding frame 0 failed"}}
    assert select([clip], broken, spec).rejected[clip.media].startswith("decoding frame 0 failed")  # the real trouble
    monkeypatch.setattr(selection, "index_files", lambda *args: (records, None))
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        index_clips([clip], spec)
    (line,) = [r for r in caplog.records if "silent track" in r.getMessage()]
    assert line.levelno == logging.INFO  # nothing that was there is lost


def test_a_video_whose_sound_cannot_be_read_is_read_with_silence_only_when_asked_and_says_why(
    folder, tmp_path, monkeypatch, caplog
):
    clip = ClipInfo(str(folder / "av.mp4"))
    records, _ = index_files([clip.media], tmp_path / "cache")
    why = "the audio stream ends at 0.4 s, before the video's 3.0 s"  # as `describe` records such a file
    records[clip.media] = records[clip.media] | {"audio_error": why}
    skip = select([clip], records, ReadSpec(("audio", "video"), size=32))
    assert not skip.clips and skip.rejected[clip.media].startswith(why)
    silence = select([clip], records, ReadSpec(("audio", "video"), size=32, missing_audio="silence"))
    assert silence.silent == {clip.media: why} and silence.clips[0].info.has_audio is False
    monkeypatch.setattr(selection, "index_files", lambda *args: (records, None))
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        index_clips([clip], ReadSpec(("audio", "video"), size=32, missing_audio="silence"))
    (line,) = [r for r in caplog.records if "silent track" in r.getMessage()]
    assert line.levelno == logging.WARNING and f"{clip.media}: {why}: read with a silent track" in line.getMessage()


def test_too_short_files_are_left_out_at_index_time(media, tmp_path, caplog):
    clips = [ClipInfo(str(media["one_frame"])), ClipInfo(str(media["video_only"]))]
    selection = index_clips(clips, ReadSpec(("video",), size=32), tmp_path / "cache")
    assert [c.name for c in selection.clips] == [str(media["video_only"])]
    assert "min_seconds=0.5" in selection.rejected[str(media["one_frame"])]


def test_a_too_short_span_is_left_out_under_its_own_name_and_the_files_other_spans_stay(media, tmp_path):
    video = str(media["video_only"])  # 2 s
    clips = [ClipInfo(video, 0.0, 1.5), ClipInfo(video, 1.5, 1.7), ClipInfo(video, 1.8)]
    spec = ReadSpec(("video",), size=32)
    selection = index_clips(clips, spec, tmp_path / "cache")
    assert [(c.start, c.end) for c in selection.clips] == [(0.0, 1.5)]
    assert sorted(selection.rejected) == [f"{video}@1.5-1.7", f"{video}@1.8-end"]
    assert "min_seconds=0.5" in selection.rejected[f"{video}@1.5-1.7"]
    # the spans' reasons, in a run's skip list, do not take the file out of training
    skips = SkipList()
    skips.add_many(selection.rejected, total=len(clips))
    assert len(WindowDataset(selection.clips, 1.0, spec, skip_list=skips)) == 1


def test_spans_that_end_well_past_their_file_are_read_to_its_end_with_one_warning(media, tmp_path, caplog):
    """A manifest's end of 60 for a 2 s file (a typo for 6.0, or another file) was trimmed without a word."""
    video = str(media["video_only"])  # 2 s
    clips = [ClipInfo(video, 0.0, 2.3), ClipInfo(video, 0.0, 60.0), ClipInfo(video, 1.0, 30.0)]
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        selection = index_clips(clips, ReadSpec(("video",), size=32), tmp_path / "cache")
    assert len(selection.clips) == 3  # still read, to the file's end
    (line,) = [r.message for r in caplog.records if "past their file's end" in r.message]
    assert line.startswith(
        f"clips that end past their file's end, read to it: 2 (the first: {video}@0-60; the file ends at 2.0"
    )


def test_a_file_whose_sound_ends_well_before_its_picture_says_where_it_is_cut(tmp_path, caplog):
    """Read with both streams, a file stops where the first one ends: 1.5 s of this video were left
    out without a word."""
    path = write_video(tmp_path / "early.mp4", seconds=4.0, audio_delay=-1.5)  # sound 1.5 s before the picture
    spec = ReadSpec(("audio", "video"), size=32)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        selection = index_clips([ClipInfo(str(path)), ClipInfo(str(path), 0.0, 2.0)], spec, tmp_path / "cache")
    assert len(selection.clips) == 2
    (line,) = [r.message for r in caplog.records if "before the video" in r.message]  # once, for the whole file
    assert re.fullmatch(
        rf"{re.escape(str(path))}: the audio ends 1\.\d\d\d s before the video \(at 2\.\d\d\d s of 4\.000 s\): .*", line
    )
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        caplog.clear()
        index_clips([ClipInfo(str(path), 0.0, 2.0)], spec, tmp_path / "cache")  # a span the cut does not reach
        index_clips([ClipInfo(str(path))], ReadSpec(("video",), size=32), tmp_path / "cache")  # the picture alone
    assert not [r for r in caplog.records if "before the video" in r.message]


@pytest.mark.parametrize("modalities", [("video",), ("audio", "video")])
def test_a_file_cut_short_is_read_as_far_as_it_goes_with_a_warning_per_stream_it_reads(
    media, tmp_path, caplog, modalities
):
    """The frames of an MP4 cut short are listed in its index (moov) but not in the file: a 2 s video
    was read as a whole one of 1 s, without a word (its audio was said to be short)."""
    path = str(media["truncated_faststart"])
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        selection = index_clips([ClipInfo(path)], ReadSpec(modalities, size=32), tmp_path / "cache")
    assert [c.name for c in selection.clips] == [path]
    lines = [r.message for r in caplog.records if "the file states" in r.message]
    assert [line.split(": the ")[1].split(" ")[0] for line in lines] == list(modalities)
    assert re.fullmatch(
        rf"{re.escape(path)}: the video decodes to 0\.\d{{3}} s of the 2\.000 s the file states "
        r"\(truncated or corrupt\): read as far as it goes",
        lines[-1],
    )


def test_an_index_cache_that_cannot_be_written_is_a_setting_to_change(folder, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        IndexCacheError,
        match=r"cannot be kept in .*file/cache \(Not a directory\): set the index cache to a folder you can write",
    ):
        index_files([folder / "tone.wav"], cache_dir=tmp_path / "file" / "cache")


def test_an_index_shared_read_only_is_read_and_what_is_new_probed_without_saving(folder, tmp_path, monkeypatch, caplog):
    """A team's index kept where its users cannot write was refused whole: its lock opens to write."""
    files = [folder / "tone.wav", folder / "video.mp4"]
    index_files(files, tmp_path / "shared")
    denied = OSError(errno.EACCES, os.strerror(errno.EACCES))

    def read_only(path, mode="r", *args, **kwargs):
        if "r" not in mode:
            raise denied
        return open(path, mode, *args, **kwargs)

    def refused(path, records):
        raise denied

    monkeypatch.setattr(index, "open", read_only, raising=False)
    monkeypatch.setattr(index, "_save", refused)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.index"):
        records, run = index_files([*files, folder / "av.mp4"], tmp_path / "shared")
    assert (run.cached, run.probed) == (2, 1) and records[str(folder / "av.mp4")]["has_audio"]
    assert [r.getMessage().partition(": ")[2] for r in caplog.records] == [
        "the index cache cannot be saved (Permission denied); this run goes on; a re-run probes its files again"
    ]
    with pytest.raises(IndexCacheError, match=r"cannot be kept in .*elsewhere \(Permission denied\)"):
        index_files(files, tmp_path / "elsewhere")  # (no index there to read)


def test_a_full_disk_costs_the_index_cache_never_the_runs_probes(folder, tmp_path, monkeypatch, caplog):
    """A save that failed (ENOSPC) raised out of `index_files` and threw away every probe of the run."""

    def full(path, records):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(index, "_save", full)
    files = [folder / "tone.wav", folder / "video.mp4"]
    cache = cache_file([str(f) for f in files], tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.index"):
        records, run = index_files(files, tmp_path / "cache")
    assert run.probed == 2 and records[str(folder / "video.mp4")]["has_video"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{cache}: the index cache cannot be saved (No space left on device); this run goes on; a re-run "
        "probes its files again"
    ]
    monkeypatch.setattr(IsolatedPool, "map", interrupted_after(1))
    with pytest.raises(
        IndexInterrupted,
        match=r"the index cache .* could not be saved; a re-run probes again what this run probed since it was last",
    ):
        index_files(files, tmp_path / "cache")


def test_every_record_field_is_listed_for_manifests_to_know(folder, tmp_path):
    """A manifest read from the probe command's output knows the record fields (no unknown-column
    warning): `RECORD_FIELDS` must name every field a record of a good or a bad file holds."""
    records, _ = index_files(sorted(folder.iterdir()), tmp_path / "cache")
    assert any("error" in r for r in records.values()) and any("has_video" in r for r in records.values())
    assert set().union(*records.values()) <= {"path", *index.RECORD_FIELDS}


def test_a_file_name_with_a_line_break_stays_on_one_log_line(media, tmp_path, caplog):
    name = tmp_path / "two\nlines.mp4"
    shutil.copy(media["video_only"], name)
    spec = ReadSpec(("audio", "video"), size=32, missing_audio="silence")
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        index_clips([ClipInfo(str(name))], spec, cache_dir=tmp_path / "cache")
    (line,) = [r.getMessage() for r in caplog.records if "read with a silent track" in r.getMessage()]
    assert "\n" not in line and line.startswith(str(tmp_path / "two\\nlines.mp4"))


def test_progress_is_logged_for_files_before_the_last_only(tmp_path, caplog, monkeypatch):
    """A probe slower than the progress interval logged "probed 1 of 1 files so far" for a single
    file: a second line where the embed command promises one (the caller logs the last file)."""
    clock = iter(range(0, 10_000, 11))  # every reading of the clock is 11 s after the one before
    monkeypatch.setattr(index, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    files = [write_wav(tmp_path / f"{i}.wav", tone(0.6, 8000), 8000) for i in range(3)]
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        index_files(files, tmp_path / "cache")
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("probed")]
    assert progress[:2] == ["probed 1 of 3 new or changed files so far", "probed 2 of 3 new or changed files so far"]
    # fewer than 10 files are indexed without a word, but progress once logged is closed by its end
    assert len(progress) == 3 and progress[2].startswith("probed 3 new or changed files in ")
    caplog.clear()
    files = [write_wav(tmp_path / f"{i}.wav", tone(0.6, 8000), 8000) for i in range(3, 5)]
    clock = iter(range(0, 10_000, 1))  # fast
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        index_files(files, tmp_path / "cache")
    assert not [r for r in caplog.records if r.getMessage().startswith("probed")]
