"""Decoding settings for evaluation and embedding: the checkpoint's, unless the user sets them."""

from __future__ import annotations

import logging

import pytest

from ttt_mm.eval.decoding import checkpoint_decoding, checkpoint_split

AV_32PX = {"modalities": ["audio", "video"], "sample_rate": 16000, "fps": 8.0, "size": 32}
AUDIO = {"modalities": ["audio"], "sample_rate": 16000, "fps": None, "size": None}


def test_unset_values_come_from_the_checkpoint():
    unset = {"modalities": None, "sample_rate": None, "fps": None, "size": None}
    assert checkpoint_decoding({"ttt": AV_32PX}, unset) == AV_32PX
    assert checkpoint_decoding({"ttt": AUDIO}, {}) == {"modalities": ["audio"], "sample_rate": 16000}


def test_values_the_user_sets_must_agree_with_the_checkpoint():
    agreeing = {"size": 32, "fps": 8, "modalities": ["video", "audio"], "sample_rate": None}
    assert checkpoint_decoding({"ttt": AV_32PX}, agreeing) == AV_32PX  # 8 == 8.0, stream order is no matter
    with pytest.raises(ValueError) as caught:
        checkpoint_decoding({"ttt": AV_32PX}, {"size": 128})
    assert str(caught.value) == (
        "data.size=128 conflicts with checkpoint ttt, which was trained on size=32; "
        "leave data.size unset to use the checkpoint's"
    )
    with pytest.raises(ValueError, match=r"data.modalities=\[video\] conflicts .* modalities=\[audio,video\]"):
        checkpoint_decoding({"ttt": AV_32PX}, {"modalities": ["video"]})
    assert checkpoint_decoding({"ttt": AUDIO}, {"size": 128}) == {"modalities": ["audio"], "sample_rate": 16000}


def test_checkpoints_that_read_differently_cannot_share_a_run():
    with pytest.raises(ValueError, match=r"the checkpoints read different size \(a: 32, b: 64\)"):
        checkpoint_decoding({"a": AV_32PX, "b": AV_32PX | {"size": 64}}, {})


def test_a_checkpoint_without_a_recorded_split_takes_the_others_with_a_warning(caplog):
    """It was taken silently: that model could be scored on files its own run trained on."""
    split = {"val_fraction": 0.1, "test_fraction": 0.05}
    with caplog.at_level(logging.WARNING, logger="ttt_mm.eval.decoding"):
        assert checkpoint_split({"ttt": split, "old": None}) == split
        assert checkpoint_split({"ttt": split, "lact": dict(split)}) == split  # (both recorded: no word)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("old records no split (saved by an older version): the split of ttt (val_fraction=0.1 ")
    with pytest.raises(ValueError, match="trained on different splits"):
        checkpoint_split({"ttt": split, "lact": {"val_fraction": 0.2, "test_fraction": 0.05}})
