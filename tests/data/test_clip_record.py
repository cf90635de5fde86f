"""`clip_changes`: which training files a resumed run's data lost, gained or saw rewritten; `recorded_files`:
which files a run trained on."""

import dataclasses
import math

from ttt_mm.data.clip_record import clip_changes, clip_record, recorded_files, segment_span
from ttt_mm.data.decode.probing import MediaInfo
from ttt_mm.data.sources import ClipInfo


def clip(name: str, seconds: float | None = 10.0) -> ClipInfo:
    info = None if seconds is None else MediaInfo(name, 1, has_audio=True, has_video=False, audio_duration=seconds)
    return ClipInfo(name, info=info)


def test_added_removed_and_rewritten_files_are_named_and_the_rest_counted():
    before = [clip(f"/data/{i}.wav") for i in range(8)]
    after = [dataclasses.replace(before[0], info=clip("/data/0.wav", 3.0).info), *before[1:3]]
    after += [clip(f"/data/new{i}.wav") for i in range(5)]
    said = clip_changes(clip_record(before), after)
    assert said == (
        "5 added (/data/new0.wav, /data/new1.wav, /data/new2.wav and 2 more), "
        "5 removed (/data/3.wav, /data/4.wav, /data/5.wav and 2 more), 1 with another length (/data/0.wav)"
    )


def test_no_change_or_an_unreadable_record_says_nothing():
    clips = [clip("/d/a.wav"), clip("/d/b.wav", None), clip("/d/\udcff.wav")]  # (unprobed; a name not UTF-8)
    assert clip_changes(clip_record(clips), clips) is None
    assert clip_changes(b"not zlib", clips) is None
    assert clip_changes(clip_record([]), []) is None


def test_the_files_a_record_lists_are_its_clips_files_without_their_spans():
    spans = [ClipInfo("/d/a.wav", start=0.0, end=12.5), ClipInfo("/d/a.wav", start=12.5), ClipInfo("/d/b@2.wav")]
    spans += [ClipInfo("/d/a.wav", start=1e-05, end=2.0), ClipInfo("/d/a.wav", start=0.0, end=1e16)]
    assert recorded_files(clip_record([*spans, clip("/d/c.wav")])) == {"/d/a.wav", "/d/b@2.wav", "/d/c.wav"}
    assert recorded_files(b"not a record") is None
    # with spans: each clip's segment, read back as the span it names (exponents, a span to the end)
    segments = recorded_files(clip_record(spans), spans=True)
    assert sorted(segment_span(s) for s in segments) == [
        ("/d/a.wav", 0.0, 12.5),
        ("/d/a.wav", 0.0, 1e16),
        ("/d/a.wav", 1e-05, 2.0),
        ("/d/a.wav", 12.5, math.inf),
        ("/d/b@2.wav", 0.0, math.inf),
    ]
