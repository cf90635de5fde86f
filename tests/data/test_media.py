"""Media in hand is windowed exactly like other media: tensors against the synthetic clip they hold."""

from __future__ import annotations

import pytest
import torch

from ttt_mm.data import ReadSpec, SyntheticClip, iter_windows
from ttt_mm.data.datasets import to_device
from ttt_mm.data.media import Media, TensorMedia

SPEC = ReadSpec(("audio", "video"), size=32)


def decoded(clip: SyntheticClip, start: float, seconds: float) -> TensorMedia:
    return TensorMedia(
        clip.audio(start, seconds, SPEC.sample_rate), clip.video(start, seconds, SPEC.fps, SPEC.size), 16000, 8.0, start
    )


@pytest.mark.parametrize("start", [0.0, 1.0])
def test_tensors_give_the_windows_of_the_clip_they_hold(start):
    clip = SyntheticClip(0, 2, 3.0)
    media = decoded(clip, start, 3.0 - start)
    assert isinstance(media, Media) and isinstance(clip, Media) and not isinstance("a.wav", Media)
    ours = list(iter_windows(media, 0.75, SPEC, start=start))
    theirs = list(iter_windows(clip, 0.75, SPEC, start=start))
    assert len(ours) == len(theirs) == round((3.0 - start) / 0.75)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for key in ("audio", "video", "start", "audio_lengths", "video_lengths"):
            assert torch.equal(a[key], b[key]), key
        if i or not start:
            assert torch.equal(a["audio_context"], b["audio_context"])
        else:  # before the tensors' first sample there is nothing: the context is zeros
            assert a["audio_context"].abs().sum() == 0 < b["audio_context"].abs().sum()


def test_tensors_that_begin_later_are_read_from_where_they_begin():
    """Read from 0 s (`iter_windows`' default start), tensors that begin at 1 s gave their first frames
    with silence, 1 s early, and the window at 1 s the same frames again."""
    clip = SyntheticClip(0, 2, 3.0)
    media = decoded(clip, 1.0, 2.0)
    ours = list(iter_windows(media, 1.0, SPEC))
    theirs = list(iter_windows(clip, 1.0, SPEC, start=1.0))
    assert [float(w["start"]) for w in ours] == [1.0, 2.0]
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(ours, theirs, strict=True))
    with pytest.raises(ValueError, match="frames start at 1 s, after 0 s"):
        media.video(0.0, 1.0, 8.0, 32)


def test_tensors_end_with_their_shorter_stream_and_a_window_holds_every_frame_it_reaches():
    """As a file's clip does: where one stream ends the clip ends, and a window of 0.3 s at 8 fps
    reaches into a third frame (frames at 0, 0.125 and 0.25 s)."""
    media = TensorMedia(torch.zeros(32000), torch.zeros(8, 3, 32, 32, dtype=torch.uint8), 16000, 8.0, offset=5.0)
    assert media.duration == 6.0  # 2 s of sound, 1 s of frames
    assert len(media.video(5.0, 0.3, 8.0, 32)) == 3 and len(media.video(5.0, 0.25, 8.0, 32)) == 2


def test_tensors_are_never_resampled():
    media = TensorMedia(torch.zeros(16000), None, sample_rate=16000)
    with pytest.raises(ValueError, match="at 16000 Hz, not 22050 Hz"):
        media.audio(0.0, 0.5, 22050)
    with pytest.raises(ValueError, match="holds no video"):
        media.video(0.0, 0.5, 8.0, 32)
    with pytest.raises(ValueError, match="needs samples, frames or both"):
        TensorMedia()


def test_to_device_moves_tensors_only():
    batch = to_device({"audio": torch.zeros(2), "path": ["a"], "fps": 8.0}, "meta")
    assert batch["path"] == ["a"] and batch["fps"] == 8.0 and batch["audio"].device.type == "meta"
