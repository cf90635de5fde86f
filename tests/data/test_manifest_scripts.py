"""The manifest scripts of data/scripts on generated trees laid out like the shared real media."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from ttt_mm.data import ManifestSource

SCRIPTS = Path(__file__).resolve().parents[2] / "data" / "scripts"
GAME = Path("root/usr/share/games/fillets-ng")
MUSIC = Path("root/usr/share/games/singularity/music")


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"OggS")  # the scripts read names only


def dialogue_tree(media: Path) -> None:
    """Levels whose clips name their speaker in every way the real set does, and some that do not."""
    clips = {
        "airplane": ["let-m-oko", "let-v-vrak0", "let-v-vrak1", "bar_v_fotka"],
        "hanoi": ["m-bude", "v-alehrac"],
        "fdto": ["agenti-m", "hybeme-v"],
        "electromagnet": ["s-hurt-0", "b-hurt-1", "init-0", "rand-1-2", "shoot-0-0", "parrot-0"],
        "briefcase": ["help1", "kuf-m-disk"],
        "keys": ["init-0-1", "nobody-knows"],
        "share/blackjokes": ["smrt-m-0", "smrt-v-1"],
    }
    for level, stems in clips.items():
        for stem in stems:
            touch(media / GAME / "sound" / level / "nl" / f"{stem}.ogg")
    touch(media / GAME / "sound" / "airplane" / "en" / "let-x-english.ogg")  # another language: not read
    scripts = {
        "electromagnet": [("init-0", "font_big"), ("rand-1-2", "font_small"), ("parrot-0", "font_parrot")],
        "briefcase": [("help1", "font_small"), ("kuf-m-disk", "font_big")],  # the name and the font disagree
        "keys": [("init-0-1", "font_small"), ("init-0-1", "font_big")],  # two fonts: no single speaker
    }
    for level, lines in scripts.items():
        lua = media / GAME / "script" / level / "dialogs_nl.lua"
        lua.parent.mkdir(parents=True, exist_ok=True)
        lua.write_text("".join(f'dialogId("{i}", "{f}", "English text")\ndialogStr("Nederlands")\n' for i, f in lines))


def test_dialogue_speakers_come_from_the_file_name_then_the_dialogue_font(tmp_path):
    media, out = tmp_path / "media", tmp_path / "data" / "fillets_nl" / "dialogue.csv"
    dialogue_tree(media)
    assert script("fillets_dialogue").main(["--media", str(media), "--out", str(out)]) == 0
    rows = ManifestSource(str(out)).rows()
    speakers = {Path(r["path"]).stem: r["label"] for r in rows}
    assert speakers == {
        "let-m-oko": "small_fish",
        "let-v-vrak0": "big_fish",
        "let-v-vrak1": "big_fish",
        "bar_v_fotka": "big_fish",
        "m-bude": "small_fish",
        "v-alehrac": "big_fish",
        "agenti-m": "small_fish",
        "hybeme-v": "big_fish",
        "s-hurt-0": "small_fish",
        "b-hurt-1": "big_fish",
        "init-0": "big_fish",  # by font
        "rand-1-2": "small_fish",  # by font
        "parrot-0": "parrot",  # another character's font
        "help1": "small_fish",
        "smrt-m-0": "small_fish",
        "smrt-v-1": "big_fish",
    }  # left out: shoot-0-0 and nobody-knows (no code, no font), kuf-m-disk (conflict), init-0-1 (two fonts)
    groups = {Path(r["path"]).stem: r["group"] for r in rows}
    assert groups["let-m-oko"] == "airplane" and groups["smrt-m-0"] == "share/blackjokes"
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())  # a level is never split between train and val
    assert Counter(s.pop() for s in by_group.values()) == {"train": 5, "val": 1}  # 6 labelled levels: at least 1 val
    clips = ManifestSource(str(out)).clips()
    assert all(Path(c.media).is_file() for c in clips) and clips[0].group == "airplane"

    again = tmp_path / "again.csv"
    script("fillets_dialogue").main(["--media", str(media), "--out", str(again)])
    assert [r["split"] for r in ManifestSource(str(again)).rows()] == [r["split"] for r in rows]  # seeded


def test_dialogue_script_says_where_the_media_should_be(tmp_path, capsys):
    assert script("fillets_dialogue").main(["--media", str(tmp_path), "--out", str(tmp_path / "m.csv")]) == 2
    assert "fetch-real-media.sh" in capsys.readouterr().err and not (tmp_path / "m.csv").exists()


def test_music_split_holds_out_a_quarter_of_the_tracks(tmp_path, capsys):
    media = tmp_path / "media"
    names = [f"Track {i}.ogg" for i in range(13)] + ["lose/Sad.ogg", "lose/Sadder.ogg", "win/Glad.ogg"]
    for name in names:
        touch(media / MUSIC / name)
    out = tmp_path / "data" / "singularity_music" / "manifest.csv"
    module = script("singularity_music")
    assert module.main(["--media", str(media), "--out", str(out), "--seed", "3"]) == 0
    assert f"wrote {out}: 16 tracks, 11 train, 1 val, 4 test (seed 3); test: " in capsys.readouterr().err
    clips = ManifestSource(str(out)).clips()
    assert len(clips) == 16 and all(Path(c.media).is_file() and c.start == 0 and c.end is None for c in clips)
    assert Counter(c.split for c in clips) == {"train": 11, "val": 1, "test": 4}
    assert {c.group for c in clips} >= {"lose/Sad", "Track 0"}
    assert module.splits(names, 3, 0.25, 1) == {
        Path(c.media).relative_to(media / MUSIC).as_posix(): c.split for c in clips
    }
    other = module.splits(names, 4, 0.25, 1)
    assert Counter(other.values()) == {"train": 11, "val": 1, "test": 4} and other != module.splits(names, 3, 0.25, 1)
    with pytest.raises(ValueError, match="none to train on"):
        module.splits(names[:4], 0, 0.5, 2)
