"""`clip_changes`: which training files a resumed run's data lost, gained or saw rewritten."""

import dataclasses

from ttt_mm.data.clip_record import clip_changes, clip_record
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
