"""Seeded fuzzing: corrupted variants of small media files (bit flips, truncations, zeroed spans,
spliced chunks) are each recorded as usable or bad with a reason, and none takes the caller down."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from mediafiles import tone, write_video, write_wav

from ttt_mm.bench.corrupt import KINDS, write_variants
from ttt_mm.data import index_files
from ttt_mm.data.skiplist import count_reasons

VARIANTS = 60


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_sources")
    return [
        write_video(root / "h264_aac.mp4", seconds=1.0, fps=10, width=64, height=48),
        write_video(root / "h264_aac.mkv", seconds=1.0, fps=10, width=64, height=48, audio_rate=22050, stereo=True),
        write_video(
            root / "mpeg4_ac3.avi",
            seconds=1.0,
            fps=10,
            width=64,
            height=48,
            video_codec="mpeg4",
            audio_codec="ac3",
            audio_rate=48000,
        ),
        write_wav(root / "tone.wav", tone(1.0, 16000), 16000),
        write_wav(root / "tone.flac", tone(1.0, 22050), 22050),
        write_wav(root / "tone.ogg", tone(1.0, 44100), 44100),
    ]


def digest(paths) -> str:
    return hashlib.sha1(b"".join(p.read_bytes() for p in paths)).hexdigest()


def test_variants_are_seeded(sources, tmp_path):
    first = write_variants(sources, tmp_path / "a", 12, seed=3)
    assert digest(first) == digest(write_variants(sources, tmp_path / "b", 12, seed=3))
    assert digest(first) != digest(write_variants(sources, tmp_path / "c", 12, seed=4))
    assert [p.name.split("_")[1] for p in first[:4]] == list(KINDS)
    four = sources[:4]  # as many sources as kinds: each once took one kind only
    kinds = {}
    for p in write_variants(four, tmp_path / "d", len(four) * len(KINDS)):
        kinds.setdefault(p.name.split("_", 2)[2], set()).add(p.name.split("_")[1])
    assert len(four) == len(KINDS) and kinds == {s.name: set(KINDS) for s in four}
    assert all(p.read_bytes() != s.read_bytes() for p, s in zip(first, sources * 2))


@pytest.mark.slow
def test_every_corrupted_variant_is_usable_or_bad_with_a_reason(sources, tmp_path):
    variants = write_variants(sources, tmp_path / "variants", VARIANTS, seed=0)
    records, run = index_files(variants, tmp_path / "cache", jobs=2, timeout=30.0)
    assert sorted(records) == sorted(map(str, variants))  # every file listed
    bad = {p: r["error"] for p, r in records.items() if r.get("error")}
    good = [r for r in records.values() if not r.get("error")]
    assert all(reason.strip() for reason in bad.values())
    # a Python exception escaping the probe is a bug, not a bad file: the worker would exit with status 1
    assert not [r for r in bad.values() if r.startswith("decoder exited")], count_reasons(bad.values())
    for record in good:
        durations = [record.get(f"{s}_duration") or 0.0 for s in ("audio", "video") if not record.get(f"{s}_error")]
        assert max(durations) > 0 and all(np.isfinite(durations))
    assert good and bad, count_reasons(bad.values())  # the mix is what makes the test worth running
    print(f"{len(good)} usable, {len(bad)} bad ({count_reasons(bad.values())}) in {run.seconds:.1f} s")
