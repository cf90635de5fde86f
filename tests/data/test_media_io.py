"""Decoding through `ttt_mm.data.decode`: probe, frames by timestamp, crop, audio windows and resampling."""

from __future__ import annotations

import logging
import math
import pickle
from fractions import Fraction
from types import SimpleNamespace

import av
import decord
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from mediafiles import gray, tone, write_short_flac, write_video, write_wav

from ttt_mm.data import decode
from ttt_mm.data.decode import audio, backends
from ttt_mm.data.decode.audio import read_samples
from ttt_mm.data.decode.errors import NothingDecodes
from ttt_mm.data.decode.pcm_header import stated_frames


def test_probe_reports_both_streams(media):
    info = decode.probe(media["av"])
    assert info.has_audio and info.has_video
    assert info.n_frames == 90 and info.fps == pytest.approx(30.0)
    assert info.size == (160, 120)
    assert info.video_duration == pytest.approx(3.0, abs=1e-3)
    assert info.audio_duration == pytest.approx(3.0, abs=0.1)  # AAC pads the last frame
    assert info.audio_backend == "pyav"  # (decord mixes channels by summing them)
    wav = decode.probe(media["wav44k"])
    assert (wav.has_audio, wav.has_video, wav.sample_rate, wav.channels) == (True, False, 44100, 2)
    assert wav.duration == pytest.approx(2.5)


def test_frames_are_sampled_by_timestamp(media):
    frames = decode.read_video(media["av"], start=0.5, duration=1.0, fps=8, size=64)
    assert frames.shape == (8, 3, 64, 64) and frames.dtype == torch.uint8
    expected = [gray(int(np.floor((0.5 + k / 8) * 30 + 1e-6)), 90) for k in range(8)]
    assert frames.float().mean(dim=(1, 2, 3)).tolist() == pytest.approx(expected, abs=1.5)


def test_variable_frame_rate_uses_real_timestamps(tmp_path):
    times = [0, 20, 100, 120, 200, 220, 300, 320, 400, 420, 500, 520]  # ms, irregular
    path = write_video(tmp_path / "vfr.mkv", audio_rate=None, times_ms=times)
    frames = decode.read_video(path, 0.0, None, fps=8, size=32)
    shown = [max(i for i, t in enumerate(times) if t <= 125 * k) for k in range(len(frames))]
    assert len(frames) == 5
    assert frames.float().mean(dim=(1, 2, 3)).tolist() == pytest.approx([gray(i, 12) for i in shown], abs=1.5)


def test_resize_keeps_aspect_and_crops_the_center(media):
    frame = decode.read_video(media["bands"], 0.0, 0.1, fps=8, size=128)[0]  # 320x240 red|green|blue thirds
    row = frame[:, 64].T.int()  # [128, 3]
    # short side 240 -> 128, long side 320 -> 171, crop 21 px each side: red ends near column 36
    assert row[10].argmax() == 0 and row[40].argmax() == 1 and row[90].argmax() == 1 and row[120].argmax() == 2


def test_video_window_is_cut_at_the_end(media):
    assert len(decode.read_video(media["video_only"], 1.5, 4.0, fps=8, size=32)) == 4
    assert len(decode.read_video(media["video_only"], 5.0, 1.0, fps=8, size=32)) == 0
    assert len(decode.read_video(media["video_only"], 1.5, math.inf, fps=8, size=32)) == 4  # (to the end)
    whole = decode.read_audio(media["av"], 0.5, None)
    assert torch.equal(decode.read_audio(media["av"], 0.5, math.inf), whole)  # (an OverflowError)
    for path in (media["video_only"], "/no/such/file.mp4"):  # a bad argument, before any file is opened
        for start in (-1.0, math.nan, math.inf):
            with pytest.raises(ValueError, match=f"^start must be a number of seconds >= 0 for video, got {start}$"):
                decode.read_video(path, start, 1.0)
        for start in (math.nan, -math.inf):
            with pytest.raises(ValueError, match=f"^start must be a number of seconds; got {start}$"):
                decode.read_audio(path, start, 1.0)
        for read in (decode.read_audio, decode.read_video):  # (a negative one read nothing without a word)
            for duration in (-1.0, math.nan):
                with pytest.raises(
                    ValueError, match=f"^duration must be a number of seconds >= 0, .*; got {duration}$"
                ):
                    read(path, 0.0, duration)
        for bad, said in (  # (fps=0 read no frame, size=0 frames of no pixel: neither said a word)
            ({"fps": 0}, r"^fps must be a number of frames per second > 0; got 0$"),
            ({"fps": math.inf}, r"^fps must be a number .*; got inf$"),
            ({"size": 0}, r"^size must be a whole number of pixels >= 1; got 0$"),
            ({"size": 32.5}, r"^size must be a whole number of pixels >= 1; got 32.5$"),
        ):
            with pytest.raises(ValueError, match=said):
                decode.read_video(path, **{"start": 0.0, "duration": 1.0} | bad)
        with pytest.raises(ValueError, match=r"^sample_rate must be a whole number .*>= 1; got 0$"):
            decode.read_audio(path, 0.0, 1.0, sample_rate=0)


def test_decords_float32_frame_times_still_land_on_their_frames():
    """decord's timestamps are float32: 10 min into a 25 fps video a start rounded up by 3e-5 s was passed
    over (within 1e-6 s) for the frame before it, at 5 fps 8 frames of 20 off by one; and a last frame's
    end rounded up counted one frame more."""
    exact = np.arange(20000) / 25  # (800 s)
    stamps = exact.astype(np.float32).astype(np.float64)
    index = decode.video.VideoIndex(
        stamps, stamps[-1] + 0.04, 25.0, (32, 32), slack=decode.video._float32_slack(stamps, stamps[-1] + 0.04)
    )
    times = decode.video._times(index, 700.0, 4.0, 5.0)
    assert decode.video._shown_at(index, times).tolist() == list(range(17500, 17600, 5))
    short = (np.arange(498) / 30).astype(np.float32).astype(np.float64)  # 30 fps for 16.6 s
    end = float(np.float32(16.6))
    assert end > 16.6  # (rounded up: 83.000002 frames at 5 fps)
    index = decode.video.VideoIndex(short, end, 30.0, (32, 32), slack=decode.video._float32_slack(short, end))
    assert len(decode.video._times(index, 0.0, None, 5.0)) == 83
    # a window's sliver at that end still reads the last frame: none made the window, and the file, fail
    assert decode.video._times(index, 16.6, 0.5, 5.0).tolist() == [16.6]


def test_video_windows_decode_only_their_frames(media, monkeypatch):
    asked: list[list[int]] = []
    original = decord.VideoReader.get_batch
    monkeypatch.setattr(
        decord.VideoReader, "get_batch", lambda self, idx: asked.append(list(idx)) or original(self, idx)
    )
    decode.read_video(media["av"], 2.0, 0.5, fps=8, size=32)
    assert asked[-1] == [60, 63, 67, 71]  # frames at 2.0, 2.125, 2.25, 2.375 s of a 30 fps file


def test_wav_windows_are_exact_slices(media):
    whole, _ = sf.read(media["wav16k"], dtype="float32")
    window = decode.read_audio(media["wav16k"], 1.25, 0.5, 16000)
    assert window.dtype == torch.float32 and torch.equal(window, torch.from_numpy(whole[20000:28000]))
    assert len(decode.read_audio(media["wav16k"], 2.0, 5.0, 16000)) == 8000  # cut at the end
    padded = decode.read_audio(media["wav16k"], -0.25, 0.5, 16000)  # left context before the start
    assert torch.equal(padded[:4000], torch.zeros(4000)) and torch.equal(padded[4000:], torch.from_numpy(whole[:4000]))


def test_ogg_windows_near_the_end_read_the_samples_a_read_from_the_start_gives(tmp_path):
    """libsndfile's seeks into an Ogg file's last page gave samples up to 1% off, so an evaluation's
    scores there moved with its window length."""
    rng = np.random.default_rng(0)
    t = np.arange(41600) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    path = tmp_path / "tone.ogg"
    sf.write(path, wave, 16000, format="OGG", subtype="VORBIS")
    whole = decode.read_audio(path, 0.0, None, 16000)
    for start in (0.4, 1.9, 2.05, 2.3, 2.5, 2.58):  # the last page: the final 0.6 s
        window = decode.read_audio(path, start, 0.1, 16000)
        first = round(start * 16000)
        assert torch.equal(window, whole[first : first + len(window)]), start


def test_a_damaged_ogg_stream_is_refused_by_libsndfile_and_read_by_pyav_with_the_gap_in_place(tmp_path):
    """In a Vorbis file with its middle bytes zeroed, libsndfile's seeks landed seconds later and its
    reads passed over the damage, without an error: every window there held the same later audio,
    and the file was verified good."""
    path = tmp_path / "damaged.ogg"
    with sf.SoundFile(path, "w", 16000, 1, format="OGG", subtype="VORBIS") as f:
        f.write(tone(40.0, 16000))
    data = bytearray(path.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = bytes(third)
    path.write_bytes(data)
    with pytest.raises(decode.MediaError, match=r"a seek to sample \d+ landed at \d+ \(a damaged stream\?\)"):
        read_samples(str(path), 16.0, 1.0, 16000, "soundfile")
    with pytest.raises(decode.MediaError, match=r"passed over \d+ of them \(a damaged stream\?\)"):
        read_samples(str(path), 0.0, 30.0, 16000, "soundfile")
    info = decode.probe(path, streams=("audio",), verify=True)
    assert info.audio_backend == "pyav" and info.audio_duration == 40.0 and info.audio_gaps > 5  # silence in place


def test_an_ogg_file_read_through_in_one_pass_is_found_silent_or_not(tmp_path):
    silent, sound = tmp_path / "silent.ogg", tmp_path / "sound.ogg"
    sf.write(silent, np.zeros(5 * 16000, np.float32), 16000, format="OGG", subtype="VORBIS")
    sf.write(sound, tone(5.0, 16000), 16000, format="OGG", subtype="VORBIS")
    assert decode.probe(silent, streams=("audio",), verify=True).silent
    assert not decode.probe(sound, streams=("audio",), verify=True).silent


def test_an_ogg_file_cut_after_its_length_was_taken_says_where_it_ends(tmp_path):
    """A file zeroed from its middle on while a run read it: the read said "passed over -8000 of them"."""
    path = tmp_path / "a.ogg"
    sf.write(path, (0.3 * np.random.default_rng(0).standard_normal(20 * 16000)).astype(np.float32), 16000, "VORBIS")
    taken = sf.info(path)  # (as the run found it)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    path.write_bytes(data)
    ends = sf.info(path).frames
    with pytest.raises(
        decode.MediaError, match=rf"from sample {ends + 8000} \(of 320000\): the stream ends at sample {ends},"
    ):
        audio._sf_read(str(path), taken, ends + 8000, ends + 24000)


def test_a_short_damaged_ogg_stretch_that_windowed_reads_pass_over_is_found_by_one_pass(tmp_path):
    """Random bytes over 1% of a 130 s Vorbis file, in its middle: each 60 s read of the probe's scan
    read its full count (the damaged seconds made up from later audio) and each seek landed right, so
    the file was verified good and its windows there were read seconds early, without a word. From
    Python, a read across the damage came early, where the index's choice (PyAV) reads it in place."""
    noise = (0.3 * np.random.default_rng(2).standard_normal(130 * 16000)).astype(np.float32)
    whole = tmp_path / "whole.ogg"
    sf.write(whole, noise, 16000, format="OGG", subtype="VORBIS")
    assert audio.ogg_peak(str(whole), sf.info(whole)) == pytest.approx(np.abs(sf.read(whole)[0]).max())
    data = bytearray(whole.read_bytes())
    middle, span = len(data) // 2, len(data) // 100
    data[middle : middle + span] = np.random.default_rng(3).integers(0, 256, span, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.ogg"
    path.write_bytes(data)
    decode.clear_caches()  # from Python, without the index: a probe by the headers alone chooses libsndfile
    assert decode.probe(path, streams=("audio",)).audio_backend == "soundfile"
    across = decode.read_audio(path, 50.0, 30.0)  # (libsndfile's read across the damage fails: PyAV reads it)
    assert torch.equal(across, read_samples(str(path), 50.0, 30.0, 16000, "pyav"))
    decode.read_audio(whole, 50.0, 1.0)  # (read through once, found whole: libsndfile reads it on)
    assert backends.recorded(str(whole), "audio") == ("soundfile", True)
    with pytest.raises(decode.MediaError, match=r"libsndfile passes over \d+\.\d\d s of this Ogg stream"):
        audio.ogg_peak(str(path), sf.info(path))
    info = decode.probe(path, streams=("audio",), verify=True)
    assert info.audio_backend == "pyav" and info.audio_duration == 130.0 and info.audio_gaps > 1
    track = read_samples(str(path), 100.0, 30.0, 16000, "pyav")  # (after the damage: in its place)
    assert torch.equal(track, read_samples(str(whole), 100.0, 30.0, 16000, "pyav"))


@pytest.mark.parametrize(
    ("rate", "channels", "seconds", "zeroed"),
    [
        (22050, 2, 4, 0.02),  # in reads of 2**18 rows: the first stops short at the damage, the next goes on
        (16000, 1, 20, 0.005),  # in reads of 2**18 rows: each read gets its full count
    ],
)
def test_damage_an_ogg_pass_in_large_reads_hides_is_found_and_read_by_pyav(tmp_path, rate, channels, seconds, zeroed):
    """A few zeroed bytes in a Vorbis file that libsndfile's one pass, in reads of 2**18 rows, read
    whole: the file was verified good, and every window read across the damage failed ("file ends at
    sample N but its header promises M") or held other samples than PyAV's, in training and embed."""
    noise = (0.3 * np.random.default_rng(0).standard_normal((seconds * rate, channels))).astype(np.float32)
    path = tmp_path / "damaged.ogg"
    sf.write(path, noise, rate, format="OGG", subtype="VORBIS")
    data = bytearray(path.read_bytes())
    start, span = len(data) // 2, round(len(data) * zeroed)
    data[start : start + span] = bytes(span)
    path.write_bytes(data)
    with pytest.raises(decode.MediaError, match=r"libsndfile passes over \d+\.\d\d s of this Ogg stream"):
        audio.ogg_peak(str(path), sf.info(path))
    info = decode.probe(path, streams=("audio",), verify=True)
    assert info.audio_backend == "pyav" and info.audio_duration == seconds and info.audio_gaps > 0
    decode.clear_caches()  # from Python: a probe by the headers alone chooses libsndfile, which the first read checks
    assert torch.equal(decode.read_audio(path, 0.0, None), read_samples(str(path), 0.0, seconds, 16000, "pyav"))


def test_an_ogg_stretch_the_demuxer_cannot_parse_is_a_gap_and_the_rest_is_read(tmp_path):
    """FFmpeg's Ogg demuxer stops at a zeroed stretch longer than a page (a decoder passes over a bad
    packet; the demuxer raised, PyAV gave up and decord read the file only up to the damage)."""
    noise = (0.3 * np.random.default_rng(0).standard_normal(60 * 16000)).astype(np.float32)
    whole = tmp_path / "whole.ogg"
    sf.write(whole, noise, 16000, format="OGG", subtype="VORBIS")
    data = bytearray(whole.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = bytes(third)
    path = tmp_path / "damaged.ogg"
    path.write_bytes(data)
    with av.open(str(path)) as container, pytest.raises(av.error.FFmpegError):
        for _ in container.demux(container.streams.audio[0]):
            pass
    track, placement = audio.placed_track(str(path), 16000, "pyav")
    reference, _ = audio.placed_track(str(whole), 16000, "pyav")
    assert len(track) == len(reference) and 15 < placement.gaps < 30  # the stretch, give or take a second's search
    assert torch.equal(track[-16000 * 10 :], reference[-16000 * 10 :])  # what follows it, in its place
    info = decode.probe(path, streams=("audio",), verify=True)
    assert info.audio_backend == "pyav" and info.audio_duration == 60.0 and info.audio_gaps == placement.gaps


def test_an_unparsable_ogg_stretch_ending_near_the_track_end_still_leaves_the_tail_read(tmp_path):
    """The search for where demuxing works again doubles its step: damage ending inside the last
    doubling (here from about 21 s to 38 s of 50: tries at +16 s, still damaged, then +32 s, past the
    end) gave up, and the 12 readable seconds after it were lost."""
    noise = (0.3 * np.random.default_rng(1).standard_normal(50 * 16000)).astype(np.float32)
    whole = tmp_path / "whole.ogg"
    sf.write(whole, noise, 16000, format="OGG", subtype="VORBIS")
    data = bytearray(whole.read_bytes())
    data[int(len(data) * 0.42) : int(len(data) * 0.76)] = bytes(int(len(data) * 0.76) - int(len(data) * 0.42))
    path = tmp_path / "damaged.ogg"
    path.write_bytes(data)
    track, placement = audio.placed_track(str(path), 16000, "pyav")
    reference, _ = audio.placed_track(str(whole), 16000, "pyav")
    assert len(track) == len(reference) and 15 < placement.gaps < 20
    assert torch.equal(track[-16000 * 10 :], reference[-16000 * 10 :])


def test_the_search_past_damage_that_runs_to_the_end_stops():
    """Its last try is at the track's end, ``after + (end - after)``, which can fall an ulp short of
    ``end``: the search then tried that place again forever (here, for a track of 118.93 s)."""

    class NothingReads:
        duration, seeks = 118930664, 0  # (microseconds, as FFmpeg gives it)

        def seek(self, offset, stream=None):
            self.seeks += 1
            assert self.seeks < 100, "the search does not stop"

        def demux(self, stream):
            return iter(())

    container, stream = NothingReads(), SimpleNamespace(time_base=Fraction(1, 48000))
    assert audio._resumed(container, stream, after=float(1369351 * Fraction(1, 48000))) is None
    assert container.seeks == 8  # 1, 2, 4, ... s on, up to the end


def test_audio_after_an_unparsable_ogg_stretch_starts_once_the_decoder_has_settled(tmp_path):
    """The decoder went on past the stretch with what it held before it, so Opus's first 80 ms after
    it were wrong by up to the tone's whole amplitude: it now starts afresh there, and the audio it
    decodes before it settles (`audio.PRE_ROLL`) is part of the gap."""
    t = np.arange(30 * 48000) / 48000
    noise = 0.05 * np.random.default_rng(0).standard_normal(len(t))
    whole = tmp_path / "whole.opus"
    sf.write(whole, (0.3 * np.sin(2 * np.pi * 440 * t) + noise).astype(np.float32), 48000, format="OGG", subtype="OPUS")
    data = bytearray(whole.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = bytes(third)
    path = tmp_path / "damaged.opus"
    path.write_bytes(data)
    track, placement = audio.placed_track(str(path), 48000, "pyav")
    reference, _ = audio.placed_track(str(whole), 48000, "pyav")
    after = int(torch.nonzero(track == 0)[-1]) + 1  # where the gap ends
    assert placement.gaps > 5 and after > 15 * 48000
    assert (track[after : after + 1920] - reference[after : after + 1920]).abs().max() < 0.1  # (0.38 before)
    assert torch.equal(track[-48000 * 5 :], reference[-48000 * 5 :])


def test_resampled_windows_join_into_the_one_shot_resample(media):
    stereo, rate = sf.read(media["wav44k"], dtype="float32")
    reference = AF.resample(torch.from_numpy(stereo).mean(dim=1), rate, 16000)  # mono, then resample
    windows = torch.cat([decode.read_audio(media["wav44k"], t, 0.25, 16000) for t in np.arange(0, 2.5, 0.25)])
    assert windows.shape == reference.shape
    assert torch.allclose(windows, reference, atol=1e-6)
    assert torch.allclose(decode.read_audio(media["wav44k"], 0.0, None, 16000), reference, atol=1e-6)


def test_audio_windows_read_only_their_samples(media, monkeypatch):
    counts: list[int] = []
    original = sf.SoundFile.read
    monkeypatch.setattr(
        sf.SoundFile, "read", lambda self, frames=-1, **kw: counts.append(frames) or original(self, frames, **kw)
    )
    decode.read_audio(media["flac16k"], 2.0, 0.25, 16000)
    assert counts == [4000]


def test_container_audio_is_mono_resampled_and_sliced(media):
    audio = decode.read_audio(media["av44k"], 0.0, None, 16000)  # stereo 44.1 kHz AAC in mkv
    assert audio.dim() == 1 and len(audio) == pytest.approx(48000, abs=2048)
    spectrum = torch.fft.rfft(audio[4000:20000]).abs()
    assert int(spectrum.argmax()) == pytest.approx(440, abs=2)  # 16000 samples: 1 Hz per bin
    window = decode.read_audio(media["av44k"], 1.0, 0.5, 16000)
    assert torch.equal(window, audio[16000:24000])


def test_readers_are_cached_per_file(media, monkeypatch):
    opened: list[str] = []
    original = decord.VideoReader.__init__
    monkeypatch.setattr(
        decord.VideoReader, "__init__", lambda self, *a, **k: opened.append(a[0]) or original(self, *a, **k)
    )
    for t in (0.0, 0.5, 1.0, 1.5):
        decode.read_video(media["video_only"], t, 0.5, fps=8, size=32)
    # one native open for the index, one small reader that checks its seeks (`probing.chosen`: the video
    # has no key frame after its first, so no seek to check from a fresh reader), one scaled reader for all
    assert len(opened) == 3


def test_windows_deep_into_long_files_read_only_the_window(tmp_path, monkeypatch):
    flac = tmp_path / "long.flac"
    sf.write(flac, np.tile(np.linspace(-0.5, 0.5, 16000, dtype=np.float32), 10 * 60), 16000)  # 10 minutes
    video = write_video(tmp_path / "long.mp4", seconds=10 * 60, fps=1, width=32, height=32, audio_rate=None)
    samples: list[int] = []
    frames: list[list[int]] = []
    read, batch = sf.SoundFile.read, decord.VideoReader.get_batch
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, n=-1, **kw: samples.append(n) or read(self, n, **kw))
    monkeypatch.setattr(decord.VideoReader, "get_batch", lambda self, idx: frames.append(list(idx)) or batch(self, idx))
    audio = decode.read_audio(flac, 500.0, 2.0)
    assert samples == [32000] and torch.allclose(audio[:4], torch.linspace(-0.5, 0.5, 16000)[:4])
    clip = decode.read_video(video, 500.0, 2.0, fps=8, size=32)
    assert clip.shape == (16, 3, 32, 32) and frames[-1] == [500, 501]


def test_decode_tokenize_invert_round_trip(media):
    from ttt_mm.tokenizers import AudioTokenizer, VideoTokenizer

    frames = decode.read_video(media["av"], 1.0, 1.0, fps=8, size=32)
    video = VideoTokenizer(dim=16, size=32)
    tokens = video({"video": frames[None]})
    assert torch.equal(video.invert(tokens.targets, tokens.target_stats)["video"][0], frames)
    audio = decode.read_audio(media["wav16k"], 0.5, 1.0)
    mel = AudioTokenizer(dim=16)
    inverted = mel.invert(mel({"audio": audio[None]}).targets)["audio"]
    assert torch.allclose(inverted, mel.log_mel(audio[None]) * 4.0 - 9.0, atol=1e-4)
    assert inverted.shape == (1, 100, 80)


@pytest.mark.parametrize("missing", [0.0005, 0.05, decode.audio.AUDIO_SHORTFALL_S])
def test_audio_ending_a_little_before_its_header_is_read_as_far_as_it_goes(tmp_path, caplog, missing):
    path = write_short_flac(tmp_path / "short.flac", 2.0, missing)  # 0.0005 s: 8 samples, like a real Opus album track
    assert sf.info(path).frames == 32000 + round(missing * 16000)
    with caplog.at_level(logging.DEBUG, logger="ttt_mm.data.decode.audio"):
        audio = decode.read_audio(path, 1.5, None, 16000, backend="soundfile")
    assert len(audio) == 8000 + round(missing * 16000)
    assert torch.allclose(audio[:8000], torch.from_numpy(tone(2.0, 16000)[24000:]), atol=1e-4)
    assert audio[8000:].abs().max() == 0  # the missing tail reads as silence
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] and "before its header says" in caplog.text
    assert decode.probe(path, verify=True).audio_backend == "soundfile"  # a good file, not a failure


def test_every_window_of_audio_that_ends_a_little_early_reads_as_one_pass_does(tmp_path):
    """libsndfile's FLAC reader raises after filling a window that ends near such a file's end, and its
    seek fails in the last frames: neither may depend on where a window falls."""
    path = write_short_flac(tmp_path / "short.flac", 10.0, 0.05)
    whole = torch.from_numpy(tone(10.0, 16000))
    for start, seconds in ((8.985, 1.0), (9.0, 1.0), (9.94, 0.06), (9.96, 0.08)):
        audio = decode.read_audio(path, start, seconds, 16000, backend="soundfile")
        lo = round(start * 16000)
        real = whole[lo : lo + len(audio)]
        assert len(audio) == round(seconds * 16000)
        assert torch.allclose(audio[: len(real)], real, atol=1e-4) and not audio[len(real) :].any()


def test_a_read_that_fills_its_window_but_raises_away_from_the_end_is_an_error(tmp_path, monkeypatch):
    """libsndfile fills frames it lost sync in (a corrupt frame mid-file) and then raises: only near
    the header's end is such a read kept (the shortfall above)."""
    path = write_short_flac(tmp_path / "long.flac", 10.0, 0.0)

    def filled_then_raised(path, lo, count, info):
        return np.zeros((count, info.channels), np.float32), count, RuntimeError("flac decoder lost sync")

    monkeypatch.setattr(decode.audio, "_sf_rows", filled_then_raised)
    with pytest.raises(decode.MediaError, match=r"cannot read samples 64000-80000 \(truncated or corrupt\?\)"):
        decode.read_audio(path, 4.0, 1.0, 16000, backend="soundfile")
    assert len(decode.read_audio(path, 9.0, 1.0, 16000, backend="soundfile")) == 16000  # at the end: kept


@pytest.mark.parametrize("missing", [decode.audio.AUDIO_SHORTFALL_S + 0.01, 0.5])
def test_audio_ending_well_before_its_header_is_not_read_with_the_header(tmp_path, missing):
    path = write_short_flac(tmp_path / "short.flac", 2.0, missing)
    promised = 32000 + round(missing * 16000)
    with pytest.raises(decode.MediaError, match=f"file ends at sample 32000 but its header promises {promised}"):
        decode.read_audio(path, 1.5, None, 16000, backend="soundfile")
    assert len(decode.read_audio(path, 0.0, 1.0, 16000, backend="soundfile")) == 16000  # windows before the end read
    info = decode.probe(path, verify=True)  # the header is wrong: a backend that does not trust it reads what is there
    assert info.audio_backend != "soundfile" and info.audio_duration == pytest.approx(2.0, abs=0.01)
    assert info.audio_stated == pytest.approx(2.0 + missing)  # (and the index says so when the file is used)


def test_a_cut_flac_read_from_python_is_read_as_far_as_it_goes_as_the_index_reads_it(tmp_path):
    """A FLAC cut to 30% of its bytes: the index reads it with PyAV as far as it goes, and a read from
    Python (a backend chosen by the headers: libsndfile) raised "file ends at sample N but its header
    promises M"."""
    whole = write_wav(tmp_path / "whole.flac", tone(20.0, 16000), 16000)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 3 // 10])
    decode.clear_caches()
    assert decode.probe(cut, streams=("audio",)).audio_backend == "soundfile"
    read = decode.read_audio(cut, 0.0, None)
    assert 4.0 < len(read) / 16000 < 8.0 and torch.equal(read, read_samples(str(cut), 0.0, None, 16000, "pyav"))
    assert backends.recorded(str(cut), "audio") == ("pyav", True)  # (later reads go to PyAV at once)
    info = decode.probe(cut, verify=True)  # (its native format as libsndfile states it: it was left unknown)
    assert (info.audio_backend, info.sample_rate, info.channels, info.audio_stated) == ("pyav", 16000, 1, 20.0)
    with pytest.raises(decode.MediaError, match="file ends at sample"):  # (a backend asked for is used as it is)
        decode.read_audio(cut, 0.0, None, backend="soundfile")


@pytest.mark.parametrize(
    "fmt,subtype,channels,endian",
    [
        ("WAV", "PCM_16", 2, "FILE"),
        ("WAV", "FLOAT", 1, "FILE"),
        ("WAV", "PCM_16", 1, "BIG"),  # RIFX: sizes big-endian
        ("RF64", "PCM_16", 1, "FILE"),  # the data size in the ds64 chunk
        ("WAVEX", "PCM_24", 2, "FILE"),
        ("AIFF", "PCM_24", 1, "FILE"),
    ],
)
def test_a_wav_or_aiff_cut_short_says_how_long_its_header_says_it_is(tmp_path, fmt, subtype, channels, endian):
    """libsndfile counts only the frames present: a truncated WAV read as a shorter, whole file."""
    suffix = "aiff" if fmt == "AIFF" else "wav"
    whole = tmp_path / f"whole.{suffix}"
    data = np.full((32000, channels), 0.1, dtype=np.float32)
    sf.write(whole, data, 16000, subtype=subtype, format=fmt, endian=endian)
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    info = decode.probe(cut, verify=True)
    assert info.audio_backend == "soundfile" and info.audio_duration == pytest.approx(1.0, abs=0.01)
    assert info.audio_stated == pytest.approx(2.0, abs=2e-4)  # (within a few frames: the sizes are exact)
    assert decode.probe(whole).audio_stated is None


def test_a_wav_cut_by_a_third_of_a_second_after_an_odd_sized_chunk_says_so(tmp_path):
    """Chunks of odd size are padded to even (a LIST chunk of tags, say): read without the pad, the
    data chunk was not found. A shortfall of 0.3 s is past what encoders leave out (0.1 s)."""
    path = tmp_path / "tagged.wav"
    sf.write(path, np.full(32000, 0.1, dtype=np.float32), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[at:at] = b"LIST" + (5).to_bytes(4, "little") + b"INFO!" + b"\0"  # 5 bytes and their pad
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(bytes(data[: len(data) - round(0.3 * 16000) * 2]))
    info = decode.probe(cut, verify=True)
    assert info.audio_duration == pytest.approx(1.7, abs=0.01) and info.audio_stated == pytest.approx(2.0, abs=0.01)


def test_resampled_audio_before_the_first_sample_is_silence_and_a_whole_read_is_as_long_as_pyavs(tmp_path, media):
    """A window's left context at the file's start: the resampling filter rang there (up to 7e-4). A
    whole read of 44101 frames at 16 kHz has ceil(16000.36) samples, as PyAV's read has."""
    early = decode.read_audio(media["wav44k"], -0.01, 0.02, 16000)
    assert len(early) == 320 and not early[:160].any() and early[160:].abs().max() > 0.01
    odd = write_wav(tmp_path / "odd.wav", tone(44101 / 44100, 44100)[:44101], 44100)
    assert len(decode.read_audio(odd, 0.0, None, 16000, backend="soundfile")) == 16001
    assert len(decode.read_audio(odd, 0.0, None, 16000, backend="pyav")) == 16001


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000])
def test_a_wav_whose_header_states_no_length_is_read_as_it_is(tmp_path, placeholder):
    """A recorder writing to a pipe leaves the data size at a placeholder (SoX's is 0x7FFFF000): nothing
    is stated, and the whole file is not called truncated."""
    path = tmp_path / "piped.wav"
    sf.write(path, np.full((16000, 2), 0.1, dtype=np.float32), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = placeholder.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert stated_frames(path, 16000) is None and decode.probe(path).audio_stated is None


def test_a_sliver_of_a_video_is_cropped_before_it_is_scaled(tmp_path, monkeypatch):
    """A 16 x 400 video at 32 px was scaled to 32 x 800 to keep a 32 x 32 crop (a 4 x 2000 one took
    2 GB for one window); its central square is cut first, and the picture is the same."""
    path = write_video(tmp_path / "thin.mp4", seconds=1.0, fps=8, width=400, height=16, audio_rate=None, bands=True)
    asked = []
    frames = decode.video._frames
    monkeypatch.setattr(decode.video, "_frames", lambda *a: asked.append(a[3:5]) or frames(*a))
    cropped_first = decode.read_video(path, 0.0, 1.0, 8, 32, backend="pyav")
    monkeypatch.setattr(decode.video, "SLIVER_ASPECT", 1000)
    scaled_first = decode.read_video(path, 0.0, 1.0, 8, 32, backend="pyav")
    assert asked == [(400, 16), (800, 32)]  # its own size; before, the whole frame scaled to 32 px high
    assert cropped_first.shape == scaled_first.shape == (8, 3, 32, 32)
    assert (cropped_first.float() - scaled_first.float()).abs().mean() < 8  # (two scalers: bilinear, bicubic)
    monkeypatch.setattr(decode.video, "SLIVER_ASPECT", 4)
    asked.clear()
    wide = write_video(tmp_path / "wide.mp4", seconds=0.5, fps=8, width=400, height=64, audio_rate=None)
    assert decode.read_video(wide, 0.0, 0.5, 8, 32, backend="pyav").shape == (4, 3, 32, 32)
    assert asked == [(200, 32)]  # larger than the frame size: scaled down whole, never decoded at full size


@pytest.mark.parametrize("kind", [decode.MediaError, NothingDecodes])
def test_a_media_error_keeps_its_kind_path_and_reason_across_processes(kind):
    """Errors raised in a DataLoader worker reach the main process pickled: the skip list reads the reason,
    and the probe tells a stream with nothing to re-encode by its kind."""
    back = pickle.loads(pickle.dumps(kind("/data/a b.mp4", "why it failed")))
    assert type(back) is kind and (back.path, back.reason) == ("/data/a b.mp4", "why it failed")
    assert str(back) == "/data/a b.mp4: why it failed"
