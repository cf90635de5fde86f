"""Manifest of the Fish Fillets NG voice-acted dialogue, one speaker label per clip (speaker ID probe
and speech training).

    python data/scripts/fillets_dialogue.py --media /tmp/ttt-mm-media --out data/fillets_nl/dialogue.csv

``--media`` is the folder ``bash ../shared/data/fetch-real-media.sh`` unpacked into; the clips are
``root/usr/share/games/fillets-ng/sound/<level>/<language>/<line>.ogg`` (``--language nl``: 1616
Dutch clips, 96 min; ``<level>`` is a level folder or ``share/<jokes>``). No media file is opened:
labels come from file names and the game's dialogue scripts.

The label rule (the speaker of a clip):

1. The character code in the file name, its parts split at ``-`` or ``_``:
   ``<level>-m-<line>``, ``m-<line>`` or ``<line>-m`` is the small fish (``small_fish``), the
   same with ``v`` the big fish (``big_fish``); ``s-hurt-<n>`` and ``b-hurt-<n>`` are the small
   and the big fish crying out.
2. A name without a code (``rand-0-1``, ``init-3-0``, ``help12``, ...): the font the level's
   dialogue script (``script/<level>/*.lua``: ``dialogId("<line>", "<font>", ...)``) shows the
   line in; the game gives each character its own font: ``font_small`` and ``font_big`` are the
   fish, any other font ``font_<x>`` is the character ``<x>`` (``parrot``, ``crab``, ...).
3. A clip with neither, or whose code and font disagree, is left out and counted.

On the Dutch set, rule 1 labels 1444 clips and rule 2 the other 172; only the two fish speak.

``group`` is the level (the clips of one level are one conversation, with the same recording
session and the same words, so a cross-validation fold must not split it). ``split``: a seeded
``--val-fraction`` of the levels (default 0.1) is ``val``, the rest ``train``, for training a speech
model on the same clips (probing then reads every row; ``split=`` restricts it).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter
from pathlib import Path

from ttt_mm.data.manifest import write_manifest
from ttt_mm.data.sources import relative_to

GAME = Path("root/usr/share/games/fillets-ng")

CODE_RULES = (  # (pattern on the file stem, {code: speaker}); the first that matches decides
    (re.compile(r"^[^-_]+[-_]([mv])[-_].+$"), {"m": "small_fish", "v": "big_fish"}),  # <level>-m-<line>
    (re.compile(r"^([mv])[-_].+$"), {"m": "small_fish", "v": "big_fish"}),  # m-<line>
    (re.compile(r"^.+[-_]([mv])$"), {"m": "small_fish", "v": "big_fish"}),  # <line>-m
    (re.compile(r"^([sb])-hurt-\d+$"), {"s": "small_fish", "b": "big_fish"}),  # s-hurt-0: a cry of pain
)
FISH_FONTS = {"font_small": "small_fish", "font_big": "big_fish"}
DIALOG_ID = re.compile(r'dialogId\(\s*"([^"]+)"\s*,\s*"([^"]+)"')


def code_speaker(stem: str) -> str | None:
    """Rule 1: the speaker named by the character code in a file name, or None."""
    for pattern, speakers in CODE_RULES:
        match = pattern.match(stem)
        if match:
            return speakers[match.group(1)]
    return None


def font_speaker(font: str) -> str:
    """Rule 2: the character a dialogue font stands for."""
    return FISH_FONTS.get(font, font.removeprefix("font_"))


def script_fonts(folder: Path) -> dict[str, str]:
    """``line id -> font`` from every ``.lua`` file of a level's script folder (ids shown in two
    fonts are left out: they name no single speaker)."""
    seen: dict[str, set[str]] = {}
    for lua in sorted(folder.glob("*.lua")) if folder.is_dir() else []:
        for line_id, font in DIALOG_ID.findall(lua.read_text(encoding="utf-8", errors="replace")):
            seen.setdefault(line_id, set()).add(font)
    return {line_id: fonts.pop() for line_id, fonts in seen.items() if len(fonts) == 1}


def speaker(stem: str, fonts: dict[str, str]) -> tuple[str | None, str]:
    """``(speaker, how)``: how is ``code``, ``font``, ``conflict`` (code and font disagree) or ``none``."""
    by_code = code_speaker(stem)
    by_font = font_speaker(fonts[stem]) if stem in fonts else None
    if by_code and by_font and by_code != by_font:
        return None, "conflict"
    if by_code:
        return by_code, "code"
    return (by_font, "font") if by_font else (None, "none")


def level_splits(levels: list[str], seed: int, val_fraction: float) -> dict[str, str]:
    """Level -> ``train`` or ``val``: a seeded shuffle, ``round(val_fraction * n)`` levels (at least one) val."""
    order = sorted(levels)
    random.Random(seed).shuffle(order)
    val = max(1, round(val_fraction * len(order))) if val_fraction > 0 else 0
    return {level: "val" if i < val else "train" for i, level in enumerate(order)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", required=True, help="the folder fetch-real-media.sh unpacked into")
    parser.add_argument("--out", required=True, help="the CSV manifest to write")
    parser.add_argument("--language", default="nl", help="the voice folder to read (nl, en, ...)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split of the levels")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="fraction of the levels in val")
    args = parser.parse_args(argv)

    sound = Path(args.media) / GAME / "sound"
    files = sorted(p for p in sound.rglob(f"{args.language}/*.ogg")) if sound.is_dir() else []
    if not files:
        print(
            f"error: no {args.language}/*.ogg clips under {sound} (run bash ../shared/data/fetch-real-media.sh first)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    base = str(out.resolve().parent)
    fonts: dict[str, dict[str, str]] = {}
    rows, how, left_out = [], Counter(), []
    for path in files:
        level = path.parent.parent.relative_to(sound).as_posix()
        top = level.split("/")[0]
        if top not in fonts:
            fonts[top] = script_fonts(Path(args.media) / GAME / "script" / top)
        label, rule = speaker(path.stem, fonts[top])
        how[rule] += 1
        if label is None:
            left_out.append(f"{level}/{path.name} ({rule})")
            continue
        rows.append({"path": relative_to(str(path), base), "label": label, "group": level})
    split = level_splits(sorted({r["group"] for r in rows}), args.seed, args.val_fraction)
    for row in rows:
        row["split"] = split[row["group"]]
    write_manifest(out, rows)

    labels = Counter(r["label"] for r in rows)
    clips = Counter(r["split"] for r in rows)
    levels = Counter(split.values())
    print(
        f"wrote {out}: {len(rows)} clips of {len(split)} levels; speakers "
        + ", ".join(f"{k} {v}" for k, v in labels.most_common())
        + f"; labelled by file name {how['code']}, by dialogue font {how['font']}; "
        + f"train {clips['train']} clips ({levels['train']} levels), val {clips['val']} ({levels['val']})",
        file=sys.stderr,
    )
    if left_out:
        print(f"left out {len(left_out)} clips with no speaker: " + "; ".join(left_out[:10]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
