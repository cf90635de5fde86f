"""The linear probe: folds that keep groups whole, a classifier that separates what is separable and
not noise, and the command on generated labelled media (tones, noise, video, bad files)."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from embedhelpers import AUDIO, VIDEO, save_checkpoint
from hydra import compose, initialize_config_dir
from mediafiles import write_video, write_wav

from ttt_mm.data import ClipInfo, MediaError, ReadSpec, decode, iter_windows
from ttt_mm.embed import Embedder
from ttt_mm.linear_probe import classifier
from ttt_mm.linear_probe.classifier import Features, cross_validate, macro_f1, majority_class
from ttt_mm.linear_probe.features import EmbeddingFolder, Extractors, LogMelStats, ModelFeatures, gather
from ttt_mm.linear_probe.folds import assign_folds, drop_one_group, fold_groups, warn_of_classes_some_folds_miss
from ttt_mm.tasks import embed as embed_task
from ttt_mm.tasks import linear_probe
from ttt_mm.tasks.common import CONF_DIR, ConfigError, Interrupted
from ttt_mm.tasks.linear_probe import each_class_in_turn, report, run
from ttt_mm.tokenizers import AudioTokenizer

RATE = 16000


# ------------------------------------------------------------------------------------------ folds


def test_grouped_folds_never_put_a_group_in_two_folds_and_keep_class_shares():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 600)
    labels = (rng.random(600) < 0.3).astype(int)  # 30% / 70%
    folds = assign_folds(labels, groups, 5, seed=1)
    for k in range(5):
        test, train = set(groups[folds == k]), set(groups[folds != k])
        assert test and not test & train
    shares = [labels[folds == k].mean() for k in range(5)]
    assert max(shares) - min(shares) < 0.1
    assert np.array_equal(folds, assign_folds(labels, groups, 5, seed=1))  # seeded


def test_a_class_in_fewer_groups_than_folds_is_said_to_be_missing_from_some_test_folds(caplog):
    """Its folds scored without it, their macro-F1 averaged over the other classes, without a word."""
    y = np.array([0] * 40 + [1] * 6)
    groups = np.concatenate([np.arange(40), np.repeat([40, 41, 42], 2)])  # (class 1: 3 groups)
    names = ["speech", "other"]
    fold_of = assign_folds(y, groups, 5)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.linear_probe.folds"):
        warn_of_classes_some_folds_miss(fold_of, y, groups, names)
    assert caplog.messages == [
        "class 'other' (3 groups) is in 3 of the 5 test folds: a test fold without a class "
        "leaves it out of its macro-F1, or scores it 0 if predicted "
        "(folds=3 or fewer, or more groups, tests every class in every fold)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.linear_probe.folds"):
        warn_of_classes_some_folds_miss(assign_folds(y, groups, 3), y, groups, names)
    assert caplog.messages == []


def test_a_class_of_fewer_clips_than_folds_is_said_to_be_missing_too_when_no_clips_share_a_group(
    ckpts, tones, tmp_path, caplog
):
    """Every clip its own group (one file each, no group column): a class of 2 clips in 3 folds went
    untested in one fold without a word."""
    root = tmp_path / "media"
    for kind, count in (("low", 4), ("high", 2)):
        (root / kind).mkdir(parents=True)
        for i in range(count):
            shutil.copy(tones / kind / f"{i}.wav", root / kind)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.linear_probe.folds"):
        run(_cfg(ckpt=ckpts["audio"], input=root, output=tmp_path / "out", folds=3, min_clips=2, baselines="[]"))
    assert caplog.messages == [
        "class 'high' (2 clips) is in 2 of the 3 test folds: a test fold without a class "
        "leaves it out of its macro-F1, or scores it 0 if predicted "
        "(folds=2 or fewer, or more clips, tests every class in every fold)"
    ]


def test_folds_without_groups_are_stratified_and_every_fold_gets_files():
    labels = np.repeat([0, 1, 2], [50, 30, 7])
    folds = assign_folds(labels, None, 5)
    counts = np.array([np.bincount(labels[folds == k], minlength=3) for k in range(5)])
    assert (counts.max(0) - counts.min(0) <= 1).all()  # every class spread as evenly as it can be
    tight = assign_folds(np.array([0, 0, 0, 1, 1, 1]), np.array([1, 1, 2, 3, 4, 5]), 5)
    assert sorted(set(tight)) == [0, 1, 2, 3, 4]  # as many groups as folds: one group each
    sizes = np.repeat(np.arange(5), [4, 1, 3, 4, 3])  # groups of uneven sizes: the last ones fill empty folds
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1])
    for seed in range(1000):
        assert len(set(assign_folds(labels, sizes, 5, seed))) == 5, seed
    with pytest.raises(ValueError, match="3 groups cannot fill 5 folds"):
        assign_folds(np.array([0, 1, 0, 1]), np.array(["a", "b", "c", "c"]), 5)


def test_groups_are_numbered_by_their_group_value_else_their_file_as_they_always_were():
    """The folds follow the groups' numbers: numbered otherwise, the same clips fell in other folds."""
    clips = [ClipInfo("/d/x.wav"), ClipInfo("/d/y.wav", group="0"), ClipInfo("/d/z.wav", group="1")]
    assert fold_groups(clips, group=True).tolist() == [2, 0, 1]  # ("0" < "1" < "file:/d/x.wav")


def test_a_class_in_one_group_only_through_a_dropped_class_is_kept():
    """C's two spans of one file join groups g and h, which put both of A's files in one group; C, in
    one group by its own clips, goes first, and A, then spread over g and h, stays."""
    clips = [
        ClipInfo("/d/f.wav", label=2, group="g", start=0, end=1),
        ClipInfo("/d/f.wav", label=2, group="h", start=1, end=2),
        ClipInfo("/d/a1.wav", label=0, group="g"),
        ClipInfo("/d/a2.wav", label=0, group="h"),
        ClipInfo("/d/b1.wav", label=1, group="p"),
        ClipInfo("/d/b2.wav", label=1, group="q"),
    ]
    kept, dropped = drop_one_group(clips, ["A", "B", "C"], group=True)
    assert sorted({c.label for c in kept}) == [0, 1] and list(dropped) == ["C"]
    _, alone = drop_one_group([ClipInfo("/d/x.wav", label=0), ClipInfo("/d/x.wav", label=1)], ["A", "B"], False)
    assert [(n, d["reason"].split(":")[0]) for n, d in alone.items()] == [
        ("A", "a single clip"),
        ("B", "a single clip"),
    ]


def test_groups_that_nothing_joins_are_numbered_as_before_so_their_folds_stay():
    """Folds of a fixed seed depend on the groups' numbering: by their sorted names, a group value or else
    the file, as before groups were joined."""
    rng = np.random.default_rng(0)
    clips = [
        ClipInfo(f"/d/{c}{i:02d}.wav", label=int(c == "y"), start=s, end=s + 1)
        for c in "xy"
        for i in range(12)
        for s in (0, 1)
    ]
    clips += [ClipInfo(f"/d/z{i}.wav", label=i % 2, group=f"take{i // 2}") for i in range(8)]
    rng.shuffle(clips)
    before = np.unique([c.group or f"file:{c.name}" for c in clips], return_inverse=True)[1]
    assert np.array_equal(fold_groups(clips, True), before)


def test_max_files_takes_each_class_in_turn_in_the_rows_order():
    sizes = {"a": 5, "b": 2, "c": 3}  # a class-folder listing: the rows sorted by class
    clips = [ClipInfo(f"{name}{i}.wav", label=label) for label, name in enumerate(sizes) for i in range(sizes[name])]
    names = [c.media for c in each_class_in_turn(clips, 7)]
    assert names == ["a0.wav", "a1.wav", "a2.wav", "b0.wav", "b1.wav", "c0.wav", "c1.wav"]
    assert [c.media for c in each_class_in_turn(clips, 2)] == ["a0.wav", "b0.wav"]
    assert each_class_in_turn(clips, 99) == clips


# ------------------------------------------------------------------------------------- classifier


def test_macro_f1_by_hand():
    y, pred = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: tp 0 -> 0
    assert macro_f1(y, pred) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert macro_f1(y, y) == 1.0
    assert macro_f1(np.array([0, 0]), np.array([0, 1])) == pytest.approx((2 / 3 + 0.0) / 2)  # a class only predicted


def test_l2_is_chosen_on_training_files_only_and_its_inner_folds_never_share_a_file(monkeypatch):
    """The test fold must not steer the probe: choose_l2 saw only the fold's training files, and its
    own validation files were never fitted on."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    features = Features.per_file(torch.from_numpy(rng.normal(size=(40, 6)) + y[:, None]).float())
    folds = assign_folds(y, None, 4)
    seen, fitted, fit = [], [], classifier.fit
    choose = classifier.choose_l2
    monkeypatch.setattr(classifier, "choose_l2", lambda feats, yy, *a: seen.append(len(yy)) or choose(feats, yy, *a))
    monkeypatch.setattr(classifier, "fit", lambda feats, *a, **k: fitted.append(feats) or fit(feats, *a, **k))
    cross_validate(features, y, folds, 2, grid=(0.1, 1.0))
    assert seen == [int((folds != k).sum()) for k in range(4)]
    inner = [f for f in fitted if len(f.x) < min(seen)]  # the inner fits, on three quarters of a fold's training files
    assert inner and all(len(f.x) <= 0.8 * max(seen) for f in inner)


def test_the_majority_baseline_is_the_training_folds_majority():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    folds = np.array([0, 0, 0, 1, 1, 1, 1, 1])  # fold 1 tests every 1: its training fold holds only 0s
    scores = majority_class(y, folds)
    assert scores[1].predictions.tolist() == [0] * 5 and scores[1].accuracy == 0.0


def test_each_file_weighs_the_same_however_many_rows_it_has():
    """Under a strong penalty the probe is its bias, the classes' weights: one file of class 0 with 50
    rows against three files of class 1 with one row each is 1 to 3, not 50 to 3."""
    x = torch.cat([torch.zeros(50, 1), torch.ones(3, 1)])
    owner = torch.cat([torch.zeros(50, dtype=torch.long), torch.tensor([1, 2, 3])])
    probe = classifier.fit(Features(x, owner), torch.tensor([0, 1, 1, 1]), 2, l2=1e4)
    assert probe.file_log_probs(Features(x, owner), 4).exp()[:, 1].tolist() == pytest.approx([0.75] * 4, abs=0.02)


def test_probe_separates_separable_vectors_and_is_at_chance_on_noise():
    gen = torch.Generator().manual_seed(0)
    y = np.repeat([0, 1, 2], 20)
    signal = 6 * torch.nn.functional.one_hot(torch.as_tensor(y), 8)  # class k: +6 on feature k
    x = torch.randn(60, 8, generator=gen)
    folds = assign_folds(y, None, 5)
    good = cross_validate(Features.per_file(x + signal), y, folds, 3)
    assert [s.accuracy for s in good] == [1.0] * 5 and [s.macro_f1 for s in good] == [1.0] * 5
    noise = cross_validate(Features.per_file(x), y, folds, 3)
    assert abs(np.mean([s.accuracy for s in noise]) - 1 / 3) < 0.2
    # rows: each file is 4 rows, one of which carries the signal; the file's mean log-probability decides
    rows = torch.randn(240, 8, generator=gen)
    rows[::4] += 8 / 6 * signal
    by_rows = cross_validate(Features(rows, torch.arange(60).repeat_interleave(4)), y, folds, 3)
    assert np.mean([s.accuracy for s in by_rows]) > 0.9 and all(len(s.predictions) == 12 for s in by_rows)


# ---------------------------------------------------------------------------------------- command


def _cfg(**overrides):
    base = {"progress": "false", "threads": 1, "device": "cpu"}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("linear_probe", overrides=[f"{k}={v}" for k, v in (base | overrides).items()])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    return {"audio": save_checkpoint(root / "audio.ckpt", AUDIO), "video": save_checkpoint(root / "video.ckpt", VIDEO)}


def _sound(kind: str, rng: np.random.Generator, seconds: float = 0.8) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    noise = 0.05 * rng.standard_normal(len(t))
    if kind == "noise":
        return (0.3 * rng.standard_normal(len(t))).astype(np.float32)
    hz = {"low": 250.0, "high": 1500.0}[kind] * (1 + 0.03 * rng.standard_normal())
    return (0.3 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    """``root/<low|high>/<i>.wav``: 10 tones per class, pitch apart by construction."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    for kind in ("low", "high"):
        (root / kind).mkdir()
        for i in range(10):
            write_wav(root / kind / f"{i}.wav", _sound(kind, rng), RATE)
    return root


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tones_of_two_pitches_are_told_apart_by_every_feature_set_on_the_same_folds(ckpts, tones, tmp_path, capsys):
    out = run(_cfg(ckpt=ckpts["audio"], input=tones, output=tmp_path / "out"))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(out["metrics"]))
    results = metrics["results"]
    assert list(results) == ["model", "logmel", "random_weights", "majority"]
    for name in ("model", "logmel", "random_weights"):
        assert results[name]["accuracy"]["mean"] == 1.0 and results[name]["macro_f1"]["mean"] == 1.0
    assert results["majority"]["accuracy"]["mean"] == pytest.approx(0.5, abs=0.1)
    assert metrics["classes"] == [{"name": "high", "files": 10}, {"name": "low", "files": 10}]
    assert metrics["settings"]["grouped_by"] is None and metrics["files"] == 20

    folds = _read_csv(tmp_path / "out" / "folds.csv")
    by_feature = {}
    for row in folds:
        by_feature.setdefault(row["features"], []).append((row["fold"], row["train_files"], row["test_files"]))
    assert len(by_feature) == 4 and len({tuple(v) for v in by_feature.values()}) == 1  # the same folds for all
    files = _read_csv(tmp_path / "out" / "files.csv")
    assert len(files) == 20 and Counter(f["fold"] for f in files) == {str(k): 4 for k in range(5)}
    assert all(f["predicted_model"] == f["label"] == f["predicted_logmel"] for f in files)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporaries left

    report(out)
    table = capsys.readouterr().out
    assert "log-mel mean+std" in table and "random weights" in table and "1.000 ± 0.000" in table


def _manifest(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_split_or_classes_that_leave_no_clips_say_what_the_manifest_has(ckpts, tones, tmp_path):
    """``split=test`` of a manifest without test rows said "no clips left ... after split=test and
    classes=None"."""
    wavs = sorted(tones.rglob("*.wav"))
    rows = [{"path": str(p), "label": p.parent.name, "split": "val" if i % 4 else "train"} for i, p in enumerate(wavs)]
    manifest = _manifest(tmp_path / "m.csv", rows)
    with pytest.raises(
        ConfigError,
        match=r"^split=test: input=\S+m.csv has no test rows; its split column names train \(5 rows\), "
        r"val \(15 rows\)$",
    ):
        run(_cfg(ckpt=ckpts["audio"], input=manifest, split="test"))
    rows[0]["split"] = ""  # (a row training hashes into a split: not the probe's)
    manifest = _manifest(tmp_path / "m.csv", rows)
    with pytest.raises(
        ConfigError,
        match=r"^split=test: .* train \(4 rows\), val \(15 rows\) \(1 rows name none: training hashes those, the "
        r"probe leaves them out\)$",
    ):
        run(_cfg(ckpt=ckpts["audio"], input=manifest, split="test"))
    three = [
        {"path": str(p), "label": "abc"[i % 3], "split": "val" if i % 3 == 2 else "train"} for i, p in enumerate(wavs)
    ]
    manifest = _manifest(tmp_path / "abc.csv", three)
    with pytest.raises(ConfigError, match=r"^no clips in input=\S+abc.csv after split=val and classes=\[a, ?b\]$"):
        run(_cfg(ckpt=ckpts["audio"], input=manifest, split="val", classes="[a,b]"))


def test_noise_with_random_labels_is_at_chance_and_grouped_folds_keep_groups_whole(ckpts, tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        write_wav(tmp_path / f"n{i}.wav", _sound("noise", rng), RATE)
        rows.append({"path": f"n{i}.wav", "label": ["a", "b"][i % 2], "group": f"g{i // 4}"})
    manifest = _manifest(tmp_path / "noise.csv", rows)
    metrics = run(_cfg(ckpt=ckpts["audio"], input=manifest, output=tmp_path / "out"))["metrics"]
    for name in ("model", "logmel", "random_weights"):
        assert abs(metrics["results"][name]["accuracy"]["mean"] - 0.5) < 0.25, name
    assert metrics["settings"]["grouped_by"] == "group" and metrics["settings"]["groups"] == 10
    files = _read_csv(tmp_path / "out" / "files.csv")
    folds_of_group = {}
    for f in files:
        folds_of_group.setdefault(f["group"], set()).add(f["fold"])
    assert len(folds_of_group) == 10 and all(len(v) == 1 for v in folds_of_group.values())


def test_bad_inputs_are_reported_and_left_out(ckpts, tones, tmp_path, caplog, monkeypatch):
    def probe_here(path, *args, **kwargs):
        raise AssertionError(f"{path} probed in the main process")

    monkeypatch.setattr(decode, "probe", probe_here)  # files are read as the index (worker processes) found them
    monkeypatch.setattr(decode.probing, "probe", probe_here)  # what a read without a backend would call
    rows = [{"path": str(p), "label": p.parent.name, "group": ""} for p in sorted(tones.rglob("*.wav"))]
    write_wav(tmp_path / "rare.wav", _sound("low", np.random.default_rng(2)), RATE)
    (tmp_path / "empty.wav").write_bytes(b"")
    rows += [
        {"path": "rare.wav", "label": "rare"},  # 1 clip < 5 folds: dropped with a warning
        {"path": "missing.wav", "label": "low"},
        {"path": "empty.wav", "label": "high"},
        {"path": "unlabelled.wav", "label": ""},
    ]
    manifest = _manifest(tmp_path / "list.csv", rows)
    metrics = run(_cfg(ckpt=ckpts["audio"], input=manifest, output=tmp_path / "out"))["metrics"]
    assert metrics["files"] == 20 and [c["name"] for c in metrics["classes"]] == ["high", "low"]
    rule = "5 (folds=5; min_clips unset)"  # (it said min_clips=5, a key nobody set)
    assert metrics["dropped_classes"] == [{"name": "rare", "files": 1, "reason": f"listed: fewer than {rule}"}]
    assert f"class 'rare' has 1 listed clip(s), fewer than {rule}" in caplog.text  # (so it is not read)
    skipped = {Path(s["path"]).name: s["reason"] for s in metrics["skipped"]}
    assert skipped == {"missing.wav": "file not found", "empty.wav": "empty file (0 bytes)"}
    assert metrics["left_out_before_reading"] == ["1 rows without a label"]
    assert metrics["results"]["model"]["accuracy"]["mean"] == 1.0

    few = run(_cfg(ckpt=ckpts["audio"], input=manifest, output=tmp_path / "few", min_clips=1, folds=2))["metrics"]
    assert [c["name"] for c in few["classes"]] == ["high", "low"]  # rare's one file: never in its fold's training
    assert few["dropped_classes"][0]["name"] == "rare" and "in one group" in few["dropped_classes"][0]["reason"]

    with pytest.raises(ConfigError, match=r"at least 20 readable clips \(folds=20; min_clips unset\), in more"):
        run(_cfg(ckpt=ckpts["audio"], input=manifest, output=tmp_path / "all", folds=20))  # (said min_clips=20)
    with pytest.raises(ConfigError, match="^classes=high names one class: a probe tells two or more apart$"):
        run(_cfg(ckpt=ckpts["audio"], input=manifest, classes="[high,high]"))  # (it said "fewer than 2 classes ...")
    (tmp_path / "nolabel.csv").write_text("path\nrare.wav\n")
    with pytest.raises(ConfigError, match=r"manifest .*nolabel.csv has no 'label' column"):
        run(_cfg(ckpt=ckpts["audio"], input=tmp_path / "nolabel.csv"))
    (tmp_path / "emptylabel.csv").write_text("path,label\nrare.wav,\nempty.wav,\n")
    with pytest.raises(ConfigError, match=r"emptylabel.csv: the 'label' column is empty"):
        run(_cfg(ckpt=ckpts["audio"], input=tmp_path / "emptylabel.csv"))
    with pytest.raises(ConfigError, match="3 groups cannot fill 5 folds"):
        grouped = [dict(r, group=f"g{i % 3}") for i, r in enumerate(rows[:20])]
        run(_cfg(ckpt=ckpts["audio"], input=_manifest(tmp_path / "g.csv", grouped), output=tmp_path / "g"))


def test_a_class_with_no_clips_or_none_readable_is_reported_as_dropped(ckpts, tones, tmp_path, caplog):
    root = tmp_path / "classes"
    for kind in ("low", "high"):
        (root / kind).mkdir(parents=True)
        for path in sorted((tones / kind).glob("*.wav")):
            (root / kind / path.name).symlink_to(path)
    (root / "empty").mkdir()
    (root / "broken").mkdir()
    for i in range(5):
        (root / "broken" / f"{i}.wav").write_bytes(b"RIFF, and then nothing a decoder reads")
    metrics = run(_cfg(ckpt=ckpts["audio"], input=root, output=tmp_path / "out", baselines="[]"))["metrics"]
    assert [c["name"] for c in metrics["classes"]] == ["high", "low"]
    assert [(c["name"], c["files"]) for c in metrics["dropped_classes"]] == [("empty", 0), ("broken", 0)]
    assert (
        "class 'empty' has 0 listed clip(s)" in caplog.text and "class 'broken' has 0 readable clip(s)" in caplog.text
    )


def test_an_output_that_cannot_be_known_is_refused_before_any_file_is_read(ckpts, tones, monkeypatch):
    """Composed without Hydra's runtime, an unset output has no run folder to default to."""
    monkeypatch.setattr(linear_probe, "gather", lambda *a, **k: pytest.fail("files were read"))
    with pytest.raises(ConfigError, match="output must be set"):
        run(_cfg(ckpt=ckpts["audio"], input=tones, output="null"))


def test_a_probe_with_one_l2_strength_runs(ckpts, tones, tmp_path, monkeypatch):
    """The command's key check refused ``l2=0.01`` ("must be a list") before `l2_grid` saw it."""
    chosen = []
    choose = classifier.choose_l2
    monkeypatch.setattr(classifier, "choose_l2", lambda *a: chosen.append(a[4]) or choose(*a))
    metrics = run(_cfg(ckpt=ckpts["audio"], input=tones, output=tmp_path / "out", folds=2, l2=0.01, baselines="[]"))
    assert set(metrics["metrics"]["results"]) == {"model"} and chosen and all(g == (0.01,) for g in chosen)


def test_one_l2_strength_is_a_grid_of_one_and_a_strength_that_is_no_number_is_refused():
    """``l2=0.01`` (one strength, none to choose) stopped the command with a TypeError traceback."""
    assert linear_probe.l2_grid(_cfg(l2=0.01).l2) == (0.01,)
    assert linear_probe.l2_grid(_cfg().l2) == (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    for given, said in [("abc", "abc"), ("[0.1,-1]", "[0.1, -1]"), ("[]", "[]"), ("nan", "NaN")]:
        with pytest.raises(ConfigError, match=re.escape(f"l2 must be a positive number or a list of them; got {said}")):
            linear_probe.l2_grid(_cfg(l2=given).l2)


@pytest.mark.slow
def test_a_manifest_without_labels_is_one_error_line(ckpts, tmp_path):
    (tmp_path / "nolabel.csv").write_text("path\na.wav\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ttt_mm.tasks.linear_probe", f"ckpt={ckpts['audio']}", "input=nolabel.csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip() == "error: manifest nolabel.csv has no 'label' column"


def test_a_probe_interrupted_while_writing_says_its_files_may_be_missing(ckpts, tones, tmp_path, monkeypatch):
    """The command said that no results were written, whenever the Ctrl-C fell."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(linear_probe, "write_outputs", interrupted)
    with pytest.raises(Interrupted, match="^the results were being written to .*out: some of its files may be missing"):
        run(_cfg(ckpt=ckpts["audio"], input=tones, output=tmp_path / "out", baselines="[]"))


def test_sound_files_probed_with_a_video_model_are_one_error_saying_what_they_lack(ckpts, tones, tmp_path):
    """It logged each file, then that no class was left, then "fewer than 2 classes"."""
    with pytest.raises(
        ConfigError, match=r"none of the 20 clips of input=.* can be read: 20 x no video stream \(20 have"
    ):
        run(_cfg(ckpt=ckpts["video"], input=tones, output=tmp_path / "out"))


def test_an_embedding_folder_probes_like_its_checkpoint(ckpts, tones, tmp_path, caplog, monkeypatch, capsys):
    rows = [{"path": str(p), "label": p.parent.name} for p in sorted(tones.rglob("*.wav"))]
    manifest = _manifest(tmp_path / "list.csv", rows)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("embed", overrides=[f"ckpt={ckpts['audio']}", f"input={manifest}", f"output={tmp_path / 'emb'}"])
    cfg.progress = False
    assert len(embed_task.run(cfg).written) == 20
    (tmp_path / "emb" / "notes.json").write_text("{}")  # not an embedding: ignored
    fitted = record_fits(monkeypatch)
    direct = run(_cfg(ckpt=ckpts["audio"], input=manifest, output=tmp_path / "a"))["metrics"]
    stored = run(_cfg(embeddings=tmp_path / "emb", input=manifest, output=tmp_path / "b"))["metrics"]
    assert stored["settings"]["embeddings"] == str(tmp_path / "emb")
    assert len(fitted) == 6  # model, logmel, random_weights: each run's pooled vectors, the folder's as the model's
    for live, read in zip(fitted[:3], fitted[3:]):
        assert read.x.shape == live.x.shape == (20, live.x.shape[1])
        torch.testing.assert_close(read.x, live.x, atol=2e-3, rtol=2e-3)  # (kept in float16 by embed)
    for name in ("model", "random_weights", "logmel"):
        assert stored["results"][name]["accuracy"] == direct["results"][name]["accuracy"], name
    fitted.clear()
    by_rows = run(_cfg(embeddings=tmp_path / "emb", input=manifest, output=tmp_path / "r", rows="true", folds=2))
    assert set(by_rows["metrics"]["results"]) >= {"model", "random_weights"}
    tokens = [len(np.load(f)) for f in sorted((tmp_path / "emb").rglob("*.wav.npy"))]
    assert torch.bincount(fitted[0].owner).tolist() == tokens and min(tokens) > 1  # the folder's rows: one per token
    logmel = torch.bincount(fitted[1].owner).tolist()  # (its rows were 0.5 s, against the folder's 40 ms)
    assert all(abs(a - b) <= 1 for a, b in zip(logmel, tokens, strict=True)), (logmel, tokens)
    changed, st = Path(rows[0]["path"]), Path(rows[0]["path"]).stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # edited since it was embedded
    try:
        after = run(_cfg(embeddings=tmp_path / "emb", input=manifest, output=tmp_path / "e", folds=2))["metrics"]
    finally:
        os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    stem = f"{tmp_path / 'emb'}{changed}"  # the output mirrors the manifest's absolute path
    assert [s["reason"] for s in after["skipped"] if s["path"] == str(changed)] == [
        f"changed since {stem}.npy was embedded (run the embed task again)"
    ]

    # a truncated .npy and a torn sidecar cost their files, each with a reason, not the run
    npys, sidecars = sorted((tmp_path / "emb").rglob("*.wav.npy")), sorted((tmp_path / "emb").rglob("*.wav.json"))
    npys[0].write_bytes(npys[0].read_bytes()[:200])
    sidecars[-1].write_text(sidecars[-1].read_text()[:40])
    probed = run(_cfg(embeddings=tmp_path / "emb", input=manifest, output=tmp_path / "c", folds=2))
    torn = probed["metrics"]
    skipped = {Path(s["path"]).name: s["reason"] for s in torn["skipped"]}
    assert torn["files"] == 18 and len(skipped) == 2, skipped
    assert "unreadable (ValueError" in skipped[npys[0].name.removesuffix(".npy")]
    assert skipped[sidecars[-1].name.removesuffix(".json")].startswith(f"{sidecars[-1]}: unreadable sidecar (")
    assert f"{sidecars[-1]}: unreadable sidecar" in caplog.text
    capsys.readouterr()
    report(probed)  # (each says why, as it is)
    assert "\nskipped 2 clip(s): " in capsys.readouterr().out
    report(probed | {"metrics": torn | {"skipped": torn["skipped"] * 4}})  # (more than are named: where they all are)
    assert "\nskipped 8 clip(s): " in (printed := capsys.readouterr().out)
    assert " and 3 more (all in metrics.json)\n" in printed
    with pytest.raises(ConfigError, match="either ckpt"):
        run(_cfg(ckpt=ckpts["audio"], embeddings=tmp_path / "emb", input=manifest))

    copies = tmp_path / "copies"  # other files: one error line, not a "left out" line for each, then
    shutil.copytree(tones, copies)  # "fewer than 2 classes"
    caplog.clear()
    with pytest.raises(ConfigError, match=r"embeds none of the 20 clips of input=.*copies \(it holds .*\.wav, say"):
        run(_cfg(embeddings=tmp_path / "emb", input=copies, output=tmp_path / "d"))
    assert f"left out: {copies}" not in caplog.text


def test_a_span_not_embedded_is_named_as_a_span(ckpts, tones, tmp_path):
    """Left out of a probe of an embedding folder, it was named by its file alone, whose other spans were probed."""
    rows = [{"path": str(p), "label": p.parent.name, "start": "", "end": ""} for p in sorted(tones.rglob("*.wav"))]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        embed = [
            f"ckpt={ckpts['audio']}",
            f"input={_manifest(tmp_path / 'list.csv', rows)}",
            f"output={tmp_path / 'e'}",
        ]
        cfg = compose("embed", overrides=embed)
    cfg.progress = False
    embed_task.run(cfg)
    first = rows[0]["path"]
    more = _manifest(tmp_path / "more.csv", [*rows, {**rows[0], "start": "0", "end": "0.25"}])  # (not embedded)
    probed = run(_cfg(embeddings=tmp_path / "e", input=more, output=tmp_path / "out", folds=2))["metrics"]
    assert [s["path"] for s in probed["skipped"]] == [f"{first}@0-0.25"] and probed["files"] == 20


def test_an_embedding_folder_from_two_checkpoints_is_refused(ckpts, tones, tmp_path, caplog):
    wavs = sorted(tones.rglob("*.wav"))[:2]
    manifest = _manifest(tmp_path / "list.csv", [{"path": str(p), "label": p.parent.name} for p in wavs])
    torch.manual_seed(1)  # the fixture's checkpoint was drawn from seed 0
    other = save_checkpoint(tmp_path / "other.ckpt", AUDIO)  # same architecture and settings, other weights
    (tmp_path / "one.csv").write_text(f"path\n{wavs[1]}\n")
    for ckpt, listed in ((ckpts["audio"], manifest), (other, tmp_path / "one.csv")):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("embed", overrides=[f"ckpt={ckpt}", f"input={listed}", f"output={tmp_path / 'emb'}"])
        cfg.progress = False
        assert embed_task.run(cfg).written
    mixed = (
        r"mixes embedding runs \(other checkpoints\): 1 of 2 sidecars have weights_hash \w+, 1 with weights_hash \w+ "
    )
    with pytest.raises(ConfigError, match=mixed):
        run(_cfg(embeddings=tmp_path / "emb", input=manifest, output=tmp_path / "out"))

    old = sorted((tmp_path / "emb").rglob("*.json"))[-1]  # as written before weights were recorded: unknown
    old.write_text(json.dumps({k: v for k, v in json.loads(old.read_text()).items() if k != "weights_hash"}))
    folder = EmbeddingFolder(tmp_path / "emb")
    recorded = json.loads(sorted((tmp_path / "emb").rglob("*.json"))[0].read_text())["weights_hash"]
    assert len(folder.stems) == 2 and folder.weights_hash == recorded  # the one hash that is known
    assert "1 of 2 sidecars" in caplog.text and "record no weights_hash" in caplog.text
    assert "readers" not in caplog.text
    old.write_text(json.dumps(json.loads(old.read_text()) | {"decoder": decode.VERSION - 1}))  # (older readers)
    EmbeddingFolder(tmp_path / "emb")
    assert "1 of 2 sidecars in" in caplog.text and "decoded by another version of ttt-mm's readers" in caplog.text
    with pytest.raises(ConfigError, match="is a directory, not a checkpoint file"):
        run(_cfg(ckpt=tmp_path, input=manifest))
    # the checkpoint is said first: a mistyped one was said after the inputs were listed (a large folder: minutes)
    with pytest.raises(ConfigError, match=f"^checkpoint {tmp_path / 'x.ckpt'} does not exist$"):
        run(_cfg(ckpt=tmp_path / "x.ckpt", input=tmp_path / "no such folder"))


def test_an_embedding_folder_of_mixed_settings_names_the_odd_sidecar_and_the_setting(ckpts, tones, tmp_path):
    """The folder's first sidecar was taken as the rule: an odd one sorted first had every other file named."""
    listed = tmp_path / "list.csv"
    listed.write_text("path\n" + "".join(f"{p}\n" for p in sorted(tones.rglob("*.wav"))[:3]))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("embed", overrides=[f"ckpt={ckpts['audio']}", f"input={listed}", f"output={tmp_path / 'emb'}"])
    cfg.progress = False
    assert len(embed_task.run(cfg).written) == 3
    odd, usual, _ = sorted((tmp_path / "emb").rglob("*.json"))  # (as if embedded with hop_seconds=1)
    odd.write_text(json.dumps(json.loads(odd.read_text()) | {"config_hash": "0ther", "hop_seconds": 1.0}))
    with pytest.raises(ValueError) as refused:
        EmbeddingFolder(tmp_path / "emb")
    assert str(refused.value) == (
        f"{tmp_path / 'emb'} mixes embedding runs (other model config or settings): 2 of 3 sidecars have config_hash "
        f"{json.loads(usual.read_text())['config_hash']}, 1 with config_hash 0ther (e.g. {odd}; hop_seconds null "
        "-> 1.0); embed into a folder of its own per model and settings"
    )


def test_an_embedding_folder_is_probed_as_embedded_and_a_setting_given_otherwise_says_so(
    ckpts, tones, tmp_path, monkeypatch, capsys
):
    """Embedded with pool=null, a folder was refused with "pool must be mean, max or mean_std", which the
    user had given (pool=mean): a folder's settings are its sidecars', whatever the command line says."""
    wavs = [p for c in sorted(tones.iterdir()) for p in sorted(c.glob("*.wav"))[:2]]  # (two of each class)
    listed = _manifest(tmp_path / "list.csv", [{"path": str(p), "label": p.parent.name} for p in wavs])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        embed = [
            f"ckpt={ckpts['audio']}",
            f"input={listed}",
            f"output={tmp_path / 'emb'}",
            "pool=null",
            "progress=false",
        ]
        assert len(embed_task.run(compose("embed", overrides=embed)).written) == len(wavs)
    probe = ["linear_probe", f"embeddings={tmp_path / 'emb'}", f"input={listed}", f"output={tmp_path / 'out'}"]
    for given, said in [
        ([], "was embedded with pool=null (rows only): a probe of files needs one vector per file; probe its rows"),
        (["pool=mean", "norm=true"], "was embedded with norm=true, pool=null, and is probed so: for pool=mean, embed"),
        (["layer=-1", "pool=max"], "was embedded with layer=1, pool=null, and is probed so: for pool=max, embed"),
        (["layer=0"], "was embedded with layer=1, and is probed so: for layer=0, embed again"),  # (of 2 blocks)
        (["layer=3"], "was embedded by a model of 2 blocks: layer=3 is none of them (from -2 to 1)"),  # (read as 1)
        (["layer=-3"], "was embedded by a model of 2 blocks: layer=-3 is none of them (from -2 to 1)"),
    ]:
        monkeypatch.setattr(sys, "argv", [*probe, *given])
        with pytest.raises(SystemExit) as ended:
            linear_probe.main()
        assert ended.value.code == 2 and f"error: embeddings={tmp_path / 'emb'} {said}" in capsys.readouterr().err
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):  # (rows: no vector per file)
        returned = linear_probe.main(compose("linear_probe", overrides=[*probe[1:], "rows=true", "folds=2"]))
    done = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert done["settings"]["rows"] is True and {"model", "random_weights"} <= set(done["results"])
    means = {f"probe/{n}/{s}": r[s]["mean"] for n, r in done["results"].items() for s in ("accuracy", "macro_f1")}
    # what a sweep's job returns, for its results table: the scores and the embedding model's mixer (the
    # sweep's table could not tell a folder embedded by attention from one by TTT-Linear)
    assert returned == {"metrics": means, "run_dir": str(tmp_path / "out"), "mixer": "ttt_linear"}


def test_a_checkpoint_probed_with_pool_null_is_refused_before_any_file_is_read(ckpts, tones, tmp_path):
    with pytest.raises(ConfigError, match=r"^pool must be mean, max or mean_std for a probe of files \(it needs one"):
        run(_cfg(ckpt=ckpts["audio"], input=tones, output=tmp_path / "out", pool="null"))
    assert not (tmp_path / "out" / "metrics.json").exists()
    run(_cfg(ckpt=ckpts["audio"], input=tones, output=tmp_path / "rows", pool="null", rows="true", folds=2))  # (rows)
    settings = json.loads((tmp_path / "rows" / "metrics.json").read_text())["settings"]
    assert settings["pool"] is None and settings["mixer"] == "ttt_linear"


def test_spans_of_one_file_stay_in_one_fold_whatever_its_name_and_a_thinned_class_keeps_its_features(
    ckpts, tones, tmp_path
):
    rows = [{"path": str(p), "label": p.parent.name} for p in sorted(tones.rglob("*.wav"))]
    rng = np.random.default_rng(5)
    long = write_wav(tmp_path / "long.wav", np.concatenate([_sound("low", rng, 1.0) for _ in range(3)]), RATE)
    other = write_wav(tmp_path / "other.wav", _sound("low", rng, 1.0), RATE)
    link = tmp_path / "alias.wav"
    link.symlink_to(long)
    rows += [
        {"path": str(long), "label": "rare", "start": 0, "end": 1},
        {"path": str(other), "label": "rare", "start": 10, "end": 11},  # past the end: rare thins to 1 < min_clips
        {"path": str(long), "label": "low", "start": 1, "end": 2},
        {"path": str(link), "label": "low", "start": 2, "end": 3},  # the same file by another name
    ]
    manifest = _manifest(tmp_path / "list.csv", rows)
    out = run(_cfg(ckpt=ckpts["audio"], input=manifest, output=tmp_path / "out", folds=2, min_clips=2, baselines="[]"))
    m = out["metrics"]
    assert m["files"] == 22 and m["dropped_classes"] == [
        {"name": "rare", "files": 1, "reason": "readable: fewer than min_clips=2"}
    ]
    assert m["results"]["model"]["accuracy"]["mean"] == 1.0  # every file's features beside its own label
    files = _read_csv(Path(out["paths"]["files"]))
    spans = [r["fold"] for r in files if r["path"] in (str(long), str(link))]
    assert len(spans) == 2 and len(set(spans)) == 1 and m["settings"]["grouped_by"] == "file"


def test_a_file_and_a_group_column_join_into_one_group_and_a_class_held_in_one_group_is_dropped(
    ckpts, tones, tmp_path, caplog, capsys
):
    rows = [
        {"path": str(p), "label": p.parent.name, "group": f"{p.parent.name}{int(p.stem) // 2}"}
        for p in sorted(tones.rglob("*.wav"))
    ]  # 5 groups of 2 files per class
    rng = np.random.default_rng(6)
    takes = write_wav(tmp_path / "takes.wav", np.concatenate([_sound("low", rng, 1.0) for _ in range(4)]), RATE)
    rows += [{"path": str(takes), "label": "low", "start": i, "end": i + 1, "group": f"take{i}"} for i in range(4)]
    solo = write_wav(tmp_path / "solo.wav", np.concatenate([_sound("high", rng, 1.0) for _ in range(6)]), RATE)
    rows += [{"path": str(solo), "label": "solo", "start": i, "end": i + 1, "group": "soundtrack"} for i in range(6)]
    manifest = _manifest(tmp_path / "list.csv", rows)
    out = run(_cfg(ckpt=ckpts["audio"], input=manifest, output=tmp_path / "out", baselines="[]"))
    m = out["metrics"]
    assert [c["name"] for c in m["classes"]] == ["high", "low"] and m["files"] == 24
    assert m["settings"]["groups"] == 11  # take0..take3 are one group: the spans of one file
    files = _read_csv(Path(out["paths"]["files"]))
    assert len({r["fold"] for r in files if r["path"] == str(takes)}) == 1
    (solo_class,) = m["dropped_classes"]
    assert solo_class["name"] == "solo" and solo_class["files"] == 6 and "in one group" in solo_class["reason"]
    assert "class 'solo' (6 clip(s)) is in one group" in caplog.text
    report(out)
    assert "dropped class 'solo': 6 clip(s) (in one group" in capsys.readouterr().out


def record_fits(monkeypatch) -> list[Features]:
    """The features each probe is fitted on, in the command's order (model, logmel, random_weights)."""
    fitted = []

    def recording(feats, *args):
        fitted.append(feats)
        return cross_validate(feats, *args)

    monkeypatch.setattr(linear_probe, "cross_validate", recording)
    return fitted


def test_rows_probe_predicts_files_from_their_hops(ckpts, tones, tmp_path, monkeypatch):
    fitted = record_fits(monkeypatch)
    metrics = run(_cfg(ckpt=ckpts["audio"], input=tones, output=tmp_path / "out", rows="true", hop_seconds=0.2))
    m = metrics["metrics"]
    assert m["settings"]["rows"] and m["settings"]["hop_seconds"] == 0.2
    assert all(m["results"][n]["accuracy"]["mean"] == 1.0 for n in ("model", "logmel", "random_weights"))
    assert len(fitted) == 3
    for feats in fitted:  # rows of 0.2 s, each owned by its file (pooled vectors: one a file)
        assert torch.bincount(feats.owner).tolist() == [4] * 20


def test_an_embedding_folders_rows_set_the_hop_of_every_feature_set(ckpts, tones, tmp_path, monkeypatch):
    """The log-mel baseline took the config's hop (0.5 s) beside a folder embedded with another."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        embed = [f"ckpt={ckpts['audio']}", f"input={tones}", f"output={tmp_path / 'emb'}", "hop_seconds=0.2"]
        assert len(embed_task.run(compose("embed", overrides=[*embed, "progress=false"])).written) == 20
    fitted = record_fits(monkeypatch)
    run(_cfg(embeddings=tmp_path / "emb", input=tones, output=tmp_path / "out", rows="true", folds=2))
    assert len(fitted) == 3
    for feats in fitted:  # model, logmel, random_weights: rows of 0.2 s, four a file
        assert torch.bincount(feats.owner).tolist() == [4] * 20


def test_videos_are_probed_and_the_log_mel_baseline_needs_their_sound(ckpts, tmp_path):
    root = tmp_path / "videos"
    for cls, audio in (("sound", 16000), ("silent", None)):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            write_video(root / cls / f"{i}.mp4", seconds=1.0, fps=8, width=64, height=48, audio_rate=audio)
    metrics = run(_cfg(ckpt=ckpts["video"], input=root, output=tmp_path / "out", folds=3))["metrics"]
    assert metrics["files"] == 6 and set(metrics["results"]) == {"model", "random_weights", "majority"}
    assert metrics["unavailable"] == {"logmel": "3 of 6 files have no audio track"}
    (root / "silent").rename(tmp_path / "elsewhere")
    (root / "sound2").mkdir()
    for i in range(3):
        write_video(root / "sound2" / f"{i}.mp4", seconds=1.0, fps=8, width=64, height=48, audio_rate=16000)
    with_sound = run(_cfg(ckpt=ckpts["video"], input=root, output=tmp_path / "out2", folds=3))["metrics"]
    assert "logmel" in with_sound["results"] and not with_sound["unavailable"]


def test_clips_whose_sound_is_digital_silence_are_said_to_be_read_as_it_is(ckpts, tmp_path, monkeypatch, caplog):
    """embed says it of each such file; the probe read their silence into its features without a word."""
    import mediafiles

    root = tmp_path / "videos"
    for cls in ("a", "mute"):
        if cls == "mute":  # (its videos' sound: zeros)
            monkeypatch.setattr(
                mediafiles, "tone", lambda seconds, rate, *_: np.zeros(round(seconds * rate), np.float32)
            )
        (root / cls).mkdir(parents=True)
        for i in range(3):
            write_video(root / cls / f"{i}.mp4", seconds=1.0, fps=8, width=64, height=48)
    with caplog.at_level(logging.WARNING):
        run(_cfg(ckpt=ckpts["video"], input=root, output=tmp_path / "out", folds=3))
    assert "3 of the 6 clips have an audio track of digital silence, read as it is by log-mel (e.g. " in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run(_cfg(ckpt=ckpts["video"], input=root, output=tmp_path / "out2", folds=3, baselines=["majority"]))
    assert "digital silence" not in caplog.text  # (nothing reads the sound)


def test_a_clip_whose_sound_alone_is_bad_keeps_its_model_features(ckpts, tmp_path, monkeypatch):
    """A video model's clip with a damaged audio track (here: one the log-mel reader refuses) was left
    out of every feature set, so the model's score depended on the baselines asked for; and clips of a
    class dropped as too small counted against the log-mel baseline (then, read before the others, it
    shifted every later clip's log-mel features by one: an IndexError, or the wrong clip's)."""
    root = tmp_path / "videos"
    for cls, count, audio in (("0thin", 3, None), ("a", 3, 16000), ("b", 3, 16000)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            write_video(root / cls / f"{i}.mp4", seconds=1.0, fps=8, width=64, height=48, audio_rate=audio)
    (root / "0thin" / "1.mp4").write_text("not a video")  # (2 readable clips of 3: the class is dropped after reading)
    metrics = run(_cfg(ckpt=ckpts["video"], input=root, output=tmp_path / "out", folds=3))["metrics"]
    assert metrics["files"] == 6 and "logmel" in metrics["results"]  # (the thin class's silent clips don't count)
    shutil.rmtree(root / "0thin")
    without = run(_cfg(ckpt=ckpts["video"], input=root, output=tmp_path / "out1", folds=3))["metrics"]
    assert without["results"]["logmel"] == metrics["results"]["logmel"]  # (each clip's own features)

    refused = LogMelStats.__call__

    def damaged(self, clip):
        if clip.name.endswith("b/1.mp4"):
            raise MediaError(clip.name, "the audio decoder rejected a packet")
        return refused(self, clip)

    monkeypatch.setattr(LogMelStats, "__call__", damaged)
    metrics = run(_cfg(ckpt=ckpts["video"], input=root, output=tmp_path / "out2", folds=3))["metrics"]
    assert metrics["files"] == 6 and set(metrics["results"]) == {"model", "random_weights", "majority"}
    assert metrics["unavailable"] == {
        "logmel": "1 of 6 clips give no log-mel features (1 x the audio decoder rejected a packet)"
    }


def test_the_log_mel_baselines_rows_hold_the_spread_of_a_quiet_band(tmp_path):
    """Each hop's standard deviation is E[x^2] - E[x]^2 of log-mel values near the floor (about -23):
    in float32 that difference was rounding noise (up to 0.007 where the spread is 0.001)."""
    rate = 16000
    rng = np.random.default_rng(0)
    wav = write_wav(tmp_path / "quiet.wav", (1e-6 * rng.standard_normal(2 * rate)).astype(np.float32), rate)
    tokenizer = AudioTokenizer(dim=1, frames_per_token=1)
    stats = LogMelStats(tokenizer, hop_seconds=0.5)
    rows = stats(ClipInfo(str(wav))).rows  # [hops, 2 * n_mels]: means, then standard deviations
    spec = ReadSpec.for_tokenizer(tokenizer)
    (batch,) = iter_windows(str(wav), 30.0, spec)
    tokens = tokenizer.eval()(batch)
    frames = tokenizer.invert(tokens.targets[:, tokens.mask[0]])["audio"][0].double()  # [F, n_mels]
    per_hop = round(0.5 / stats.frame_seconds)
    spread = torch.stack([frames[i : i + per_hop].std(0, correction=0) for i in range(0, len(frames), per_hop)])
    assert rows.shape == (len(spread), 2 * tokenizer.n_mels)
    np.testing.assert_allclose(rows[:, tokenizer.n_mels :], spread.numpy(), rtol=1e-3, atol=1e-5)


def test_a_file_whose_embeddings_are_not_finite_is_left_out_with_its_reason(ckpts, tones):
    """A NaN in one file's features turned the whole probe's scores to chance, with no word of it."""
    embedder = Embedder.from_checkpoint(ckpts["audio"], device="cpu")
    with torch.no_grad():
        next(embedder.backbone.parameters()).fill_(float("nan"))
    clip = ClipInfo(str(tones / "low" / "0.wav"))
    gathered = gather(
        [clip], Extractors(live=ModelFeatures({"model": embedder}, rows=False)), rows=False, progress=False
    )
    assert not gathered.clips and gathered.skipped == [(clip.name, "its model embeddings are not finite (NaN or inf)")]
    features = Features(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]), torch.arange(2))
    with pytest.raises(ValueError, match="not finite"):
        classifier.fit(features, torch.tensor([0, 1]), 2, l2=1e-3)


def test_embeddings_made_through_a_linked_folder_are_found_by_the_real_path(ckpts, tones, tmp_path):
    """Sources were looked up by their absolute path only: a folder embedded through a link and probed
    through its real path (or the other way) matched none of its clips."""
    for link in ("linked", "again"):
        (tmp_path / link).symlink_to(tones / "low", target_is_directory=True)

    def embed(*paths):
        listed = tmp_path / "list.csv"
        listed.write_text("path\n" + "".join(f"{p}\n" for p in paths))
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            overrides = [f"ckpt={ckpts['audio']}", f"input={listed}", f"output={tmp_path / 'emb'}", "progress=false"]
            return len(embed_task.run(compose("embed", overrides=overrides)).written)

    assert embed(tmp_path / "linked" / "0.wav", tmp_path / "linked" / "1.wav") == 2
    folder = EmbeddingFolder(tmp_path / "emb")
    by_link, by_real = (folder.stem_of(ClipInfo(str(root / "0.wav"))) for root in (tmp_path / "linked", tones / "low"))
    assert by_link is not None and by_real == by_link
    assert folder.stem_of(ClipInfo(str(tones / "low" / "2.wav"))) is None
    assert embed(tones / "low" / "1.wav") == 1  # one real file, two outputs: each found by its own name
    folder = EmbeddingFolder(tmp_path / "emb")
    by_link, by_real = (folder.stem_of(ClipInfo(str(root / "1.wav"))) for root in (tmp_path / "linked", tones / "low"))
    assert None not in (by_link, by_real) and by_link != by_real
    assert folder.stem_of(ClipInfo(str(tmp_path / "again" / "1.wav"))) in (by_link, by_real)  # (the same bytes)
    assert folder.stem_of(ClipInfo(str(tmp_path / "again" / "0.wav"))) == folder.stem_of(
        ClipInfo(str(tones / "low" / "0.wav"))
    )


def test_a_row_probe_of_float32_embeddings_keeps_no_file_open(ckpts, tones, tmp_path):
    """Each file's rows were a view of its memory map, which held the file open until the probe ended:
    past the process's limit of open files, every later file was left out as unreadable."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        embed = [f"ckpt={ckpts['audio']}", f"input={tones / 'low'}", f"output={tmp_path / 'emb'}", "dtype=float32"]
        assert len(embed_task.run(compose("embed", overrides=[*embed, "progress=false"])).written) == 10
    rows = EmbeddingFolder(tmp_path / "emb")(ClipInfo(str(tones / "low" / "0.wav")), rows=True).rows
    assert rows.dtype == np.float32 and len(rows) and rows.flags.owndata  # (a copy: no map, no open file)
    npy = tmp_path / "emb" / "0.wav.npy"  # a NaN written into the rows since (the embed task writes none)
    broken = np.load(npy)
    broken[0, 0] = np.nan
    np.save(npy, broken)
    with pytest.raises(MediaError, match=r"the embeddings in .*0\.wav are not finite \(NaN or inf\)"):
        EmbeddingFolder(tmp_path / "emb")(ClipInfo(str(tones / "low" / "0.wav")), rows=True)


def test_l2_falls_back_to_the_middle_of_the_grid_by_value():
    """Three files cannot fill an inner fold of four: the fallback took the grid's middle entry as
    given ([1, 1e-4, 1e-2]: 1e-4), not its middle value."""
    features = Features.per_file(torch.randn(3, 2))
    chosen, probe = classifier.choose_l2(features, np.array([0, 1, 0]), None, 2, (1.0, 1e-4, 1e-2), seed=0)
    assert (chosen, probe) == (1e-2, None)


def test_a_list_given_as_input_says_how_to_give_several_files(ckpts, tones, tmp_path):
    """It was said not to exist (``input=['a', 'b'] does not exist``), though both folders do."""
    listed = f"[{tones / 'low'},{tones / 'high'}]"
    with pytest.raises(ConfigError, match=r"^input takes one file, folder or manifest; got a list of 2"):
        run(_cfg(ckpt=ckpts["audio"], input=listed, output=tmp_path / "out"))
