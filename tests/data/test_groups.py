"""Clips that go together (`ttt_mm.data.groups`): joined through a file or a group value they share,
named by their least group value, else their file."""

from __future__ import annotations

from ttt_mm.data import ClipInfo
from ttt_mm.data.groups import joined_groups, joined_names, split_units


def test_samples_sharing_any_key_directly_or_through_others_are_one_group():
    keys = [("file:a", "group:x"), ("file:b",), ("file:a", "group:y"), ("file:c", "group:y"), ("file:d", "group:x")]
    assert joined_groups(keys).tolist() == [0, 1, 0, 0, 0]  # a-x-d and a-y-c are one; b is alone
    assert joined_groups([("file:a",), ("file:b",)]).tolist() == [0, 1] and len(joined_groups([])) == 0


def test_groups_joined_through_a_shared_file_take_the_least_value_and_a_lone_file_its_own_name():
    names = joined_names(["a", "a", "c", "d", "e"], ["y", "x", "y", None, None])
    assert names == [(0, "x"), (0, "x"), (0, "x"), (1, "d"), (1, "e")]
    clips = [
        ClipInfo("/d/a.wav", start=0, end=1, key="a.wav", group="talk2"),
        ClipInfo("/d/a.wav", start=1, end=2, key="a.wav", group="talk1"),  # (a's spans join talk1 and talk2)
        ClipInfo("/d/b.wav", key="b.wav", group="talk2"),
        ClipInfo("/d/c.wav", key="c.wav"),
    ]
    units = split_units(clips)
    assert units == {"a.wav": "group:talk1", "b.wav": "group:talk1", "c.wav": "c.wav"}
    assert (
        ClipInfo("/d/c.wav", key="c.wav").split_hash(units["c.wav"]) == ClipInfo("/d/c.wav", key="c.wav").split_hash()
    )
