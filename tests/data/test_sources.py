"""Clip sources: folders, class folders, manifests, LibriSpeech trees, synthetic; split hashing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from ttt_mm.data import ClassFolderSource, ClipInfo, FolderSource, LibriSpeechSource, ManifestSource, SyntheticSource
from ttt_mm.data.index import cache_file
from ttt_mm.data.manifest import MANIFEST_COLUMNS, write_manifest


def test_folder_source_is_recursive_and_filters_by_extension(media, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(media["av"], tmp_path / "a" / "b" / "clip.MP4")
    shutil.copy(media["wav16k"], tmp_path / "a" / "tone.wav")
    (tmp_path / "notes.txt").write_text("not media")
    clips = FolderSource(str(tmp_path)).clips()
    assert [c.key for c in clips] == ["a/b/clip.MP4", "a/tone.wav"]
    assert [c.key for c in FolderSource(str(tmp_path), (".wav",)).clips()] == ["a/tone.wav"]
    with pytest.raises(FileNotFoundError, match="missing does not exist$"):
        FolderSource(str(tmp_path / "missing")).clips()
    with pytest.raises(FileNotFoundError, match=r"tone.wav is a file, not a folder; to use one file, list it in a man"):
        FolderSource(str(tmp_path / "a" / "tone.wav")).clips()
    (tmp_path / "list.CSV").write_text("path\na/tone.wav\n")  # (it told to list the manifest in a manifest)
    with pytest.raises(FileNotFoundError, match=r"list.CSV is a file, not a folder; a manifest is read with data=man"):
        FolderSource(str(tmp_path / "list.CSV")).clips()
    for name in (
        "book.m4b",
        "track.mka",
        "film.ac3",
        "old.mp2",
        "disc.vob",
        "clip.ogv",
    ):  # were passed over without a word
        (tmp_path / name).write_bytes(b"")
    assert {"book.m4b", "track.mka", "film.ac3", "old.mp2", "disc.vob", "clip.ogv"} <= {
        c.key for c in FolderSource(str(tmp_path)).clips()
    }


def test_folder_source_follows_linked_folders_once_and_lists_broken_links(media, tmp_path):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    (data / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (data / "a.wav", data / "sub" / "b.wav", elsewhere / "c.wav"):
        shutil.copy(media["wav16k"], path)
    (data / "linked").symlink_to(elsewhere)  # a folder outside the data folder: followed
    (elsewhere / "loop").symlink_to(elsewhere)  # a cycle: walked once
    (elsewhere / "back").symlink_to(data)  # the data folder again: walked once
    (data / "alias").symlink_to(data / "sub")  # a folder inside: listed under its own path
    (data / "broken.ogg").symlink_to("/nonexistent/x.ogg")  # listed, for the index to report
    (data / "same.wav").symlink_to(data / "a.wav")  # a file inside: listed under its own path
    shutil.copy(media["wav16k"], tmp_path / "d.wav")
    (data / "outside.wav").symlink_to(tmp_path / "d.wav")  # a file outside: listed
    (data / "to_c.wav").symlink_to(elsewhere / "c.wav")  # a later name of linked/c.wav: left out
    keys = [c.key for c in FolderSource(str(data)).clips()]
    assert keys == ["a.wav", "broken.ogg", "linked/c.wav", "outside.wav", "sub/b.wav"]


@pytest.mark.parametrize(
    "source", [FolderSource(""), ClassFolderSource(" "), LibriSpeechSource(""), ManifestSource("")]
)
def test_an_empty_root_is_refused_not_read_as_the_current_folder(source, tmp_path, monkeypatch):
    """``data.root=$DATA`` with DATA unset listed every file under the folder the command ran in."""
    (tmp_path / "a.wav").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    fix = "a CSV or JSONL file" if isinstance(source, ManifestSource) else r"or \. for the current folder"
    with pytest.raises(
        FileNotFoundError, match=rf"is empty \(data\.root=''; an unset shell variable\?\): name it, {fix}"
    ):
        source.clips()


def test_class_folders_give_sorted_labels(media, tmp_path):
    for name in ("walk", "run", "jump"):
        (tmp_path / name).mkdir()
        shutil.copy(media["video_only"], tmp_path / name / f"{name}1.mp4")
    shutil.copy(media["video_only"], tmp_path / "run" / "run2.avi")
    (tmp_path / "walk" / "runs").symlink_to(tmp_path / "run")  # another class: its files keep their label
    (tmp_path / "jump" / "w.mp4").symlink_to(tmp_path / "walk" / "walk1.mp4")
    (tmp_path / "sprint").symlink_to(tmp_path / "run")  # a class that is a link to another: a second name each
    source = ClassFolderSource(str(tmp_path))
    assert source.classes() == ["jump", "run", "sprint", "walk"]
    assert [(c.key, c.label) for c in source.clips()] == [
        ("jump/jump1.mp4", 0),
        ("run/run1.mp4", 1),
        ("run/run2.avi", 1),
        ("walk/walk1.mp4", 3),
    ]


def test_hidden_files_and_folders_and_files_in_no_class_are_left_out_and_said(media, tmp_path, caplog):
    """A Mac's ``._a.wav`` beside each file was listed and failed its probe; Jupyter's
    ``.ipynb_checkpoints`` became the first class, shifting every label by one."""
    for name in ("cat", "dog", ".ipynb_checkpoints", "cat/.cache"):
        (tmp_path / name).mkdir()
    loose = ("loose.wav", "._loose.wav")  # (beside the class folders: in none; the hidden one not counted)
    for name in ("cat/a.wav", "cat/._a.wav", "dog/b.wav", ".ipynb_checkpoints/c.wav", "cat/.cache/d.wav", *loose):
        shutil.copy(media["wav16k"], tmp_path / name)
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        source = ClassFolderSource(str(tmp_path))
        assert source.classes() == ["cat", "dog"]
        assert [(c.key, c.label) for c in source.clips()] == [("cat/a.wav", 0), ("dog/b.wav", 1)]
        assert [c.key for c in FolderSource(str(tmp_path / "cat")).clips()] == ["a.wav"]
    said = [
        r.getMessage() for r in caplog.records if "hidden name" in r.getMessage() or "hidden folder" in r.getMessage()
    ]
    assert f"{tmp_path}: 1 media file(s) in no class folder left out (root/<class>/<file>): loose.wav" in caplog.text
    cat = tmp_path / "cat"
    walked = f"{cat}: left out 2 hidden name(s), starting with '.': {cat / '._a.wav'}, {cat / '.cache'}/"
    assert said == [walked, f"{tmp_path}: hidden folder(s) are no class and left out: .ipynb_checkpoints/", walked]


def test_class_folders_of_links_to_files_beside_them_keep_each_file_once(media, tmp_path, caplog):
    for name in ("a", "b", "c"):
        shutil.copy(media["wav16k"], tmp_path / f"{name}.wav")
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    (tmp_path / "cat" / "a.wav").symlink_to(tmp_path / "a.wav")
    (tmp_path / "dog" / "b.wav").symlink_to(tmp_path / "b.wav")
    (tmp_path / "dog" / "a.wav").symlink_to(tmp_path / "a.wav")  # in two classes: the first keeps it
    with caplog.at_level(logging.INFO, logger="ttt_mm.data"):
        clips = ClassFolderSource(str(tmp_path)).clips()
    assert [(c.key, c.label) for c in clips] == [("cat/a.wav", 0), ("dog/b.wav", 1)]
    (left,) = [r.getMessage() for r in caplog.records if "file name(s) left out" in r.getMessage()]
    assert left == f"1 file name(s) left out, another name of a file listed: {tmp_path / 'dog' / 'a.wav'} (as " + (
        f"{tmp_path / 'cat' / 'a.wav'})"
    )  # (it was only counted)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [  # not only "a name left out"
        f"{tmp_path}: 1 media file(s) in no class folder left out (root/<class>/<file>): c.wav",  # (a, b: linked)
        f"1 file(s) sit under more than one class folder; each keeps one label, e.g. {tmp_path / 'a.wav'} "
        "(in cat, dog) is 'cat'",
    ]


def test_librispeech_tree(tmp_path):
    for speaker, chapter, utt in [(19, 198, 1), (19, 198, 2), (103, 1240, 0), (7, 11, 3)]:
        folder = tmp_path / str(speaker) / str(chapter)
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{speaker}-{chapter}-{utt:04d}.flac", np.zeros(1600, np.float32), 16000)
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("HELLO\n")
    (tmp_path / "stray.flac").write_bytes(b"")  # not in the layout: ignored
    clips = LibriSpeechSource(str(tmp_path)).clips()
    assert sorted((c.key, c.label) for c in clips) == [
        ("103/1240/103-1240-0000.flac", 2),
        ("19/198/19-198-0001.flac", 1),
        ("19/198/19-198-0002.flac", 1),
        ("7/11/7-11-0003.flac", 0),
    ]
    (tmp_path / "other").mkdir()
    sf.write(tmp_path / "other" / "note.flac", np.zeros(160, np.float32), 16000)
    with pytest.raises(FileNotFoundError, match="no LibriSpeech files"):
        LibriSpeechSource(str(tmp_path / "other")).clips()


def test_csv_and_jsonl_manifests(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "list.csv").write_text(
        "path,start,end,label,split\na.wav,1.5,3,dog,train\n/abs/b.mp4,,,cat,\nc.flac,0,,,test\n"
    )
    clips = ManifestSource(str(tmp_path / "clips" / "list.csv")).clips()
    assert clips[0] == ClipInfo(str(tmp_path / "clips" / "a.wav"), 1.5, 3.0, 1, "train", "a.wav")
    assert (clips[1].media, clips[1].start, clips[1].end, clips[1].label, clips[1].split) == (
        "/abs/b.mp4",
        0.0,
        None,
        0,
        None,
    )
    assert (clips[2].label, clips[2].split) == (-1, "test")
    rows = [{"path": "x.mp4", "label": 3, "duration": 2.0}, {"path": "bad.mp4", "error": "empty file (0 bytes)"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    clips = ManifestSource(str(tmp_path / "m.jsonl")).clips()  # an error row too: the index decides again
    assert [(c.media, c.label) for c in clips] == [(str(tmp_path / "x.mp4"), 3), (str(tmp_path / "bad.mp4"), -1)]
    for first, second in (
        (rows[1], {"path": "bad.mp4", "label": "cat"}),
        ({"path": "bad.mp4", "label": "cat"}, rows[1]),
    ):
        (tmp_path / "merged.jsonl").write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
        clips = ManifestSource(str(tmp_path / "merged.jsonl")).clips()  # the probe's record gives way, in any order
        assert [(c.media, c.label) for c in clips] == [(str(tmp_path / "bad.mp4"), 0)]
    odd = {"path": "a\u2028b\x1c.wav", "label": 1}  # (characters str.splitlines breaks at; JSON holds them as they are)
    (tmp_path / "odd.jsonl").write_bytes((json.dumps(odd, ensure_ascii=False) + "\r\n\r\n").encode())
    assert [c.media for c in ManifestSource(str(tmp_path / "odd.jsonl")).clips()] == [str(tmp_path / odd["path"])]
    (tmp_path / "broken.csv").write_text("file,label\na.wav,1\n")
    with pytest.raises(ValueError, match="broken.csv, line 1: no 'path' column"):
        ManifestSource(str(tmp_path / "broken.csv")).clips()


def test_manifest_headers_and_values_are_stripped_and_a_byte_order_mark_is_not_a_column(tmp_path, caplog):
    manifest = tmp_path / "excel.csv"
    manifest.write_bytes("path, start, end , label\n a.wav , 1.5, 3 , dog\n".encode("utf-8-sig"))
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.manifest"):
        (clip,) = ManifestSource(str(manifest)).clips()
    assert (clip.media, clip.start, clip.end, clip.key) == (str(tmp_path / "a.wav"), 1.5, 3.0, "a.wav")
    assert ManifestSource(str(manifest)).classes() == ["dog"] and not caplog.records


def test_an_unknown_manifest_column_is_named_once_with_the_known_ones(tmp_path, caplog):
    manifest = tmp_path / "typo.csv"
    manifest.write_text("path,lable,speaker\na.wav,dog,x\nb.wav,cat,y\n")
    source = ManifestSource(str(manifest))
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.manifest"):
        source.clips(), source.classes(), source.rows()
    assert [r.getMessage() for r in caplog.records] == [
        f"{manifest}: unknown columns 'lable', 'speaker' ignored "
        "(the columns read: path, start, end, label, split, group)"
    ]


def test_repeated_manifest_rows_are_left_out_with_one_line_and_contradicting_ones_are_an_error(tmp_path, caplog):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,start,end,label\na.wav,0,2,dog\nb.wav,,,cat\n./a.wav,0.0,2,dog\nb.wav,0,,cat\na.wav,2,,dog\n"
    )
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.manifest"):
        clips = ManifestSource(str(manifest)).clips()
    assert [(c.key, c.start, c.end) for c in clips] == [("a.wav", 0.0, 2.0), ("b.wav", 0.0, None), ("a.wav", 2.0, None)]
    assert [r.getMessage() for r in caplog.records] == [
        f"{manifest}: left out 2 repeated rows (the path, start and end of an earlier row; the first: line 4, "
        "./a.wav, repeats line 2)"
    ]
    nan_group = tmp_path / "m.jsonl"  # (a JSON NaN, pandas' missing value, is no group: as a repeat, no conflict)
    nan_group.write_text('{"path": "a.wav", "group": NaN}\n{"path": "a.wav"}\n')
    assert [c.key for c in ManifestSource(str(nan_group)).clips()] == ["a.wav"]
    manifest.write_text("path,start,end,label\na.wav,0,2,dog\na.wav,0,2,cat\n")
    with pytest.raises(
        ValueError, match=r"m.csv, lines 2 and 3: the same clip \(a.wav from 0 to 2\) with different labels"
    ):
        ManifestSource(str(manifest)).clips()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.jsonl",
            '{"path": "a.wav"}\n\n{"path": "b.wav" "end": 2}\n',
            r"bad.jsonl, line 3: not valid JSON \(Expecting ',' delimiter, column 18\)",
        ),
        ("word.csv", "path,start\na.wav,1\nb.wav,abc\n", r"word.csv, line 3: start 'abc' is not a time in seconds"),
        ("order.csv", "path,start,end\na.ogg,3,1\n", r"order.csv, line 2: end 1 is before start 3"),
        ("empty.jsonl", '{"path": "a.ogg", "start": 2, "end": 2}\n', r"empty.jsonl, line 1: end 2 is at start 2"),
        ("comma.csv", "path,start\nclip, take 2.wav,1\n", r"comma.csv, line 2: 3 values under 2 columns"),
        ("true.jsonl", '{"path": "a.ogg", "start": true}\n', r"true.jsonl, line 1: start True is not a time"),
        ("twice.csv", "path,start,end,start\na.ogg,1,5,100\n", r"twice.csv, line 1: column 'start' appears twice"),
        (
            "twice.jsonl",
            '{"path": "a.ogg"}\n{"path": "b.ogg", "path ": "c.ogg"}\n',
            r"line 2: key 'path' appears twice",
        ),
    ],
)
def test_a_manifest_row_that_cannot_be_used_is_an_error_naming_its_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        ManifestSource(str(tmp_path / name)).clips()


def test_relative_paths_written_from_the_current_folder_are_pointed_out(tmp_path, monkeypatch, caplog):
    """They were read from the manifest's folder (data/data/clips/a.wav) and the run stopped with "3 x
    file not found", nothing saying where relative paths start."""
    (tmp_path / "data" / "clips").mkdir(parents=True)
    for name in ("a", "b"):
        (tmp_path / "data" / "clips" / f"{name}.wav").write_bytes(b"")
    (tmp_path / "data" / "m.csv").write_text("path\ndata/clips/a.wav\ndata/clips/b.wav\nclips/a.wav\n")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.manifest"):
        ManifestSource("data/m.csv").clips()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "data/m.csv: 2 of 3 relative path(s) looked at name no file from the manifest's folder (data), where "
        "relative paths start, but do from the current folder (e.g. data/clips/a.wav): write them from the "
        "manifest's folder, or absolute"
    )


def test_a_row_without_a_split_takes_the_one_its_files_other_rows_name(tmp_path, caplog):
    """It was drawn by the file's key: a span could be trained on while another of the file was validated."""
    rows = ["a.ogg,0,10,", "a.ogg,10,20,val", "b.ogg,0,10,", "c.ogg,0,10,train", "c.ogg,10,20,val", "c.ogg,20,30,"]
    (tmp_path / "m.csv").write_text("path,start,end,split\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.manifest"):
        clips = ManifestSource(str(tmp_path / "m.csv")).clips()
    assert [c.split for c in clips] == ["val", "val", None, "train", "val", None]  # c: several named, left to the hash
    (line,) = [r.getMessage() for r in caplog.records if "rows of several splits" in r.getMessage()]
    assert "1 file(s) or group(s)" in line and line.endswith("c.ogg): give those rows a split")


def test_spans_of_one_file_that_overlap_in_different_splits_are_warned_of(tmp_path, caplog):
    """A whole-file row in train and a span of the same file in test passed without a word: the test
    split was scored on audio the model trained on. Spans that only meet, or share a split, are fine."""
    rows = ["a.ogg,,,train", "a.ogg,0,30,val", "a.ogg,10,40,test", "b.ogg,0,10,train", "b.ogg,10,,val"]
    rows += ["c.ogg,0,20,train", "c.ogg,5,15,train", "d.ogg,0,10,val", "d.ogg,5,8,"]  # (d: its second row inherits)
    (tmp_path / "m.csv").write_text("path,start,end,split\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.manifest"):
        ManifestSource(str(tmp_path / "m.csv")).clips()
    (line,) = [r.getMessage() for r in caplog.records if "overlap" in r.getMessage()]
    assert f"1 file(s) have spans in different splits that overlap (e.g. {tmp_path / 'a.ogg'}: 0-30 s in val" in line
    assert "and 0-end s in train): their common part is in both splits (trained on and held out, or" in line
    caplog.clear()
    (tmp_path / "m.csv").write_text("path,start,end,split\n" + "\n".join(rows[3:]) + "\n")
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.manifest"):
        ManifestSource(str(tmp_path / "m.csv")).clips()
    assert not caplog.records


def test_a_row_without_a_split_takes_the_one_its_groups_other_rows_name(tmp_path, caplog):
    """A conversation with one row named test had its other rows hashed by the group's name: half of it
    trained on, half tested. Groups join through a file they share (talk1 and talk2 through c.ogg)."""
    rows = ["a.ogg,0,,talk0,test", "b.ogg,0,,talk0,", "c.ogg,0,5,talk1,", "c.ogg,5,,talk2,val", "d.ogg,0,,talk2,"]
    rows += ["e.ogg,0,,talk1,", "f.ogg,0,,talk3,train", "g.ogg,0,,talk3,val", "h.ogg,0,,talk3,", "i.ogg,0,,,"]
    (tmp_path / "m.csv").write_text("path,start,end,group,split\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data.manifest"):
        clips = ManifestSource(str(tmp_path / "m.csv")).clips()
    splits = [c.split for c in clips]
    assert splits == ["test", "test", "val", "val", "val", "val", "train", "val", None, None]  # (talk3: two named)
    (line,) = [r.getMessage() for r in caplog.records if "rows of several splits" in r.getMessage()]
    assert "1 file(s) or group(s)" in line and f"e.g. {tmp_path / 'h.ogg'}" in line
    (parted,) = [r.getMessage() for r in caplog.records if "in several splits" in r.getMessage()]
    assert "puts 1 group(s) in several splits (e.g. group talk3: train, val): such a group is partly" in parted
    lines = ['{"path": "a.ogg", "group": NaN, "split": "test"}', '{"path": "b.ogg", "group": NaN}']  # (pandas)
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    assert [(c.group, c.split) for c in ManifestSource(str(tmp_path / "m.jsonl")).clips()] == [
        (None, "test"),
        (None, None),
    ]


def test_a_folder_given_as_a_manifest_says_which_configs_read_folders(tmp_path):
    with pytest.raises(ValueError, match="is a folder; data=manifest needs a CSV or JSONL file .*data=audio_folder"):
        ManifestSource(str(tmp_path)).clips()


def test_a_missing_relative_manifest_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """An experiment's manifest path is relative to the current folder: run from another one, it was
    only "not found"."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"relative path: from the current folder, {re.escape(str(tmp_path))}"):
        ManifestSource("data/music/manifest.csv").clips()
    with pytest.raises(FileNotFoundError) as absolute:
        ManifestSource(str(tmp_path / "none.csv")).clips()
    assert str(absolute.value) == f"manifest {tmp_path / 'none.csv'} not found"


def test_a_written_manifest_reads_back_with_its_groups_and_class_names(tmp_path):
    rows = [
        {"path": "a.ogg", "label": "small_fish", "split": "train", "group": "airplane"},
        {"path": "/abs/b.ogg", "start": 1.0, "end": 2.5, "label": "big_fish", "split": "val", "group": "share/jokes"},
        {"path": "c.ogg"},
    ]
    write_manifest(tmp_path / "m" / "list.csv", rows)
    assert (tmp_path / "m" / "list.csv").read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["list.csv"]  # no temporary left behind
    source = ManifestSource(str(tmp_path / "m" / "list.csv"))
    assert source.classes() == ["big_fish", "small_fish"]
    clips = source.clips()
    assert [(c.label, c.split, c.group) for c in clips] == [
        (1, "train", "airplane"),
        (0, "val", "share/jokes"),
        (-1, None, None),
    ]
    assert (clips[1].media, clips[1].start, clips[1].end) == ("/abs/b.ogg", 1.0, 2.5)


def test_manifest_class_names_of_integer_labels_and_mixed_labels(tmp_path):
    (tmp_path / "n.jsonl").write_text('{"path": "a.wav", "label": 2}\n{"path": "b.wav", "label": -1}\n')
    source = ManifestSource(str(tmp_path / "n.jsonl"))
    assert source.classes() == ["0", "1", "2"] and [c.label for c in source.clips()] == [2, -1]
    (tmp_path / "padded.csv").write_text("path,label\na.wav,01\nb.wav,002\nc.wav,2\na.wav,1\n")  # zeros; a.wav repeated
    padded = ManifestSource(str(tmp_path / "padded.csv"))
    assert padded.classes() == ["0", "1", "2"] and [c.label for c in padded.clips()] == [1, 2, 2]
    (tmp_path / "mixed.csv").write_text("path,label\na.wav,3\nb.wav,dog\n")
    with pytest.raises(ValueError, match="mixes numbers and names"):
        ManifestSource(str(tmp_path / "mixed.csv")).clips()


def test_manifest_labels_written_as_booleans_or_as_whole_floats(tmp_path):
    """JSON booleans name two classes; 2.0 and "2.0" are class 2 (pandas writes an integer column with
    gaps as floats), and -1.0 is unlabelled like -1, as is NaN (a missing value as JSON writes it)."""
    (tmp_path / "b.jsonl").write_text('{"path": "a.wav", "label": true}\n{"path": "b.wav", "label": false}\n')
    booleans = ManifestSource(str(tmp_path / "b.jsonl"))
    assert booleans.classes() == ["false", "true"] and [c.label for c in booleans.clips()] == [1, 0]
    (tmp_path / "f.jsonl").write_text(
        '{"path": "a.wav", "label": 1}\n{"path": "b.wav", "label": 2.0}\n{"path": "c.wav", "label": -1.0}\n'
    )
    floats = ManifestSource(str(tmp_path / "f.jsonl"))
    assert floats.classes() == ["0", "1", "2"] and [c.label for c in floats.clips()] == [1, 2, -1]
    (tmp_path / "n.jsonl").write_text('{"path": "a.wav", "label": 1.0}\n{"path": "b.wav", "label": NaN}\n')
    missing = ManifestSource(str(tmp_path / "n.jsonl"))
    assert missing.classes() == ["0", "1"] and [c.label for c in missing.clips()] == [1, -1]
    (tmp_path / "f.csv").write_text("path,label\na.wav,1.0\nb.wav,03\nc.wav,0.5\n")
    with pytest.raises(ValueError, match="mixes numbers and names"):  # 0.5 is no class number
        ManifestSource(str(tmp_path / "f.csv")).clips()


@pytest.mark.parametrize(
    ("header", "says"),
    [("Path,Label", "the columns read: 'Path', 'Label'; names are lower case"), ("path;label", "separated by commas")],
)
def test_a_manifest_header_without_path_says_what_it_read(tmp_path, header, says):
    (tmp_path / "m.csv").write_text(f"{header}\na.wav,x\n".replace(",x", header[4] + "x"))
    with pytest.raises(ValueError, match=f"line 1: no 'path' column \\(.*{says}"):
        ManifestSource(str(tmp_path / "m.csv")).clips()
    (tmp_path / "m.csv").write_text("a.wav,1,5\n")  # one row, no header: it was "no media files"
    with pytest.raises(ValueError, match="line 1: no 'path' column \\(the columns read: 'a.wav', '1', '5'"):
        ManifestSource(str(tmp_path / "m.csv")).clips()
    (tmp_path / "m.csv").write_text("\n \nPath\na.wav\n")  # blank lines first: the header is line 3
    with pytest.raises(ValueError, match="m.csv, line 3: no 'path' column"):
        ManifestSource(str(tmp_path / "m.csv")).clips()


def test_blank_lines_before_a_manifests_header_are_passed_over(tmp_path):
    """They were read as an empty header: "line 2: 2 values under 0 columns"."""
    (tmp_path / "m.csv").write_text("\r\n\npath,label\na.wav,x\n")
    assert [(c.name, c.label) for c in ManifestSource(str(tmp_path / "m.csv")).clips()] == [
        (str(tmp_path / "a.wav"), 0)
    ]


def test_a_linked_manifest_reads_relative_paths_from_where_it_lives(tmp_path):
    (tmp_path / "set" / "clips").mkdir(parents=True)
    (tmp_path / "set" / "m.csv").write_text("path\nclips/a.wav\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "m.csv").symlink_to(tmp_path / "set" / "m.csv")
    (clip,) = ManifestSource(str(tmp_path / "data" / "m.csv")).clips()
    assert clip.media == str(tmp_path / "set" / "clips" / "a.wav") and clip.key == "clips/a.wav"
    (tmp_path / "scratch").symlink_to(tmp_path / "set")  # a linked folder above it is kept as spelled
    (clip,) = ManifestSource(str(tmp_path / "scratch" / "m.csv")).clips()
    assert clip.media == str(tmp_path / "scratch" / "clips" / "a.wav")  # (the index keys files by this name)
    (tmp_path / "data" / "rel.csv").symlink_to(os.path.join("..", "set", "m.csv"))  # a relative link: no ".." kept
    (clip,) = ManifestSource(str(tmp_path / "data" / "rel.csv")).clips()
    assert clip.media == str(tmp_path / "set" / "clips" / "a.wav")


def test_spans_of_one_file_share_a_split_however_the_manifest_spells_its_path(tmp_path):
    spellings = ["a.wav", "./a.wav", "sub/../a.wav", "a.wav"]
    rows = "".join(f"{p},{i},{i + 1}\n" for i, p in enumerate(spellings))
    (tmp_path / "m.csv").write_text("path,start,end\n" + rows + f"{tmp_path / 'b.wav'},0,1\nsub/../../c.wav,0,1\n")
    clips = ManifestSource(str(tmp_path / "m.csv")).clips()
    assert {c.key for c in clips[:4]} == {"a.wav"}  # the key the split hashes
    assert [c.key for c in clips[4:]] == [str(tmp_path / "b.wav"), os.path.join("..", "c.wav")]


def test_spans_of_a_file_spelled_relative_and_absolute_share_one_key(tmp_path):
    """Else each spelling hashes apart, and one file's spans may straddle train and val."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link.wav").symlink_to(tmp_path / "real" / "a.wav")
    rows = [
        "real/a.wav,0,1",
        f"{tmp_path / 'real' / 'a.wav'},1,2",
        "link.wav,2,3",
        "b.wav,0,1",
        f"{tmp_path / 'b.wav'},1,2",
    ]
    (tmp_path / "m.csv").write_text("path,start,end\n" + "\n".join(rows) + "\n")
    clips = ManifestSource(str(tmp_path / "m.csv")).clips()
    assert [c.key for c in clips] == ["real/a.wav"] * 3 + ["b.wav"] * 2
    assert [c.start for c in clips] == [0, 1, 2, 0, 1]


def test_a_repeated_row_is_found_however_the_manifest_itself_is_named(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "two.csv").write_text(f"path\n{tmp_path / 'm' / 'a.wav'}\na.wav\n")
    monkeypatch.chdir(tmp_path)
    assert len(ManifestSource("m/two.csv").clips()) == len(ManifestSource(str(tmp_path / "m" / "two.csv")).clips()) == 1


def test_a_file_listed_by_its_link_and_by_its_target_is_one_file(tmp_path):
    """As in class folders: two names of one file would otherwise be read twice, in two folds or splits."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.wav").write_bytes(b"")
    (tmp_path / "link.wav").symlink_to(tmp_path / "real" / "a.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nreal/a.wav,dog\nlink.wav,dog\n")
    assert [c.key for c in ManifestSource(str(manifest)).clips()] == ["real/a.wav"]
    manifest.write_text("path,label\nreal/a.wav,dog\nlink.wav,cat\n")
    with pytest.raises(ValueError, match="the same clip .* with different labels"):
        ManifestSource(str(manifest)).clips()


def test_split_hash_is_deterministic_and_per_file():
    clips = [ClipInfo(f"/data/v{i}.mp4", key=f"v{i}.mp4") for i in range(2000)]
    splits = [c.split_of(0.1, 0.05) for c in clips]
    assert splits == [ClipInfo(f"/elsewhere/v{i}.mp4", key=f"v{i}.mp4").split_of(0.1, 0.05) for i in range(2000)]
    assert splits.count("val") == pytest.approx(200, abs=45) and splits.count("test") == pytest.approx(100, abs=35)
    segments = {ClipInfo("/data/long.mp4", start=s, key="long.mp4").split_of(0.3, 0.3) for s in range(20)}
    assert len(segments) == 1  # every segment of one file lands in the same split
    assert ClipInfo("/x.mp4", split="val").split_of(0.0, 0.0) == "val"


def test_a_name_that_is_not_utf8_has_a_split_and_an_index_file():
    """The split is drawn from the name's bytes as the file system holds them (not a re-encoding)."""
    raw = b"/data/caf\xe9/a.wav"
    name = os.fsdecode(raw)  # undecodable bytes, as Python holds them
    digest = int.from_bytes(hashlib.sha1(raw).digest()[:8], "big") / 2**64
    assert ClipInfo(name).split_hash() == digest
    assert ClipInfo(name).split_of(0.5, 0.0) == ("val" if digest < 0.5 else "train")
    assert cache_file([name]).name.startswith("caf_")


def test_segment_names_tell_every_span_apart():
    def segment(start, end=None):
        return ClipInfo("/data/long.wav", start=start, end=end).segment

    assert segment(0.0) == "/data/long.wav"
    assert [segment(30.0, 60.0), segment(0.5), segment(3600.125, 3601)] == [
        "/data/long.wav@30-60",
        "/data/long.wav@0.5-end",
        "/data/long.wav@3600.125-3601",
    ]
    assert segment(12345.61, 12400) != segment(12345.64, 12400)  # 6 significant digits named both 12345.6


def test_synthetic_source_lists_without_generating():
    clips = SyntheticSource(num_clips=5, duration=30.0, seed=3).clips()
    assert [str(c.media) for c in clips] == [f"synthetic/seed=3/index={i}" for i in range(5)]
    assert all(c.end == 30.0 and 0 <= c.label <= 2 for c in clips)


def test_a_quoted_manifest_value_may_hold_a_line_break_and_a_split_must_be_known(tmp_path):
    (tmp_path / "list.csv").write_text('path,split\n"a\nb.wav",train\n')
    assert [c.key for c in ManifestSource(str(tmp_path / "list.csv")).clips()] == ["a\nb.wav"]
    (tmp_path / "bad.csv").write_text("path,split\na.wav,train\nb.wav,validation\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 3: split 'validation' is not one of train, val, test"):
        ManifestSource(str(tmp_path / "bad.csv")).clips()


def test_which_name_of_a_file_is_kept_does_not_depend_on_how_the_root_is_reached(media, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(media["wav16k"], data / "z.wav")
    (data / "a.wav").symlink_to(data / "z.wav")  # sorts first, but is a link
    (tmp_path / "alias").symlink_to(data)  # a root reached through a link (/data -> /mnt/...)
    for root in (data, tmp_path / "alias"):
        assert [c.key for c in FolderSource(str(root)).clips()] == ["z.wav"]


def test_a_manifest_or_class_folder_root_with_an_unexpanded_tilde_says_so(tmp_path, monkeypatch):
    from ttt_mm.data import ManifestSource
    from ttt_mm.data.sources import ClassFolderSource

    monkeypatch.setenv("HOME", str(tmp_path))
    for source in (ManifestSource("~/m.csv"), ClassFolderSource("~/classes")):
        with pytest.raises(
            FileNotFoundError,
            match=f"does not exist \\(a ~ reaches a command as it is, not as your home folder: write {tmp_path}/",
        ):
            source.clips()
