"""Every bad-input case: one clear error for a single file, one log line and a skip in a dataset."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest
import soundfile as sf
import torch
from mediafiles import (
    middle_packet,
    tone,
    without_audio_decoder,
    write_false_key_frames,
    write_reordered_video,
    write_video,
    write_wav,
)

from ttt_mm.data import (
    ClipInfo,
    MediaError,
    ReadSpec,
    SkipList,
    WindowDataset,
    datasets,
    decode,
    index_clips,
    reading_notes,
    skiplist,
)
from ttt_mm.data.decode import MediaInfo, backends, errors, guard, native, probing, video
from ttt_mm.data.decode.native import NO_AUDIO_DECODER
from ttt_mm.data.index import describe
from ttt_mm.data.selection import Selection, say_how_read
from ttt_mm.data.skiplist import count_reasons, missing_stream_hint, reason_kind
from ttt_mm.tokenizers import AudioTokenizer, VideoTokenizer

AV = ReadSpec(("audio", "video"), size=32)
AUDIO = ReadSpec(("audio",))
VIDEO = ReadSpec(("video",), size=32)


@pytest.mark.parametrize(
    ("name", "call", "reason"),
    [
        ("zero", "probe", "empty file (0 bytes)"),
        ("truncated", "probe", "not a readable media container"),
        ("truncated_faststart", "video_decord", "truncated or corrupt"),
        ("header_only", "probe", "the container holds no streams"),
        ("corrupt", "probe", "not a readable media container"),
        ("nan", "audio", "NaN/Inf audio samples, the first at 0.250 s"),
        ("wav16k", "video", "no video stream"),
        ("video_only", "audio", "no audio stream"),
    ],
)
def test_single_file_calls_raise_one_clear_error(media, name, call, reason):
    path = media[name]
    with pytest.raises(MediaError) as caught:
        {
            "probe": lambda: decode.probe(path, verify=True),
            "audio": lambda: decode.read_audio(path, 0.0, 1.0),
            "video": lambda: decode.read_video(path, 0.0, 1.0),
            "video_decord": lambda: decode.read_video(path, 0.0, 1.0, backend="decord"),
        }[call]()
    assert caught.value.path == str(path)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")


def test_wrong_extensions_are_read_by_content(media):
    wav = decode.read_audio(media["wav_as_mp4"], 0.0, 1.0)  # a WAV named .mp4
    assert torch.equal(wav, decode.read_audio(media["wav16k"], 0.0, 1.0))
    info = decode.probe(media["mp4_as_wav"])  # an MP4 named .wav
    assert info.has_video and info.has_audio
    assert decode.read_video(media["mp4_as_wav"], 0.0, 0.5, fps=8, size=32).shape == (4, 3, 32, 32)


def test_lying_frame_count_is_caught_without_hanging(media):
    assert len(decord.VideoReader(str(media["lying"]))) == 60  # the index claims 60 frames; 30 hold pictures
    hung_before = guard.hung_calls()
    with pytest.raises(MediaError, match=r"decoding frame.* failed: .*\(corrupt or missing frame data\)"):
        last = float(decode.video_timeline(media["lying"], "decord")[0][-1])
        decode.read_video(media["lying"], last, 1e-3, fps=1.0, size=16, backend="decord")  # the last indexed frame
    for _ in range(3):  # decord decodes ahead on a thread, so even early frames may hit the bad tail
        decode.clear_caches()
        try:
            frames = decode.read_video(media["lying"], 0.0, None, fps=8, size=32, backend="decord")
        except MediaError as exc:
            assert "(corrupt or missing frame data)" in exc.reason
        else:
            assert len(frames) == 8
    assert guard.hung_calls() == hung_before  # every failure was an error, none a call given up on
    info = decode.probe(media["lying"], verify=True)  # decord fails the last frame: PyAV reads what is there
    assert (info.video_backend, info.n_frames) == ("pyav", 30) and info.video_duration == pytest.approx(1.0, abs=0.05)


def test_a_truncated_file_is_read_as_far_as_it_goes_and_says_how_long_it_should_be(media):
    info = decode.probe(media["truncated_faststart"], verify=True)  # the index (moov) survives, half the data not
    assert info.video_backend == "pyav" and 0.5 < info.video_duration < 1.5 and info.audio_duration < 1.5
    assert info.video_stated == pytest.approx(2.0) and info.audio_stated == pytest.approx(2.0, abs=0.05)
    assert decode.probe(media["faststart"], verify=True).video_stated is None  # whole: as long as it says
    frames = decode.read_video(media["truncated_faststart"], 0.0, None, fps=8, size=32)
    assert len(frames) == math.ceil(info.video_duration * 8 - 1e-6)


def test_videos_without_usable_sound_in_an_audio_visual_run_name_the_setting_that_reads_them():
    """One video without sound and one whose sound is digital silence: the error named neither fix."""
    reasons = [
        "the audio is digital silence (the model reads audio and video; data.missing_audio=skip)",
        "no audio stream",
    ]
    assert missing_stream_hint(reasons, ("audio", "video"), None) == (
        " (2 have no audio stream or only digital silence: files of video alone need data.modalities=[video] "
        "tokenizer=video (or data.missing_audio=silence))"
    )
    assert missing_stream_hint(["no audio stream"] * 2, ("audio", "video"), None).startswith(
        " (2 have no audio stream:"
    )
    silent_wavs = ["the audio is digital silence (nothing to model or score when only audio is read)"] * 2
    assert missing_stream_hint(silent_wavs, ("audio",), None) == ""  # (no video to read them as: no advice)


def test_a_matroska_file_cut_short_says_how_long_it_should_be(tmp_path):
    """Matroska's stream lengths are tags its muxer writes once the file is whole: a copy cut in half
    was read as a whole, shorter video, without a word."""
    whole = write_video(tmp_path / "whole.mkv", seconds=4.0, fps=10, width=64, height=48)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    info = decode.probe(cut, verify=True)
    assert info.video_duration < 3.0 and info.video_stated == pytest.approx(4.0, abs=0.1)
    assert decode.probe(whole, verify=True).video_stated is None  # (as long as it says)


@pytest.mark.parametrize("delay", [0.5, -1.0])
def test_a_whole_matroska_file_whose_streams_start_apart_is_not_called_cut_short(tmp_path, delay):
    """Matroska's length tag is where a stream ends, not how long it is: sound starting 0.5 s after the
    first frame was taken to lack 0.57 s ("decodes to 3.5 s of the 4.07 s the file states"), and a
    picture starting 1 s after the sound to lack 1 s."""
    path = write_video(tmp_path / "apart.mkv", seconds=3.0, fps=10, width=64, height=48, audio_delay=delay)
    info = decode.probe(path, verify=True)
    assert (info.video_stated, info.audio_stated) == (None, None)
    assert info.audio_duration == pytest.approx(3.0 + min(delay, 0.5), abs=0.07)
    cut = tmp_path / "cut.mkv"  # (cut short, it is still called so)
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    info = decode.probe(cut, verify=True)
    assert info.video_stated is not None and info.video_stated > info.video_duration + 1.0


def _frames(n: int):
    """``n`` small gray frames at 30 fps, as PyAV would encode them (pts 0..n-1)."""
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, 30)
        yield frame


def test_whole_videos_that_index_short_of_their_stated_length_are_not_called_cut_short(tmp_path):
    """Fragmented MP4 whose last frame is shown for 5 s: decord ends it at that frame's start (0.13 s),
    PyAV reads it whole. An AVI whose last 30 chunks are empty (a capture tool's repeated frames): its
    header counts them, and nothing is missing. Neither is truncated."""
    fragmented = tmp_path / "long_last_frame.mp4"
    with av.open(str(fragmented), "w", options={"movflags": "frag_keyframe+empty_moov"}) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.options = {"bf": "0"}
        packets = [p for frame in _frames(4) for p in stream.encode(frame)] + list(stream.encode(None))
        packets[-1].duration = round(5.0 / packets[-1].time_base)
        for packet in packets:
            out.mux(packet)
    info = decode.probe(fragmented, verify=True)
    assert (info.video_backend, info.video_stated) == ("pyav", None) and info.video_duration == pytest.approx(5.1)
    avi = tmp_path / "repeated.avi"
    with av.open(str(avi), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for packet in [p for frame in _frames(30) for p in stream.encode(frame)] + list(stream.encode(None)):
            out.mux(packet)
        for i in range(30, 60):
            empty = av.Packet(b"")
            empty.stream, empty.pts, empty.dts, empty.time_base = stream, i, i, Fraction(1, 30)
            out.mux(empty)
    info = decode.probe(avi, verify=True)
    assert info.video_stated is None and info.video_duration == pytest.approx(1.0)


def test_a_file_cut_inside_an_audio_packet_keeps_its_sound_as_decoded_before_the_cut(tmp_path):
    """PyAV refused the cut last packet, and the whole track went to decord: FFmpeg's summed
    channels (twice as loud for stereo) and no timeline, with only a "truncated" warning."""
    full = write_video(tmp_path / "full.mp4", seconds=3.0, fps=8, width=64, height=48, stereo=True, faststart=True)
    at, size, _ = middle_packet(full, "audio")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: at + size // 2])
    info = decode.probe(cut, verify=True)
    assert info.audio_backend == "pyav" and 1.0 < info.audio_duration < 2.0
    np.testing.assert_allclose(decode.read_audio(cut, 0.0, 1.0), decode.read_audio(full, 0.0, 1.0), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "codec", "garbage"),
    [
        ("damaged.mp4", "aac", lambda n: b"\xff" * n),
        ("damaged.mov", "mp2", lambda n: np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()),
    ],
)
def test_a_damaged_audio_packet_is_a_gap_in_place(tmp_path, name, codec, garbage):
    """The track went to decord, which stops at the damage, and the file was refused (its sound ends long
    before its picture). AAC: FFmpeg refuses the packet with another error than a cut one's. MP2: these
    bytes decode (PyAV's FFmpeg of 2026) as another rate or layout, which PyAV's resampler refused."""
    full = write_video(tmp_path / f"full{name[-4:]}", 3.0, 8, 64, 48, 44100, stereo=True, audio_codec=codec)
    at, size, _ = middle_packet(full, "audio")
    data = bytearray(full.read_bytes())
    data[at : at + size] = garbage(size)
    (tmp_path / name).write_bytes(bytes(data))
    info = decode.probe(tmp_path / name, verify=True)
    assert info.audio_backend == "pyav" and 0 < info.audio_gaps < 0.1
    assert info.audio_duration == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("b_frames", [False, True])
def test_a_file_cut_inside_a_video_packet_is_read_up_to_that_frame(tmp_path, b_frames):
    """Both backends indexed the cut frame, whose packet cannot be decoded: the file was refused. With
    reordered frames, the frame before it comes out of the decoder only at the flush after the cut packet."""
    full = write_video(tmp_path / "full.mp4", 3.0, 8, 64, 48, audio_rate=None, faststart=True, b_frames=b_frames)
    at, size, count = middle_packet(full, "video")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: at + size // 2])
    info = decode.probe(cut, verify=True)
    assert info.video_backend == "pyav" and info.n_frames == count // 2
    frames = decode.read_video(cut, 0.0, None, fps=8, size=32)
    assert len(frames) == count // 2 and torch.equal(frames, decode.read_video(full, 0.0, len(frames) / 8, 8, 32))


def _damage_video_packets(path: Path, out: Path, which: slice) -> Path:
    """``path`` with the video packets ``which`` (in decoding order) overwritten by noise."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    data, noise = bytearray(path.read_bytes()), np.random.default_rng(1)
    for at, size in packets[which]:
        data[at : at + size] = noise.integers(0, 256, size, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("backend", ["decord", "pyav", None])
def test_a_damaged_video_frame_is_stood_in_for_by_the_picture_before_it_and_said_once(tmp_path, backend, caplog):
    """A packet the decoder refused failed every window that held it: decord stops there, PyAV raised,
    and the file was left out at the first such window, its other frames with it. Players show the
    picture before it; so do both backends now (decord's windows there are read by PyAV)."""
    full = write_video(tmp_path / "full.avi", 3.0, 8, 64, 48, audio_rate=None, video_codec="mjpeg")
    damaged = _damage_video_packets(full, tmp_path / "damaged.avi", slice(12, 13))
    decode.clear_caches()
    decode.probe(damaged, verify=True)  # (decord or PyAV: decord's read-ahead may reach the damage in its checks)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        for _ in range(2):
            frames = decode.read_video(damaged, 0.0, None, fps=8, size=32, backend=backend)
    expected = decode.read_video(full, 0.0, None, fps=8, size=32)
    assert len(frames) == 24 and torch.equal(frames[12], frames[11]) and not torch.equal(frames[12], expected[12])
    assert torch.equal(frames[:12], expected[:12]) and torch.equal(frames[13:], expected[13:])
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith(f"{damaged}: 1 of the 24 video frames read from 0.000 s do not decode (damaged data), the")
    assert line.endswith("first at 1.500 s: the picture before each stands in (said once per file and run)")


def test_a_window_whose_frames_mostly_do_not_decode_is_refused(tmp_path):
    full = write_video(tmp_path / "full.avi", 3.0, 8, 64, 48, audio_rate=None, video_codec="mjpeg")
    damaged = _damage_video_packets(full, tmp_path / "damaged.avi", slice(10, 13))
    decode.clear_caches()
    assert len(decode.read_video(damaged, 1.0, 1.0, fps=8, size=32, backend="pyav")) == 8  # 3 of 8 missing
    refused = (
        r": 3 of the 4 video frames read from frame 9 to 12 do not decode \(damaged data, the first frame 10\): over"
    )
    with pytest.raises(MediaError, match=refused):
        decode.read_video(damaged, 1.125, 0.5, fps=8, size=32, backend="pyav")
    with pytest.raises(
        MediaError, match=r": 3 of the 4 video frames read from frame 9 to 12 do not"
    ):  # (not decord's error)
        decode.read_video(damaged, 1.125, 0.5, fps=8, size=32, backend="decord")


def test_a_window_that_seeks_to_a_damaged_key_frame_is_read_as_one_that_decodes_into_it(tmp_path, caplog):
    """Whether a damaged video was read depended on where the window started: one that seeks to a damaged
    key frame lost its whole group of pictures (8 of a 1.5 s window's 12 frames: refused), one that
    decoded on into the damage from the group before concealed some of it (5 missing: read), and a long
    H.264 file was refused by embed's default window but read in windows of 8 s."""
    full = write_video(tmp_path / "full.mp4", 4.0, 8, 64, 48, audio_rate=None, gop=8)  # (key frames 0, 8, 16, 24)
    damaged = _damage_video_packets(full, tmp_path / "damaged.mp4", slice(14, 18))
    decode.clear_caches()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        window = decode.read_video(damaged, 2.0, 1.5, fps=8, size=32, backend="pyav")
    (line,) = [m for m in caplog.messages if "do not decode" in m]
    assert line.startswith(f"{damaged}: 5 of the 12 video frames read from 2.000 s do not decode (damaged data)")
    whole = decode.read_video(damaged, 0.0, None, fps=8, size=32, backend="pyav")  # (decoded on, never sought)
    assert len(window) == 12 and torch.equal(window[-4:], whole[-8:-4])  # (from the next key frame on: the same)


def test_a_stretch_of_video_without_frames_is_said(tmp_path, caplog):
    """A damaged MPEG-1 file lost 9.6 s of frames in the middle, and one picture stood for all of it
    without a word (its sound's gap was said). Frames whose length is known and that end well before
    the next starts leave such a gap; an MP4's frames last until the next (a variable frame rate)."""
    times = [40 * i for i in range(25)] + [2000 + 40 * i for i in range(25)]  # (1 s without frames at 1 s)
    lost = write_video(tmp_path / "lost.mkv", 3.0, 25, 64, 48, audio_rate=None, times_ms=times)
    steady = write_video(tmp_path / "steady.mp4", 3.0, 25, 64, 48, audio_rate=None, times_ms=times)
    assert describe(str(lost))["video_gaps"] == pytest.approx(1.0) and "video_gaps" not in describe(str(steady))
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        index_clips([ClipInfo(str(lost)), ClipInfo(str(steady))], VIDEO, cache_dir=tmp_path / "cache")
    (line,) = [m for m in caplog.messages if "has no frames" in m]
    assert line.startswith(f"{lost}: 1.000 s inside the video has no frames")


def test_a_variable_rate_mp4_with_reordered_frames_is_not_said_to_lack_frames(tmp_path):
    """B-frames: an MP4's packet durations are decoding steps, and laid on the frames in the order they
    are shown, a stretch of 33 ms frames after 200 ms ones left "0.8 s inside the video has no frames"
    in a whole file. Its holes are counted between decoding times now (an MKV's, as before)."""
    times = [t for second in range(4) for t in range(1000 * second, 1000 * (second + 1), 200 if second % 2 else 33)]
    path = write_video(tmp_path / "vfr.mp4", audio_rate=None, times_ms=times, b_frames=True)
    index = video.video_index(str(path), "pyav")
    assert len(index.starts) == len(times) and index.gaps == 0.0
    assert describe(str(path))["n_frames"] == len(times) and "video_gaps" not in describe(str(path))
    times = [sum((33, 200)[k % 2] for k in range(i)) for i in range(40)]  # (an edit list decord reads)
    path = write_video(tmp_path / "vfr_decord.mp4", 4.66, audio_rate=None, times_ms=times, b_frames=True)
    index = video.video_index(str(path), "decord")  # (its frame ends: the packets' lengths, in decoding order)
    assert len(index.starts) == len(times) and index.gaps == 0.0


def test_a_video_whose_last_frame_is_damaged_is_read_to_its_end(tmp_path):
    """The probe read the last frame alone: refused by both backends' decoders, the file was left out
    whole. PyAV's last second has the picture before it stand in, as any window does."""
    full = write_video(tmp_path / "full.avi", 3.0, 8, 64, 48, audio_rate=None, video_codec="mjpeg")
    damaged = _damage_video_packets(full, tmp_path / "damaged.avi", slice(23, 24))
    decode.clear_caches()
    info = decode.probe(damaged, verify=True)
    assert (info.video_backend, info.n_frames) == ("pyav", 24)
    frames = decode.read_video(damaged, 2.0, None, fps=8, size=32)
    assert len(frames) == 8 and torch.equal(frames[-1], frames[-2])


def test_reading_from_the_start_takes_a_damaged_frame_but_not_a_damaged_second(tmp_path):
    """The probe of a video read from its start decodes all of it: one frame that does not decode is
    stood in for, as its windows will be; a second of them would fail the windows there, so it is refused."""
    full = write_video(tmp_path / "full.avi", 3.0, 10, 64, 48, audio_rate=None, video_codec="mjpeg")
    video.decode_in_order(str(_damage_video_packets(full, tmp_path / "frame.avi", slice(12, 13))))
    with pytest.raises(MediaError, match=r": 10 of the 10 video frames read from frame 10 to 19 do not decode"):
        video.decode_in_order(str(_damage_video_packets(full, tmp_path / "second.avi", slice(9, 21))))


def test_damage_in_the_frames_that_check_decords_seeks_sends_the_video_to_pyav(tmp_path):
    """decord's seek check passed a video whose in-order decode stopped at damage there, unchecked: its
    windows at the damage were then read by PyAV, seeking where nobody had checked that PyAV's seeks
    land (a real file whose do not gave pictures of other times). PyAV passes over the damage, so its
    own seeks are checked across it."""
    full = write_false_key_frames(tmp_path / "full.mp4", false_keys=())  # (key frames at 0, 30, 60)
    damaged = _damage_video_packets(full, tmp_path / "damaged.mp4", slice(20, 21))
    decode.clear_caches()
    assert decode.probe(full, verify=True).video_backend == "decord"
    assert decode.probe(damaged, verify=True).video_backend == "pyav"


def test_decord_windows_it_cannot_decode_are_read_by_pyav_and_said_once(tmp_path, caplog):
    """A window that needs a damaged H.264 frame to decode the ones it shows (frame 12 of 24, which frame
    13 refers to): decord stops there, and the file was left out; PyAV decodes them, the damage hidden."""
    full = write_video(tmp_path / "full.mp4", 3.0, 8, 64, 48, audio_rate=None, faststart=True)
    damaged = _damage_video_packets(full, tmp_path / "damaged.mp4", slice(12, 13))
    decode.clear_caches()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        frames = [decode.read_video(damaged, t, 1.0, fps=4, size=32, backend="decord") for t in (0.125, 1.125, 2.125)]
    assert [len(f) for f in frames] == [4, 4, 4]  # (frames 1, 3, 5, ...: never frame 12 itself)
    expected = decode.read_video(full, 0.125, None, fps=4, size=32)
    assert torch.equal(torch.cat(frames), expected)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert re.match(
        rf"{re.escape(str(damaged))}: damaged video data that decord stops at \(decoding frames? [\d-]+ failed: "
        r".*\): the windows it fails on are read by PyAV",
        line,
    )


def test_cached_readers_are_freed_before_the_interpreter_tears_down(tmp_path):
    """A decord reader left to the interpreter's teardown crashed a process that had done its work (a real
    H.264 file with decoding errors: status 134 or 139). Readers are freed at exit, before the exit
    handlers registered earlier run (here, one that counts them)."""
    path = write_video(tmp_path / "a.mp4", 1.0, 8, 64, 48, audio_rate=None)
    count = 'len(sys.modules["ttt_mm.data.decode.video"]._video_readers)'
    script = (
        f"import atexit, sys\natexit.register(lambda: print({count}))\nfrom ttt_mm.data import decode\n"
        f"decode.read_video({str(path)!r}, 0.0, 0.5, backend='decord')\nprint({count})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split() == ["1", "0"], done.stderr


def test_a_decoder_that_never_returns_is_abandoned(media, monkeypatch):
    release, returned = threading.Event(), threading.Event()

    def never_returns(self, idx):
        release.wait(30)
        returned.set()

    monkeypatch.setattr(decord.VideoReader, "get_batch", never_returns)
    monkeypatch.setattr(native, "DECODE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(decode.video, "open_timeout", lambda st: 60.0)  # (an open slowed by a busy machine)
    monkeypatch.setattr(guard, "_hung", [])
    monkeypatch.setattr(guard, "_abandoned", [])
    try:
        with pytest.raises(MediaError, match="decoding frame.* did not return within"):
            decode.read_video(media["video_only"], 0.0, 0.5, fps=8, size=32, backend="decord")
        assert not returned.is_set()  # the caller has its error while the decoder is still stuck
    finally:
        release.set()
    assert len(guard._hung) == 1
    (reader,) = guard._abandoned  # never freed: its stuck thread is still inside it
    assert isinstance(reader, decord.VideoReader)


def test_a_decoder_that_fails_in_its_own_code_costs_its_file_alone(media, monkeypatch):
    """A damaged file took PyAV down a path of its own that raised AttributeError (an audio stream with no
    codec context): not a decoder error as listed, it went through and ended train, evaluate and embed."""

    def trips(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'sample_rate'")

    monkeypatch.setattr(decode.audio, "_pyav_samples", trips)
    with pytest.raises(MediaError) as caught:
        decode.read_audio(media["wav16k"], 0.0, 0.5, 16000, backend="pyav")
    assert caught.value.reason == (
        "decoding the audio track failed: AttributeError: 'NoneType' object has no attribute 'sample_rate'"
    )


def test_a_file_rewritten_after_it_was_probed_is_left_out_unread(media, tmp_path, monkeypatch):
    """A file changed during a long run reached the decoders as its old record described it, never
    vetted again (a damaged rewrite ended the job)."""
    path = tmp_path / "a.wav"
    shutil.copy(media["wav16k"], path)
    (clip,) = index_clips([ClipInfo(str(path))], AUDIO, cache_dir=str(tmp_path / "cache")).clips
    assert datasets.read_item(clip, 0.0, 0.5, AUDIO)["audio"].numel() > 0
    path.write_bytes(path.read_bytes()[:-100])  # (rewritten: another size and time)
    read = []
    monkeypatch.setattr(decode, "read_audio", lambda *args, **kwargs: read.append(args))
    with pytest.raises(MediaError, match=f"^{re.escape(str(path))}: the file changed since it was probed "):
        datasets.read_item(clip, 0.0, 0.5, AUDIO)
    assert not read  # (no decoder saw it)


def test_too_many_hung_decoders_stop_the_process(monkeypatch):
    monkeypatch.setattr(guard, "_hung", ["x"] * guard.MAX_HUNG_THREADS)
    with pytest.raises(RuntimeError, match="never returned"):
        guard.run_with_timeout(lambda: 1, 1.0, "test")


def test_one_frame_video_reads_but_is_too_short_for_a_dataset(media, tmp_path, caplog):
    assert decode.read_video(media["one_frame"], 0.0, 1.0, fps=8, size=32).shape == (1, 3, 32, 32)
    skip_file = tmp_path / "skip.tsv"
    dataset = WindowDataset(
        [ClipInfo(str(media["one_frame"])), ClipInfo(str(media["video_only"]))], 1.0, VIDEO, skip_list=str(skip_file)
    )
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        items = [dataset[(0, epoch)] for epoch in range(3)]
    assert all(item["path"] == str(media["video_only"]) for item in items)
    assert "min_seconds=0.5" in skip_file.read_text()
    assert len([r for r in caplog.records if "skipping" in r.message]) == 1


def test_silence_gives_finite_tokens(media):
    info = decode.probe(media["silence"], verify=True)
    assert info.silent is True and decode.probe(media["wav16k"], verify=True).silent is False
    audio = decode.read_audio(media["silence"], 0.0, 1.0)
    tokens = AudioTokenizer()({"audio": audio[None]})
    assert torch.isfinite(tokens.targets).all() and torch.isfinite(tokens.embeddings).all()
    video = VideoTokenizer(size=32)({"video": torch.zeros(1, 4, 3, 32, 32, dtype=torch.uint8)})
    assert torch.isfinite(video.targets).all() and video.targets.abs().max() == 0


def test_dataset_skips_every_bad_case_once_and_records_it(media, tmp_path, caplog):
    bad = ["zero", "truncated", "corrupt", "nan", "video_only", "wav16k", "one_frame", "lying"]
    clips = [ClipInfo(str(media[name])) for name in bad] + [ClipInfo(str(media["av"]))]
    skip_file = tmp_path / "run" / "skip.tsv"
    dataset = WindowDataset(clips, 1.0, AV, seed=0, skip_list=str(skip_file))
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        for i in range(len(clips)):
            for epoch in range(4):
                item = dataset[(i, epoch)]
                assert item["path"] == str(media["av"])
    lines = skip_file.read_text().splitlines()
    recorded = {line.split("\t")[0] for line in lines}
    missing = {str(media[n]) for n in bad if n != "lying"} - recorded
    assert not missing, f"not recorded: {missing}"
    assert len(lines) == len(recorded)  # one line per bad file
    warnings = [r.message for r in caplog.records if r.message.startswith("skipping ")]
    assert len(warnings) == len(lines)
    assert any("no audio stream" in line for line in lines) and any("no video stream" in line for line in lines)


def test_a_failed_clips_stand_in_does_not_depend_on_what_other_workers_listed(tmp_path):
    """A run's data is the same for any number of workers: a stand-in was drawn among the clips not
    listed yet, and so depended on which failures other workers had recorded by then."""
    bad = [tmp_path / "x.wav", tmp_path / "y.wav"]
    for path in bad:
        path.write_bytes(b"")
    good = [write_wav(tmp_path / f"{k}.wav", tone(2.0, 16000, 200 + 50 * k), 16000) for k in range(6)]
    clips = [ClipInfo(str(p)) for p in bad + good]
    alone = WindowDataset(clips, 1.0, AUDIO, seed=3)
    for others in range(4):  # y.wav and 0-3 files of other runs, listed before x.wav fails here
        told = SkipList()
        for name in [str(bad[1])] + [f"/elsewhere/{k}.wav" for k in range(others)]:
            told.add(name, "found bad by another worker")
        beside = WindowDataset(clips, 1.0, AUDIO, seed=3, skip_list=told)
        for epoch in range(8):
            a, b = alone[(0, epoch)], beside[(0, epoch)]
            assert (a["path"], a["start"]) == (b["path"], b["start"])
            assert torch.equal(a["audio"], b["audio"])


def test_a_dataset_fails_only_when_no_clip_is_left_and_says_why(media, tmp_path):
    clips = [ClipInfo(str(media[name])) for name in ("zero", "corrupt", "truncated", "wav16k")]
    dataset = WindowDataset(clips, 1.0, AV, skip_list=str(tmp_path / "skip.tsv"))
    with pytest.raises(RuntimeError) as caught:
        dataset[0]
    assert str(caught.value).startswith(
        "none of the 4 clips can be read: 2 x not a readable media container, 1 x empty file, 1 x no video stream"
    )


def test_a_known_skip_list_is_not_retried(media, tmp_path, monkeypatch):
    skip_file = tmp_path / "skip.tsv"
    SkipList(skip_file).add(str(media["corrupt"]), "corrupt")
    opened = []
    real_probe = decode.probe
    monkeypatch.setattr(decode, "probe", lambda path, **kw: opened.append(str(path)) or real_probe(path, **kw))
    dataset = WindowDataset(
        [ClipInfo(str(media["corrupt"])), ClipInfo(str(media["av"]))], 1.0, AV, skip_list=str(skip_file)
    )
    assert len(dataset) == 2  # the skip-listed clip keeps its index (a resumed run draws the same clips)...
    assert dataset[0]["path"] == dataset[1]["path"] == str(media["av"])  # ...but is replaced, never opened
    assert set(opened) == {str(media["av"])}


def test_a_skip_list_that_leaves_out_earlier_entries_still_appends_its_own(tmp_path):
    skip_file = tmp_path / "skip.tsv"
    SkipList(skip_file).add("/data/a.wav", "corrupt")
    skip_file.write_text(skip_file.read_text() + "/data/to")  # and a line torn by a killed run
    fresh = SkipList(skip_file, earlier=False)  # an evaluation: every file is read again
    assert "/data/a.wav" not in fresh and len(fresh) == 0
    fresh.add("/data/b.wav", "empty file (0 bytes)")
    assert fresh.reasons == {"/data/b.wav": "empty file (0 bytes)"} and SkipList(skip_file, earlier=False).reasons == {}
    assert set(SkipList(skip_file).reasons) == {"/data/a.wav", "/data/to", "/data/b.wav"}


def test_a_skip_list_that_leaves_out_earlier_entries_of_an_empty_file_reads_the_first_one_added(tmp_path, monkeypatch):
    """An empty file counted as one line to leave out: the first entry another process added was not seen."""
    monkeypatch.setattr(skiplist, "REFRESH_S", 0.0)
    skip_file = tmp_path / "skip.tsv"
    skip_file.write_text("")
    fresh = SkipList(skip_file, earlier=False)
    SkipList(skip_file).add("/data/bad.wav", "corrupt")  # (by a loader worker)
    assert "/data/bad.wav" in fresh and fresh.reasons == {"/data/bad.wav": "corrupt"}


def test_a_skip_list_looks_at_its_file_for_other_processes_entries_about_once_a_second(tmp_path, monkeypatch):
    """A lookup per clip cost a stat each: 0.3 s per 100k clips on a local disk, more on network storage."""
    skip_file = tmp_path / "skip.tsv"
    monkeypatch.setattr(skiplist, "REFRESH_S", 1e9)  # (a loaded machine's second passes in no time)
    skips = SkipList(skip_file)
    skips.add("/data/bad.wav", "corrupt")
    other = SkipList(skip_file)
    assert "/data/bad.wav" in other  # (read when made)
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: stats.append(a) or real_stat(*a, **k))
    assert not other.holds_all([ClipInfo(f"/data/{k}.wav") for k in range(1000)]) and len(stats) <= 1
    skips.add("/data/worse.wav", "empty file (0 bytes)")  # by another worker
    assert "/data/worse.wav" not in other  # (looked at a moment ago: only an addition of its own reads it)
    monkeypatch.setattr(skiplist, "REFRESH_S", 0.0)  # (as a second later)
    assert "/data/worse.wav" in other


def test_a_skip_list_sees_an_entry_added_within_the_clock_tick_of_the_last_it_read(tmp_path, monkeypatch):
    """Files are stamped from a coarse clock: two appends a millisecond apart can share a modification time,
    and one that a process read between them hid the second from it until the file changed again."""
    monkeypatch.setattr(skiplist, "REFRESH_S", 0.0)
    skip_file = tmp_path / "skip.tsv"
    SkipList(skip_file).add("/data/bad.wav", "corrupt")
    other = SkipList(skip_file)
    stamp = skip_file.stat().st_mtime_ns
    SkipList(skip_file).add("/data/worse.wav", "empty file (0 bytes)")
    os.utime(skip_file, ns=(stamp, stamp))  # (the same tick)
    assert "/data/worse.wav" in other


def test_two_workers_that_find_one_bad_file_within_a_second_list_and_log_it_once(tmp_path, caplog):
    """The second has not looked at the file since the first added it: its addition reads the file
    under the lock first, so it writes no second line and logs no second warning."""
    skip_file = tmp_path / "skip.tsv"
    first, second = SkipList(skip_file), SkipList(skip_file)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        assert first.add("/data/bad.wav", "corrupt") and not second.add("/data/bad.wav", "corrupt")
    assert skip_file.read_text() == "/data/bad.wav\tcorrupt\n"
    assert [r.getMessage() for r in caplog.records].count(
        f"skipping /data/bad.wav: corrupt (added to {skip_file})"
    ) == 1


def test_notes_of_reads_by_runs_that_are_over_are_cleared():
    """A worker stopped mid-read by its loader's shutdown leaves its note; a later run whose parent and
    worker got the same pids, and whose worker died outside a read, would have had that file blamed."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    over, running = Path(reading_notes._note(gone.pid, 11)), Path(reading_notes._note(os.getpid(), 12))
    over.write_text("/data/good.wav")
    running.write_text("/data/being-read.wav")  # a live worker's, of this process
    reading_notes.clear_stale()
    assert not over.exists() and reading_notes.left_by(12) == "/data/being-read.wav" and not running.exists()


def test_a_note_left_by_a_former_holder_of_this_runs_pid_blames_no_file_of_this_run():
    """In a container every run's trainer gets the same pid: a note a killed run left read as this run's
    worker's, and its file went into the skip list when a worker died outside a read."""
    from ttt_mm.processes import alive

    left = Path(reading_notes._note(os.getpid(), 4242))
    left.write_text("/data/innocent.mp4")
    os.utime(left, (alive._STARTED - 60, alive._STARTED - 60))
    reading_notes.clear_stale()
    assert not left.exists() and reading_notes.left_by(None) is None


def test_a_skip_list_line_torn_by_a_killed_run_does_not_swallow_the_next_entry(tmp_path):
    skip_file = tmp_path / "skip.tsv"
    skip_file.write_text("/data/a.wav\tcorrupt\n/data/b.wa")  # killed while appending b
    SkipList(skip_file).add("/data/c.wav", "empty file (0 bytes)")
    assert SkipList(skip_file).reasons == {
        "/data/a.wav": "corrupt",
        "/data/b.wa": "(cut short by a killed run)",
        "/data/c.wav": "empty file (0 bytes)",
    }


def test_a_number_cut_short_in_a_skip_list_line_is_not_read_once_the_line_is_ended(tmp_path):
    """A run killed while writing 'x.wav<TAB>damaged<TAB>12.5' left '...<TAB>1'; the next run's line break
    made it a whole line that read as 'readable to 1 s' (a resumed stream counted too few windows)."""
    skip_file = tmp_path / "skip.tsv"
    skip_file.write_text("/data/x.wav\tdamaged\t1")
    SkipList(skip_file).add("/data/c.wav", "empty file (0 bytes)")
    after = SkipList(skip_file)
    assert after.reasons["/data/x.wav"] == "damaged" and after.read_to == {}


def test_a_skip_list_reads_back_names_with_tabs_line_breaks_and_backslashes_exactly(tmp_path):
    skip_file = tmp_path / "skip.tsv"
    reasons = {
        "/data/a\tb.wav": "corrupt",
        "/data/two\nlines.wav": "empty file (0 bytes)",
        "/data/c\rd.wav": "file not found",
        "/data/back\\slash\\t.wav": "odd \\ reason",
        "/data/\u2028\x85e.wav": "corrupt",  # line separators of str.splitlines
        "/data/\udcff.wav": "corrupt",  # a byte that is not UTF-8, as os.listdir gives it
    }
    SkipList(skip_file).add_many(reasons, total=len(reasons))
    assert skip_file.read_bytes().count(b"\n") == len(reasons)  # one line each
    assert all(line.count(b"\t") == 1 for line in skip_file.read_bytes().splitlines())
    assert SkipList(skip_file).reasons == reasons  # as a resumed run reads it


def test_reasons_are_counted_by_kind():
    reasons = [
        "opening the video failed: the container is truncated or corrupt (av_read_frame failed with 1 (invalid data))",
        "opening the video failed: the container is truncated or corrupt (av_read_frame failed with 2 (end of file))",
        "10 NaN/Inf audio samples, the first at 0.250 s",
        "decoder crashed: SIGABRT (terminate called after throwing an instance of 'std::bad_alloc')",
    ]
    assert reason_kind(reasons[2]) == "NaN/Inf audio samples"
    assert count_reasons(reasons) == (
        "2 x opening the video failed: the container is truncated or corrupt, 1 x NaN/Inf audio samples, "
        "1 x decoder crashed: SIGABRT"
    )
    # the numbers a kind keeps are given as the range they span (they were shown as "N")
    short = [f"only {s} s of audio in the clip (min_seconds=0.5)" for s in ("0.42", "0.125", "0.3")]
    assert reason_kind(short[0]) == "only N s of audio in the clip"
    assert count_reasons(short + reasons[3:]) == (
        "3 x only 0.125 to 0.42 s of audio in the clip, 1 x decoder crashed: SIGABRT"
    )
    assert count_reasons(short[:1] * 2) == "2 x only 0.42 s of audio in the clip"
    assert count_reasons(["gain 1e-05", "gain 2e-03"]) == "2 x gain 1e-05 to 2e-03"
    # signed numbers keep their sign (they read "-3 to 7 dB"); a span's hyphen is no sign
    assert count_reasons(["peak -3 dB", "peak -7 dB"]) == "2 x peak -7 to -3 dB"
    assert reason_kind("seconds 0-60 of 90") == "seconds N-N of N"
    assert count_reasons(["({x})", "(3 {})"]) == "1 x ({x}), 1 x (3 {})"  # (typed in a skip list: read as typed)
    # a count that is part of the reason stays; two numbers that vary are not run together as ranges
    frames = [f"8 of the 8 video frames read from frame {a} to {a + 7} do not decode: over half" for a in (32, 40)]
    assert count_reasons(frames) == "2 x 8 of the 8 video frames read from frame N to N do not decode: over half"
    assert count_reasons(frames[:1]) == "1 x 8 of the 8 video frames read from frame 32 to 39 do not decode: over half"


def test_a_damaged_mp3_is_read_without_the_decoders_own_notes_on_stderr(tmp_path):
    """libmpg123 printed "Note: Illegal Audio-MPEG-Header ... Trying to resync" for every window read
    across the damage: lines of its own beside the one log line a bad file gets."""
    path = tmp_path / "a.mp3"
    sf.write(path, tone(20.0, 16000), 16000, format="MP3")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4000] = bytes(4000)
    path.write_bytes(bytes(data))
    script = (
        "from ttt_mm.data import MediaError, ReadSpec, iter_windows\n"
        "read = 0\n"
        "try:\n"
        f"    for _ in iter_windows({str(path)!r}, 2.0, ReadSpec(('audio',))):\n"
        "        read += 1\n"
        "except MediaError:\n"
        "    pass\n"
        "print(read)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and int(done.stdout) >= 6, done.stderr  # (read across the damage)
    assert "Note:" not in done.stderr and "libmpg123" not in done.stderr, done.stderr


@pytest.mark.parametrize("name", ["notes.flac", "notes.mp3", "notes.wav"])
def test_a_text_file_named_as_audio_is_not_a_media_container(tmp_path, name):
    """FFmpeg picks a format from the name alone and reports an audio stream with no rate or channels;
    the reason must say what the file is, not that decoding its audio failed."""
    path = tmp_path / name
    path.write_text("these are my notes, not a recording\n")
    with pytest.raises(MediaError, match="not a readable media container"):
        decode.probe(path, verify=True)


def test_an_audio_codec_without_a_decoder_costs_the_audio_stream_only(tmp_path):
    """FFmpeg lists such a stream with no codec context: the probe crashed on it, and the whole file,
    its readable video too, was left out as "decoder exited"."""
    wav = without_audio_decoder(write_wav(tmp_path / "a.wav", tone(1.0, 16000), 16000))
    avi = write_video(tmp_path / "v.avi", seconds=2.0, audio_codec="pcm_s16le", video_codec="mpeg4")
    avi = without_audio_decoder(avi)
    assert describe(str(wav))["error"] == NO_AUDIO_DECODER
    record = describe(str(avi))
    assert "error" not in record and record["audio_error"] == NO_AUDIO_DECODER
    assert record["has_video"] and record["video_duration"] == pytest.approx(2.0)


@pytest.mark.parametrize("hole", [0.5, 0.7])
def test_a_corrupt_middle_is_read_as_silence_in_place_and_said(tmp_path, hole, caplog):
    """libsndfile refuses the file; decord stopped at the first bad packet (the intact second half
    dropped without a word), and PyAV dropped the bad packets (all that follows moved earlier). Now
    the stretch reads as silence where it was, and a run that uses the file says so."""
    path = write_wav(tmp_path / "a.flac", tone(3.0, 44100), 44100)
    data = bytearray(path.read_bytes())
    at = int(len(data) * hole)
    data[at : at + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    record = describe(str(path))
    assert "error" not in record and record["audio_backend"] == "pyav"
    assert record["audio_duration"] == pytest.approx(3.0, abs=0.01) and 0.02 < record["audio_gaps"] < 0.3
    audio = decode.read_audio(path, 0.0, None, 16000, backend="pyav")
    heard = audio != 0
    assert not heard[round(hole * 3 * 16000) - 4000 : round(hole * 3 * 16000) + 4000].all()  # silence near the hole
    tail = slice(len(audio) - 8000, len(audio) - 100)  # after the hole: the tone still on time
    assert torch.allclose(audio[tail], torch.from_numpy(tone(3.0, 16000))[tail], atol=0.02)
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        index_clips([ClipInfo(str(path))], AUDIO, cache_dir=tmp_path / "cache")
    (line,) = [r.getMessage() for r in caplog.records if "inside the audio is missing" in r.getMessage()]
    assert line.startswith(f"{path}: {record['audio_gaps']:.3f} s inside the audio is missing")


def test_a_file_whose_name_is_not_utf8_is_read(tmp_path):
    """soundfile encodes a name as UTF-8 and raised on the surrogate Python gives an undecodable byte:
    the file was left out as "decoder exited"; another backend reads it."""
    folder = os.fsencode(tmp_path)
    for suffix, write in ((b".wav", lambda p: write_wav(p, tone(1.0, 16000), 16000)), (b".mp4", write_video)):
        name = os.fsdecode(folder + b"/bad\xffname" + suffix)
        write(tmp_path / ("source" + os.fsdecode(suffix))).rename(name)
        record = describe(name)
        assert "error" not in record and record["audio_duration"] > 0.9
        assert len(decode.read_audio(name, 0.0, 0.5)) == 8000


def test_an_ogg_that_ffmpeg_cannot_open_has_no_video_to_blame(tmp_path):
    """libsndfile reads its header, FFmpeg not at all: the file was said to have an unreadable video
    stream beside its audio ("audio: ...; video: not a readable media container")."""
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 88200).astype(np.float32)
    whole = write_wav(tmp_path / "whole.ogg", noise, 44100).read_bytes()
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(whole[:4841])  # its headers and part of the first audio page
    record = describe(str(cut))
    assert record["has_video"] is False and "video_error" not in record


def test_an_mp4_cut_before_its_index_says_it_may_be_truncated(tmp_path):
    """FFmpeg says "moov atom not found" only on its log, which is silenced: the reason was only that
    the file is not a readable media container."""
    whole = write_video(tmp_path / "whole.mp4", seconds=1.0, fps=10, width=64, height=48).read_bytes()
    assert whole.index(b"mdat") < whole.index(b"moov")  # (written without faststart: the index comes last)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: whole.index(b"moov") - 4])  # every frame, but not the index
    with pytest.raises(MediaError, match=r"container \(ffmpeg could not open it; an MP4/MOV file without its index"):
        decode.probe(cut)
    cut.write_bytes(whole[: len(whole) // 3])
    reason = describe(str(cut))["error"]
    assert reason.endswith("cut short before its index, the moov box: truncated, or still being written?)")
    assert skiplist.reason_kind(reason) == "not a readable media container"  # counted with the others
    with pytest.raises(MediaError, match=r"container \(ffmpeg could not open it\)$"):  # not an MP4: no guess
        (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
        decode.probe(tmp_path / "noise.mp4")


def test_a_container_read_only_as_a_raw_video_stream_is_refused_as_damaged(tmp_path):
    """A QuickTime file with its header zeroed: FFmpeg found JPEG frames in it by their content, and the
    file was read as a video at a made-up 25 fps, its sound gone without a word."""
    raw = tmp_path / "frames.mjpeg"
    with av.open(str(raw), "w", format="mjpeg") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24")
            out.mux(stream.encode(frame.reformat(format="yuvj420p")))
        out.mux(stream.encode(None))
    assert decode.probe(raw).has_video  # named as what it is: a stream of frames, read as one
    damaged = tmp_path / "clip.mov"
    damaged.write_bytes(raw.read_bytes())
    with pytest.raises(MediaError, match=r"a damaged MOV container: FFmpeg finds only a raw mjpeg stream in it \("):
        decode.probe(damaged)
    elementary = tmp_path / "stream.m4v"  # FFmpeg's own name for a raw MPEG-4 stream: read as one
    with av.open(str(elementary), "w", format="m4v") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    assert decode.probe(elementary).has_video


def _windows_out_of_order(path, backend, starts, seconds, fps):
    """Windows of a video read in the order given, each against the same frames of the whole video
    read in order from its start: whether each matches."""
    whole = decode.read_video(path, 0.0, None, fps=fps, size=32, backend=backend)
    return [
        torch.equal(
            decode.read_video(path, s, seconds, fps=fps, size=32, backend=backend),
            whole[round(s * fps) :][: round(seconds * fps)],
        )
        for s in starts
    ]


def test_a_video_whose_last_key_frame_is_damaged_is_read_from_its_start(tmp_path, caplog):
    """A zeroed key frame: every frame after it that a seek reaches (through that key frame) failed in
    both backends, so the verified probe refused the whole file (a real MP4 with 30 KB zeroed at its
    middle), where decoding in order passes over the damage with the pictures before it. (A window that
    seeks there now decodes on into it from the key frame before, as in order: `_PyAVVideo.read`.)"""
    path = write_video(tmp_path / "clip.mp4", seconds=6.0, fps=10, audio_rate=None, gop=20)
    with av.open(str(path)) as container:
        keys = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size and p.is_keyframe]
    assert len(keys) == 3  # (at 0, 2 and 4 s)
    data = bytearray(path.read_bytes())
    pos, size = keys[-1]
    data[pos + 8 : pos + size] = bytes(size - 8)  # (its start kept: the packet still parses as one)
    path.write_bytes(bytes(data))
    record = describe(str(path))
    assert "error" not in record and record["video_backend"] == decode.FROM_START and record["n_frames"] == 60
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        window = decode.read_video(path, 4.0, 2.0, fps=10, size=32, backend=decode.FROM_START)
    assert len(window) == 20 and "do not decode (damaged data)" in caplog.text  # (said, the picture before stands in)
    for backend in ("decord", "pyav"):  # (a seek into the last two seconds lands on the damaged key frame)
        assert torch.equal(decode.read_video(path, 5.0, 1.0, fps=10, size=32, backend=backend), window[10:])
    decode.clear_caches()  # from Python, without the index: the first read checks the choice and goes on to it
    assert torch.equal(decode.read_video(path, 4.0, 2.0, fps=10, size=32), window)


def test_video_in_an_mpeg_transport_stream_is_read_from_its_start(tmp_path, caplog):
    """Seeks in MPEG program and transport streams land seconds off the frame asked for, so every
    window is reached by decoding from the first frame: windows out of order are the right pictures
    (each frame of this clip differs from the others), and the run names such videos once, with how
    to make them seekable."""
    path = write_video(tmp_path / "clip.ts", seconds=3.0, fps=10, width=64, height=48)
    record = describe(str(path))
    assert "error" not in record and "video_error" not in record
    assert record["video_backend"] == decode.FROM_START and record["n_frames"] == 30 and record["has_audio"]
    whole = decode.read_video(path, 0.0, None, fps=10, size=32, backend=decode.FROM_START)
    assert len({frame.numpy().tobytes() for frame in whole}) == 30  # (a window of other frames would show)
    assert all(_windows_out_of_order(path, decode.FROM_START, [2.0, 0.5, 1.2, 0.0, 1.9], 0.8, 10))
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        index_clips([ClipInfo(str(path))], VIDEO, cache_dir=tmp_path / "cache")
    (line,) = [r.getMessage() for r in caplog.records if "read by decoding from the first frame" in r.getMessage()]
    assert line.startswith("1 video whose seeks land on other pictures")
    assert line.endswith(
        f": {path}; re-encoding makes them seekable, e.g. ffmpeg -i in.ts -c:v libx264 -c:a aac out.mp4"
    )
    shutil.copy(path, tmp_path / "another.ts")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):  # (named in order, not as the clips came)
        index_clips([ClipInfo(str(path)), ClipInfo(str(tmp_path / "another.ts"))], VIDEO, cache_dir=tmp_path / "cache")
    (line,) = [r.getMessage() for r in caplog.records if "read by decoding from the first frame" in r.getMessage()]
    assert line.startswith("2 videos whose seeks") and f": {tmp_path / 'another.ts'}, {path}; re-encoding" in line


def test_windows_read_in_order_go_on_decoding_from_where_the_last_one_ended(tmp_path, monkeypatch):
    """A video read from its start opens the file once for windows read in order, also when the next
    window begins on the last one's last picture (a source slower than the rate read: 25 fps read at
    60); each window is what a fresh read of it gives."""
    path = write_false_key_frames(tmp_path / "false_keys.mp4", false_keys=(40, 50))
    starts = np.arange(0.0, 3.2, 0.3)
    fresh = []
    for s in starts:
        decode.clear_caches()
        fresh.append(decode.read_video(path, s, 0.3, fps=60, size=32, backend=decode.FROM_START))
    opened = []
    real_open = video._PyAVVideo._open
    monkeypatch.setattr(video._PyAVVideo, "_open", lambda reader: opened.append(1) or real_open(reader))
    decode.clear_caches()
    in_order = [decode.read_video(path, s, 0.3, fps=60, size=32, backend=decode.FROM_START) for s in starts]
    assert len(opened) == 1 and all(torch.equal(a, b) for a, b in zip(in_order, fresh))


def test_key_frames_that_cannot_start_a_decode_send_the_video_to_be_read_from_its_start(tmp_path):
    """Frames after a seek to such a key frame are other pictures than decoding in order gives (a cut
    or damaged stream, as a real cockatoo clip has): the probe finds it, and the video is read from its
    first frame, so a window mid-file holds the right pictures."""
    path = write_false_key_frames(tmp_path / "false_keys.mp4", false_keys=(40, 50))
    record = describe(str(path))
    assert "error" not in record and record["video_backend"] == decode.FROM_START and record["n_frames"] == 90
    starts = [1.6, 0.4, 2.0, 1.7]  # (around the false key frames at 1.6 s and 2 s, back to the start, on)
    assert all(_windows_out_of_order(path, decode.FROM_START, starts, 0.8, 25))
    try:  # a seek there lands off: other pictures, or none
        landed = all(_windows_out_of_order(path, "pyav", starts, 0.8, 25))
    except MediaError:
        landed = False
    assert not landed
    sound = describe(str(write_false_key_frames(tmp_path / "sound.mp4", false_keys=())))
    assert "error" not in sound and sound["video_backend"] == "decord" and sound["n_frames"] == 90


def test_a_video_too_long_to_read_from_its_start_is_refused_with_how_to_reencode_it(tmp_path, monkeypatch):
    """Each window read out of order decodes every frame before it: past `FROM_START_MAX_PIXELS` that is
    too slow, and the file is left out with why and the command that makes it seekable."""
    monkeypatch.setattr(probing, "FROM_START_MAX_PIXELS", 64 * 48 * 80)
    keys = describe(str(write_false_key_frames(tmp_path / "false_keys.mp4", false_keys=(40, 50))))
    assert keys["error"] == (
        "video too long to decode from its start for each window (90 frames of 64x48, over 2e+05 decoded pixels) "
        "(it is read from its start, as seeks in it land on other pictures: key frames that cannot start a decode, "
        "or reordered frames decord seeks past); re-encode it, e.g. ffmpeg -i in.mp4 -c:v libx264 -c:a aac out.mp4"
    )
    assert reason_kind(keys["error"]) == "video too long to decode from its start for each window; re-encode it"
    ts = describe(str(write_video(tmp_path / "clip.ts", seconds=9.0, fps=10, width=64, height=48)))
    assert ts["video_error"].startswith("video too long to decode from its start for each window (90 frames")
    assert "an MPEG program or transport stream" in ts["video_error"] and "error" not in ts  # its audio reads
    assert ts["video_error"].endswith("ffmpeg -i in.ts -c:v libx264 -c:a aac out.mp4")


def test_a_transport_stream_cut_inside_a_group_of_pictures_is_read_from_its_first_decodable_frame(tmp_path):
    """As recordings of broadcasts start: the frames before the first that decodes refer to pictures cut
    off, so they never come out of the decoder, and the index leaves them out. The timeline keeps its
    origin (the sound stays in place), and the first picture stands for the time before it. A stream
    cut after its codec's parameters, which only its start held, decodes nothing: refused, said so."""
    whole = tmp_path / "whole.ts"
    out = av.open(str(whole), "w")
    stream = out.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt, stream.codec_context.gop_size = 160, 120, "yuv420p", 25
    stream.options = {"preset": "ultrafast"}
    for i in range(150):  # frame i is gray (7 i) mod 256
        frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 7 % 256, np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *(stream.encode() if i == 149 else ())]:
            out.mux(packet)
    out.close()
    data = whole.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[188 * (len(data) // 188 // 10) :])  # at a transport packet, a tenth of the way in
    record = describe(str(cut))
    assert "error" not in record and record["video_backend"] == decode.FROM_START and record["n_frames"] == 125
    with av.open(str(cut)) as container:  # what decoding in order gives, by time from the stream's start
        video = container.streams.video[0]
        shown = [
            ((f.pts - video.start_time) * video.time_base, f.to_ndarray(format="gray")[60, 80])
            for f in container.decode(video)
        ]
    assert shown[0][0] > 0.4  # (the first picture comes half a second in)
    for t in (0.0, 0.3, 1.0, 2.5, 4.9):
        expected = [gray for start, gray in shown if start <= t + 1e-6] or [shown[0][1]]
        gray = decode.read_video(cut, t, 1e-3, fps=1, size=32, backend=decode.FROM_START)[0].float().mean()
        assert abs(gray - int(expected[-1])) <= 2, t
    plain = write_video(tmp_path / "plain.ts", seconds=6.0, fps=25, width=64, height=48).read_bytes()
    (tmp_path / "headless.ts").write_bytes(plain[188 * (len(plain) // 188 // 3) :])
    reason = describe(str(tmp_path / "headless.ts"))["video_error"]  # (nothing to re-encode: no hint)
    assert re.fullmatch(
        r"none of the video's \d+ frames decodes \(its codec's parameters are missing, or it is damaged\)", reason
    )


def test_a_video_no_backend_decodes_is_not_sent_to_be_read_from_its_start(tmp_path):
    """Reading from the start is the way round seeks that land off, not a third decoder: a video whose
    frames neither backend decodes keeps their reason, without a hint about seeks."""
    path = write_video(tmp_path / "clip.mp4", seconds=1.0, fps=10, width=64, height=48, audio_rate=None, faststart=True)
    data = bytearray(path.read_bytes())
    start = data.index(b"mdat") + 4 + 200
    data[start:] = bytes(len(data) - start)  # every frame's data zeroed, the index kept
    path.write_bytes(bytes(data))
    assert describe(str(path))["error"] == (
        "opening the video failed: the video stream cannot be decoded (no frames or unknown format)"
    )


OPEN_GOP = {"x264-params": "open-gop=1:keyint=24:min-keyint=24:scenecut=0:bframes=3"}


@pytest.mark.parametrize(
    ("name", "codec", "options", "backend"),
    [
        ("closed_gop.mp4", "libx264", None, "decord"),
        ("open_gop.mp4", "libx264", OPEN_GOP, "pyav"),  # decord, skipping across its key frames, lands off
        ("mpeg2.mkv", "mpeg2video", None, "pyav"),
    ],
)
def test_videos_with_reordered_frames_go_to_a_backend_whose_seeks_land(tmp_path, name, codec, options, backend):
    """The check compares with decoding in order frame by frame (decord's skip_frames, mixed in, landed
    frames off), and reads a window's spaced frames across a key frame as well as a lone frame."""
    record = describe(str(write_reordered_video(tmp_path / name, codec, options)))
    assert "error" not in record and record["video_backend"] == backend and record["n_frames"] == 120


@pytest.mark.parametrize(
    ("false_keys", "read_by"), [((40, 50), decode.FROM_START), ((), "decord")], ids=["lands_off", "lands"]
)
def test_a_read_without_a_backend_checks_the_seeks_of_the_one_a_plain_probe_chose(tmp_path, false_keys, read_by):
    """From Python, a read without an index: a probe without ``verify`` chooses decord by its headers
    alone, and the first read checks its seeks before using it. Where they land off, the read goes to
    the backend that reads the file right, also after that probe; where they land, it stays, and later
    reads check no more."""
    path = write_false_key_frames(tmp_path / "keys.mp4", false_keys=false_keys)
    decode.clear_caches()
    assert decode.probe(path, streams=("video",)).video_backend == "decord"  # (headers only: it looks fine)
    checks = []
    real_check = probing.seeks_land_exactly
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probing, "seeks_land_exactly", lambda *a: checks.append(a[1]) or real_check(*a))
        windows = [decode.read_video(path, s, 0.8, fps=25, size=32) for s in (1.6, 0.4, 2.0)]
        decode.read_video(path, 0.0, 0.4, fps=25, size=32)
    assert checks[0] == "decord" and (checks == ["decord"]) == (read_by == "decord")
    assert backends.recorded(str(path), "video") == (read_by, True)
    whole = decode.read_video(path, 0.0, None, fps=25, size=32, backend=read_by)  # (in order from the start)
    assert all(torch.equal(w, whole[round(s * 25) :][:20]) for w, s in zip(windows, (1.6, 0.4, 2.0)))


def test_a_video_that_ends_in_zero_bytes_is_read_as_far_as_its_data_goes(tmp_path):
    """An unfinished download of an MP4 whose index comes first: the frames that lie in the zeros were
    indexed and failed the check of the video's end, so the whole file was left out ("8 of the 8 video
    frames ... do not decode: over half") with advice to re-encode it."""
    path = tmp_path / "unfinished.mp4"
    out = av.open(str(path), "w", options={"movflags": "faststart"})
    stream = out.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt, stream.options = 64, 48, "yuv420p", {"preset": "ultrafast"}
    rng = np.random.default_rng(0)
    for _ in range(48):  # 6 s of noise: frames of a few KB each
        img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
    out.mux(stream.encode())
    out.close()
    data = bytearray(path.read_bytes())
    data[-(errors.ZEROED_TAIL_BYTES + 8192) :] = bytes(errors.ZEROED_TAIL_BYTES + 8192)
    path.write_bytes(data)
    decode.clear_caches()
    record = describe(str(path))
    assert "error" not in record and record["zeroed_tail"] >= errors.ZEROED_TAIL_BYTES
    assert 1.0 < record["video_duration"] < record["video_stated"] == 6.0
    last = decode.read_video(str(path), record["video_duration"] - 1.0, 1.0, fps=8, size=32)
    assert len(last) == 8 and last.float().std() > 10  # (the frames before the zeros: noise, not gray stand-ins)


def test_a_zeroed_tail_is_said_with_the_length_of_the_streams_read(caplog):
    """A video model's run said "read as far as its data goes, 20.053 s" (the audio's length), then "the
    video decodes to 19.700 s" of the same file."""
    info = MediaInfo("z.mp4", 10**6, True, True, audio_duration=20.053, video_duration=19.7, zeroed_tail=70000)
    clip = replace(ClipInfo("z.mp4"), info=info)
    for spec, seconds in ((VIDEO, "19.700"), (AUDIO, "20.053"), (AV, "19.700")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
            say_how_read(Selection([clip], {}, {}), spec, [clip])
        assert caplog.messages == [
            "z.mp4: its last 70000 bytes are zeros (space a download or copy set aside and did not fill?): read as "
            f"far as its data goes, {seconds} s"
        ]


def test_an_ogg_stream_damaged_in_its_first_page_of_sound_states_the_length_its_last_page_gives(tmp_path):
    """libsndfile and FFmpeg both start such a stream at its first whole page, and FFmpeg's duration
    counts from there: the file was read 0.9 s short of its length (its start lost) without a word."""
    ogg = tmp_path / "damaged.ogg"
    sf.write(ogg, (0.3 * np.random.default_rng(0).standard_normal(3 * 16000)).astype(np.float32), 16000, "VORBIS")
    data = bytearray(ogg.read_bytes())
    pages = [m.start() for m in re.finditer(b"OggS", data)]  # (two pages of headers, then sound)
    data[(pages[2] + pages[3]) // 2] ^= 0xFF
    ogg.write_bytes(data)
    info = decode.probe(str(ogg), ("audio",), verify=True)
    assert info.audio_backend == "soundfile" and info.audio_duration < 2.9 and info.audio_stated == 3.0
    whole = tmp_path / "whole.ogg"
    sf.write(whole, (0.3 * np.random.default_rng(0).standard_normal(3 * 16000)).astype(np.float32), 16000, "VORBIS")
    assert decode.probe(str(whole), ("audio",), verify=True).audio_stated is None


def test_libsndfile_reads_a_file_without_its_zeroed_tail_and_a_wav_with_its_silence(tmp_path, monkeypatch):
    """Asked an Ogg file's length, libsndfile scanned back through all of a zeroed tail at every open: 0.8 s
    for each window of a file ending in 2 GB of zeros. It is handed the data only, and reads the same
    samples; a WAV's zero bytes at its end are silence, read as samples."""
    whole, tailed, wav = tmp_path / "whole.ogg", tmp_path / "tailed.ogg", tmp_path / "quiet_end.wav"
    sf.write(whole, (0.3 * np.random.default_rng(0).standard_normal(8 * 16000)).astype(np.float32), 16000, "VORBIS")
    tailed.write_bytes(whole.read_bytes() + bytes(4 * errors.ZEROED_TAIL_BYTES))
    write_wav(wav, np.concatenate([tone(1.0, 16000), np.zeros(5 * 16000, np.float32)]), 16000)
    opened = []
    real_soundfile = sf.SoundFile

    def recorded(source, *args, **kwargs):  # (what libsndfile is handed: the path, or data ending where)
        if isinstance(source, str):
            opened.append((source, None))
        else:
            at = source.tell()
            opened.append((source.name, source.seek(0, os.SEEK_END)))
            source.seek(at)
        return real_soundfile(source, *args, **kwargs)

    monkeypatch.setattr(sf, "SoundFile", recorded)
    decode.clear_caches()
    got = decode.read_audio(str(tailed), 5.0, 2.0, 16000, backend="soundfile")
    assert torch.equal(got, decode.read_audio(str(whole), 5.0, 2.0, 16000, backend="soundfile"))
    assert {end for name, end in opened if name == str(tailed)} == {whole.stat().st_size}  # (the data, not the zeros)
    end = decode.read_audio(str(wav), 4.0, 2.0, 16000, backend="soundfile")
    assert len(end) == 32000 and not end.any()  # (the silence read, to the WAV's end: its zeros are samples)


def test_a_file_that_ends_in_zero_bytes_is_said_to_be_unfinished(tmp_path, caplog):
    """A half-finished download, its rest zeros (space a torrent sets aside): an Ogg stream states no
    length, so its first half was read as the whole file, called usable without a word. A WAV that
    ends in digital silence ends in zero bytes too, and is whole."""
    ogg, wav = tmp_path / "unfinished.ogg", tmp_path / "quiet_end.wav"
    sf.write(ogg, (0.3 * np.random.default_rng(0).standard_normal(60 * 16000)).astype(np.float32), 16000, "VORBIS")
    data = bytearray(ogg.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    ogg.write_bytes(data)
    write_wav(wav, np.concatenate([tone(1.0, 16000), np.zeros(5 * 16000, np.float32)]), 16000)
    record, whole = describe(str(ogg)), describe(str(wav))
    assert "error" not in record and record["zeroed_tail"] >= len(data) // 2 and record["audio_duration"] < 40
    assert "error" not in whole and "zeroed_tail" not in whole
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        index_clips([ClipInfo(str(ogg)), ClipInfo(str(wav))], AUDIO, cache_dir=tmp_path / "cache")
    (line,) = [m for m in caplog.messages if "bytes are zeros" in m]
    assert line == (
        f"{ogg}: its last {record['zeroed_tail']} bytes are zeros (space a download or copy set aside and did "
        f"not fill?): read as far as its data goes, {record['audio_duration']:.3f} s"
    )
