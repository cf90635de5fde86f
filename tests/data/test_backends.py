"""Decoder backends: where decord and PyAV both open a file they agree within one frame; PyAV reads
what decord cannot; soundfile and PyAV give the same samples."""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from mediafiles import gray, rotate_display, tone, trim_by_edit_list, write_video, write_wav

from ttt_mm.data import ClipInfo, ReadSpec, decode
from ttt_mm.data.index import index_files
from ttt_mm.data.selection import index_clips


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("backends")
    times = [0, 40, 90, 100, 180, 250, 260, 330, 400, 480, 520, 600, 690, 700, 790]  # ms, irregular
    return {
        "h264_mp4": write_video(root / "h264.mp4", seconds=2.0, fps=30),
        "vfr_mkv": write_video(root / "vfr.mkv", audio_rate=None, times_ms=times),
        "mpeg4_ac3_avi": write_video(
            root / "ac3.avi", seconds=2.0, fps=25, video_codec="mpeg4", audio_codec="ac3", audio_rate=48000
        ),
        "odd_rate_mov": write_video(root / "odd.mov", seconds=1.5, fps=23, width=96, height=64, audio_rate=None),
        "slow_mp4": write_video(root / "slow.mp4", seconds=2.0, fps=5, width=64, height=48, audio_rate=None),
        # cut from a longer recording: its timestamps start at 10 s
        "late_start_mkv": write_video(
            root / "late.mkv", audio_rate=None, times_ms=[10_000 + 40 * i for i in range(30)]
        ),
        "rotated_mp4": rotate_display(
            write_video(root / "rotated.mp4", audio_rate=None, width=96, height=64, bands=True)
        ),
    }


@pytest.mark.parametrize(
    "name", ["h264_mp4", "vfr_mkv", "mpeg4_ac3_avi", "odd_rate_mov", "late_start_mkv", "rotated_mp4"]
)
def test_decord_and_pyav_agree_within_one_frame(videos, name):
    """A late start (PyAV's timeline began at 10 s: 10 s of the first frame, and the file twice as
    long) and a rotated phone video (PyAV showed it sideways) included."""
    path = videos[name]
    (d_starts, d_duration, d_fps), (p_starts, p_duration, p_fps) = (
        decode.video_timeline(path, b) for b in ("decord", "pyav")
    )
    frame = 1.0 / d_fps
    assert len(d_starts) == len(p_starts)
    assert np.abs(d_starts - p_starts).max() <= frame + 1e-6
    assert abs(d_duration - p_duration) <= frame + 1e-6
    shown = {b: decode.read_video(path, 0.0, None, fps=8, size=32, backend=b) for b in ("decord", "pyav")}
    assert shown["decord"].shape == shown["pyav"].shape
    assert (shown["decord"].float() - shown["pyav"].float()).abs().mean() < 4  # the same pictures, the same way up
    brightness = {b: frames.float().mean(dim=(1, 2, 3)) for b, frames in shown.items()}
    assert torch.allclose(brightness["decord"], brightness["pyav"], atol=2.0)  # the same source frame each time


def test_pyav_windows_read_in_order_equal_one_read(videos):
    path = videos["h264_mp4"]
    whole = decode.read_video(path, 0.0, None, fps=8, size=32, backend="pyav")
    decode.clear_caches()
    windows = torch.cat(
        [decode.read_video(path, t, 0.5, fps=8, size=32, backend="pyav") for t in np.arange(0, 2.0, 0.5)]
    )
    backwards = decode.read_video(path, 0.5, 0.5, fps=8, size=32, backend="pyav")  # a seek back to a key frame
    assert torch.equal(windows, whole) and torch.equal(backwards, whole[4:8])
    expected = [gray(int(np.floor(k / 8 * 30 + 1e-6)), 60) for k in range(16)]
    assert whole.float().mean(dim=(1, 2, 3)).tolist() == pytest.approx(expected, abs=1.5)


def test_pyav_windows_that_show_the_same_frame_equal_one_read(videos):
    """At 5 frames/s read at 8, two windows can start and end on one frame: the second asks again for
    the frame the first just decoded, which a reader that only goes forward has passed."""
    path = videos["slow_mp4"]
    whole = decode.read_video(path, 0.5, 0.5, fps=8, size=32, backend="pyav")
    decode.clear_caches()
    parts = [decode.read_video(path, t, 0.25, fps=8, size=32, backend="pyav") for t in (0.5, 0.75)]
    assert torch.equal(torch.cat(parts), whole)


def test_pyav_reads_video_that_decord_cannot(tmp_path):
    path = write_video(tmp_path / "av1.mkv", seconds=1.0, fps=8, audio_rate=None, video_codec="libsvtav1")
    with pytest.raises(decode.MediaError):
        decode.read_video(path, 0.0, 0.5, backend="decord")
    info = decode.probe(path, verify=True)
    assert info.video_backend == "pyav" and info.n_frames == 8 and info.video_duration == pytest.approx(1.0)
    frames = decode.read_video(path, 0.0, None, fps=8, size=32)  # the backend probe chose
    assert frames.shape == (8, 3, 32, 32)
    assert frames.float().mean(dim=(1, 2, 3)).tolist() == pytest.approx([gray(i, 8) for i in range(8)], abs=4.0)


@pytest.mark.parametrize("start, end", [(1.0, 4.0), (0.0, 2.0), (1.0, 3.0)], ids=["head", "tail", "both"])
def test_frames_an_edit_list_hides_are_left_out_and_decord_is_not_trusted_with_them(tmp_path, start, end):
    """A stream-copy cut (``ffmpeg -ss -t -c copy``): decord listed the hidden frames but decoded only
    the shown ones, so each window held pictures a second later than its time (or, past the shown end,
    the last one repeated); PyAV indexed the hidden packets as frames it then could not return."""
    written = write_video(
        tmp_path / "cut.mp4", seconds=4.0, fps=25, width=64, height=48, audio_rate=None,
        muxer_options={"use_editlist": "1"},
    )  # fmt: skip
    path = trim_by_edit_list(written, start, end)
    with pytest.raises(decode.MediaError, match="edit list hides"):
        decode.video_timeline(path, "decord")
    info = decode.probe(path, streams=("video",), verify=True)
    assert info.video_backend == "pyav" and info.n_frames == round((end - start) * 25)
    assert info.video_duration == pytest.approx(end - start)
    frames = decode.read_video(path, 0.0, None, fps=5, size=32)
    assert len(frames) == round((end - start) * 5)
    expected = [gray(round(start * 25) + 5 * k, 100) for k in range(len(frames))]  # source frames, 5 apart
    assert frames.float().mean(dim=(1, 2, 3)).tolist() == pytest.approx(expected, abs=1.5)


def test_pyav_reads_audio_that_decord_cannot_and_the_video_is_kept(tmp_path):
    """Like an AVI with MPEG-4 video and AC3 sound whose audio decord's AudioReader rejects."""
    path = write_video(tmp_path / "dfpwm.avi", seconds=2.0, fps=25, audio_rate=22050, audio_codec="dfpwm")
    with pytest.raises(decode.MediaError, match="no decoder for this codec"):
        decode.read_audio(path, backend="decord")
    info = decode.probe(path, verify=True)
    assert (info.video_backend, info.audio_backend) == ("decord", "pyav") and info.n_frames == 50
    audio = decode.read_audio(path, 0.5, 1.0, 16000)
    spectrum = torch.fft.rfft(audio).abs()
    assert int(spectrum.argmax()) == pytest.approx(440, abs=3)  # a 1-bit codec, but the tone is there


@pytest.mark.parametrize("rate", [48000, 16000])
def test_container_audio_agrees_between_decord_and_pyav(videos, rate):
    path = videos["mpeg4_ac3_avi"]  # AC3 at 48 kHz
    d, p = (decode.read_audio(path, 0.0, None, rate, backend=b).numpy() for b in ("decord", "pyav"))
    frame = rate // 25  # one video frame of samples
    assert abs(len(d) - len(p)) <= frame
    n = min(len(d), len(p)) - 2 * frame
    lag = min(
        range(-frame, frame + 1), key=lambda k: np.abs(d[frame + k : frame + k + n] - p[frame : frame + n]).mean()
    )
    assert abs(lag) <= 32  # decord's resampler shifts its output by a millisecond or so; PyAV's is exact
    assert np.abs(d[frame + lag : frame + lag + n] - p[frame : frame + n]).max() < 0.01


@pytest.mark.parametrize(("suffix", "subtype"), [(".flac", "PCM_16"), (".ogg", "VORBIS"), (".wav", "FLOAT")])
def test_soundfile_and_pyav_give_the_same_samples(tmp_path, suffix, subtype):
    path = write_wav(tmp_path / f"tone{suffix}", tone(1.7, 16000), 16000, subtype=subtype)
    native, _ = sf.read(path, dtype="float32")
    by_sf = decode.read_audio(path, 0.0, None, 16000, backend="soundfile")
    by_av = decode.read_audio(path, 0.0, None, 16000, backend="pyav")
    assert len(by_sf) == len(native) and abs(len(by_av) - len(by_sf)) <= 16000 / 30  # durations within a frame
    n = min(len(by_sf), len(by_av))
    assert torch.allclose(by_sf[:n], by_av[:n], atol=1e-4)


def test_several_channels_are_averaged_by_every_decoder(media):
    """As soundfile mixes its files: FFmpeg's own mono mix sums the channels (1.4x louder for
    stereo, 3.4x for 5.1, and past +-1), so the same sound came out at another level from a video."""
    wav = decode.read_audio(media["wav16k"], 0.0, 2.0, 16000)  # mono, the same tone as the stereo track
    stereo = decode.read_audio(media["av44k"], 0.0, 2.0, 16000)  # AAC, the tone in both channels
    assert decode.probe(media["av44k"]).channels == 2
    assert stereo.pow(2).mean().sqrt() == pytest.approx(wav.pow(2).mean().sqrt(), rel=0.03)


def test_sound_that_stops_long_before_the_picture_is_refused_and_one_that_nearly_lasts_is_kept(tmp_path):
    """A track that decodes to much less than the video: truncated, corrupt, or stopped early."""
    short = write_video(tmp_path / "short.mp4", seconds=3.0, fps=8, width=32, height=32, audio_seconds=0.9)
    with pytest.raises(decode.MediaError, match=r"the audio track decodes to 0\.\d+ s, but the video lasts 3\.00 s"):
        decode.probe(short)
    most = write_video(tmp_path / "most.mp4", seconds=3.0, fps=8, width=32, height=32, audio_seconds=2.0)
    assert decode.probe(most).audio_duration == pytest.approx(2.0, abs=0.1)


def test_sound_that_starts_so_late_that_it_covers_under_half_the_picture_is_refused(tmp_path):
    """2 s of sound from 4 s of a 6 s video passed as covering it (its end was compared, not what it
    covers), and the 4 s of silence read before it were scored as the file's sound."""
    late = write_video(
        tmp_path / "late.mp4", seconds=6.0, fps=8, width=32, height=32, audio_delay=4.0, audio_seconds=2.0
    )
    with pytest.raises(decode.MediaError, match=r"decodes to 2\.\d+ s, from 3\.9\d s on, but the video lasts 6\.00 s"):
        decode.probe(late)
    kept = write_video(
        tmp_path / "kept.mp4", seconds=6.0, fps=8, width=32, height=32, audio_delay=2.0, audio_seconds=4.0
    )
    assert decode.probe(kept).audio_late == pytest.approx(2.0, abs=0.1)  # (AAC priming: a little earlier)


def test_sound_that_starts_after_the_first_frame_is_read_at_its_time(tmp_path):
    """Time 0 is the first frame: sound that starts 1 s after it is read after 1 s of silence (it was
    read from its first sample, a second early)."""
    path = write_video(tmp_path / "late.mkv", seconds=2.0, audio_rate=16000, audio_delay=1.0)
    audio = decode.read_audio(path, 0.0, None, 16000)
    assert not audio[:15000].any()  # silence before the sound starts
    assert torch.allclose(audio[16000:24000], torch.from_numpy(tone(0.5, 16000)), atol=0.06)  # on time (AAC: +-0.05)


def test_sound_that_starts_before_the_first_frame_is_read_from_it_and_not_called_short(tmp_path):
    """Time 0 is the first frame: the second of sound before it is left out, and the track is not
    taken for a truncated one (its stated length counts that second)."""
    path = write_video(tmp_path / "early.mp4", seconds=3.0, audio_rate=16000, audio_delay=-1.0)
    info = decode.probe(path)
    assert info.audio_stated is None and info.audio_duration == pytest.approx(2.0, abs=0.07)
    audio = decode.read_audio(path, 0.0, 0.5, 16000)  # the tone from its second 1 (440 Hz: the same phase)
    assert torch.allclose(audio, torch.from_numpy(tone(0.5, 16000)), atol=0.06)


def test_an_ogg_video_with_its_sound_listed_first_reads_it_on_the_video_timeline(tmp_path):
    """libsndfile opens such a file, but reads its sound from its own first sample: it was a second
    early here."""
    path = write_video(
        tmp_path / "a.ogv",
        audio_rate=48000,
        audio_codec="libopus",
        video_codec="libvpx",
        audio_first=True,
        audio_delay=1.0,
    )
    assert decode.probe(path).audio_backend == "pyav"
    audio = decode.read_audio(path, 0.0, None, 16000)
    assert not audio[:15000].any() and audio[16000:24000].abs().max() > 0.2


def _write_pcm_mkv(path, channels=1, drop_every=0, seconds=2.0, rate=16000, keep=None, moved=None):
    """A tone in 20 ms PCM packets, in every channel of ``channels`` (8: 7.1). Packet ``k`` is left
    out before muxing when ``drop_every`` divides ``k + 1`` (lost in a call recording) or
    ``keep(k)`` is false (silence suppression), and its timestamp moves by ``moved(k)`` seconds."""
    layout = {1: "mono", 2: "stereo", 8: "7.1"}[channels]
    out = av.open(str(path), "w")
    stream = out.add_stream("pcm_s16le", rate=rate, layout=layout)
    wave, step = tone(seconds, rate), rate // 50
    for k, at in enumerate(range(0, len(wave), step)):
        chunk = np.repeat(wave[at : at + step, None], channels, axis=1)
        frame = av.AudioFrame.from_ndarray((chunk.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout=layout)
        frame.sample_rate, frame.pts = rate, at
        packets = stream.encode(frame)
        if (drop_every and k % drop_every == drop_every - 1) or (keep is not None and not keep(k)):
            continue
        for packet in packets:
            if moved is not None:  # (decoding order moves with it only where the packets after move too)
                packet.pts += round(moved(k) / packet.time_base)
                packet.dts = packet.pts if moved(k + 1) == moved(k) else packet.dts
            out.mux(packet)
    out.close()
    return path


def test_timestamps_are_trusted_only_as_far_as_they_agree(tmp_path):
    """One packet stamped 30 s late put all the audio after it 30 s late; a jump of an hour was
    allocated as an hour of silence; long silence suppression (1 packet in 20 sent) was read with the
    timestamps dropped, so the sound after it came early."""
    wave = torch.from_numpy(tone(4.0, 16000))
    spike = _write_pcm_mkv(tmp_path / "spike.mkv", seconds=4.0, moved=lambda k: 30.0 if k == 50 else 0.0)
    jump = _write_pcm_mkv(tmp_path / "jump.mkv", seconds=4.0, moved=lambda k: 3600.0 if k >= 100 else 0.0)
    for path in (spike, jump):  # read on in order: the tone continues on time
        audio = decode.read_audio(path, 0.0, None, 16000, backend="pyav")
        assert len(audio) == 64000 and torch.allclose(audio[40000:40300], wave[40000:40300], atol=1e-3)
    quiet = _write_pcm_mkv(tmp_path / "dtx.mkv", seconds=4.0, keep=lambda k: k < 25 or k >= 175 or k % 20 == 0)
    audio = decode.read_audio(quiet, 0.0, None, 16000, backend="pyav")
    assert len(audio) == 64000 and torch.allclose(audio[60000:60300], wave[60000:60300], atol=1e-3)
    assert not audio[8000 + 10 : 8320 - 10].any()  # a packet not sent: silence in its place


def test_eight_channels_are_averaged_too(tmp_path):
    """PyAV counts 9 planes in a planar 7.1 frame and crashed on it: such files were refused."""
    path = _write_pcm_mkv(tmp_path / "7.1.mkv", channels=8)
    (record,) = index_files([str(path)], tmp_path / "cache")[0].values()
    assert "error" not in record and record["channels"] == 8
    audio = decode.read_audio(path, 0.0, 2.0, 16000)
    assert torch.allclose(audio[100:-100], torch.from_numpy(tone(2.0, 16000))[100:-100], atol=1e-3)


def test_frequent_lost_packets_are_silence_in_place_not_a_shift(tmp_path):
    """One packet in five lost: the timestamps were taken for another unit and the frames joined end
    to end, so the sound ran ahead of its time with no word."""
    path = _write_pcm_mkv(tmp_path / "lossy.mkv", drop_every=5)
    info = decode.probe(path, verify=True)
    assert info.audio_duration == pytest.approx(2.0, abs=0.03) and info.audio_gaps == pytest.approx(0.4, abs=0.03)
    audio = decode.read_audio(path, 0.0, None, 16000)
    heard = audio[1600 + 1 : 1600 + 319]  # the 6th packet's middle (after the first lost one): on time
    assert torch.allclose(heard, torch.from_numpy(tone(2.0, 16000))[1600 + 1 : 1600 + 319], atol=1e-3)
    assert not audio[1280 + 10 : 1600 - 10].any()  # the 5th, lost: silence


def test_a_file_with_gaps_is_warned_about_once_however_many_of_its_spans_are_used(tmp_path, caplog):
    path = str(_write_pcm_mkv(tmp_path / "lossy.mkv", drop_every=20))
    spans = [ClipInfo(path, 0.0, 0.6), ClipInfo(path, 0.6, 1.2), ClipInfo(path, 1.2)]
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        index_clips(spans, ReadSpec(("audio",)), tmp_path / "cache")
    assert len([r for r in caplog.records if "inside the audio is missing" in r.getMessage()]) == 1


def test_files_with_more_than_one_audio_stream_are_said_once_and_read_from_the_first(tmp_path, caplog):
    """A film's dubs or a commentary track: the first stream was read without a word of the others."""
    dubbed = write_video(tmp_path / "dubbed.mkv", seconds=2.0, fps=8, width=32, height=32, audio_streams=3)
    plain = write_video(tmp_path / "plain.mkv", seconds=2.0, fps=8, width=32, height=32)
    assert decode.probe(dubbed).audio_streams == 3 and decode.probe(plain).audio_streams is None
    clips = [ClipInfo(str(dubbed), 0.0, 1.0), ClipInfo(str(dubbed), 1.0), ClipInfo(str(plain))]
    with caplog.at_level(logging.WARNING, logger="ttt_mm.data"):
        index_clips(clips, ReadSpec(("audio", "video")), tmp_path / "cache")
    (said,) = [r.getMessage() for r in caplog.records if "more than one audio stream" in r.getMessage()]
    assert said.endswith(f": 1 (the first: {dubbed}, 3 streams)")
    audio = decode.read_audio(dubbed, 0.0, 2.0, 16000)
    assert torch.allclose(audio[800:-800], torch.from_numpy(tone(2.0, 16000))[800:-800], atol=0.05)


def test_a_jump_shorter_than_a_frame_is_placed_but_not_said_to_be_missing():
    """imageio's realshort.mp4: its second AAC frame starts 594 samples after the first one ends (no
    packet of 1024 fits there), and every command warned that 0.012 s of its audio was missing."""
    from ttt_mm.data.decode.audio import _placed

    rate, times = 48000, [0, 1618, 2642, 3666 + 1024]  # (the last jump: a lost frame of 1024)
    blocks = [np.full(1024, i + 1, np.float32) for i in range(4)]
    samples, filled, shift = _placed(blocks, [t / rate for t in times], rate, None, 0.0)
    assert (filled, shift, len(samples)) == (1024, 0, 4690 + 1024)  # (the lost frame's alone)
    assert samples[1618] == 2 and not samples[1024:1618].any()  # (placed at its time all the same)
    # a lost frame's jump in ms timestamps (Matroska's) of 1024-sample frames at 44.1 kHz: 1005 samples
    times = [round(i * 1024 / 44100, 3) for i in range(8) if i != 4]
    _, filled, _ = _placed([np.ones(1024, np.float32) for _ in times], times, 44100, None, None)
    assert 1000 < filled < 1050  # (counted: a jump a little short of the frame is a lost one)


def test_no_gap_is_counted_before_the_video_starts(tmp_path):
    """A fragmented MP4 with B-frames: its first AAC packet lies before the first frame, and the gap
    after it (cut off with it) was reported as missing audio for every such file."""
    path = write_video(
        tmp_path / "frag.mp4",
        seconds=3.0,
        fps=25,
        width=64,
        height=48,
        audio_rate=48000,
        stereo=True,
        b_frames=True,
        muxer_options={"movflags": "frag_keyframe+empty_moov"},
    )
    info = decode.probe(path, verify=True)
    assert info.has_audio and info.audio_gaps is None


@pytest.mark.parametrize("message", ["", "\n", "  \nthe real trouble"])
def test_a_decoder_error_with_a_blank_first_line_is_said_by_its_first_words(message):
    """PyAV's and decord's errors are reasons in one line; one with a blank first line raised an IndexError."""
    from ttt_mm.data.decode.native import _decord_reason, _pyav_reason

    said = message.strip() or "RuntimeError"
    assert _pyav_reason(RuntimeError(message), "decoding frame 3") == f"decoding frame 3 failed: {said}"
    assert _pyav_reason(av.error.FFmpegError(1, message), "decoding frame 3").startswith("decoding frame 3 failed: ")
    assert said in _decord_reason(RuntimeError(message), "decoding frame 3")


def _anamorphic(path, aspect: Fraction):
    """64 x 64 stored, its left quarter red, with the sample aspect ratio ``aspect``."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.sample_aspect_ratio = aspect
        picture = np.zeros((64, 64, 3), np.uint8)
        picture[:, :16] = (255, 0, 0)  # (the left quarter: left of a shown 128 x 64 frame's central square)
        for _ in range(8):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_a_video_of_pixels_that_are_not_square_is_read_at_the_shape_it_is_shown(tmp_path):
    """Stored 64 x 64 with a sample aspect ratio of 2:1 (anamorphic DVD and broadcast video), it is shown
    128 x 64; both backends read it squeezed, as stored, without a word. A ratio no video is shown with
    (5:1 here; a stream's 65535:1 would scale a 1080p frame to 101,520 px wide) is not taken as one."""
    path = _anamorphic(tmp_path / "anamorphic.mp4", Fraction(2, 1))
    with pytest.raises(decode.MediaError, match=r"pixels that are not square \(sample aspect ratio 2:1\)"):
        decode.video_timeline(path, "decord")
    info = decode.probe(path, streams=("video",), verify=True)
    assert info.video_backend == "pyav" and info.size == (128, 64)
    frames = decode.read_video(path, 0.0, None, fps=8, size=32)
    assert len(frames) == 8 and frames[:, 0].float().mean() < 20  # (no red in the central square)
    bogus = decode.probe(_anamorphic(tmp_path / "bogus.mp4", Fraction(5, 1)), streams=("video",), verify=True)
    assert (bogus.video_backend, bogus.size) == ("decord", (64, 64))


@pytest.mark.parametrize("kind,corner", [("hflip", (0, 1)), ("vflip", (1, 0))])
def test_a_video_shown_mirrored_is_read_mirrored(tmp_path, kind, corner):
    """A display matrix that mirrors the picture (a negative determinant) was read as a turn: mirrored
    left to right came out turned half round, top to bottom not mirrored at all, by both backends."""
    path = tmp_path / "marked.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        picture = np.zeros((64, 64, 3), np.uint8)
        picture[:16, :16] = (255, 0, 0)  # (a mark in the top left corner as stored)
        for _ in range(8):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    rotate_display(path, kind)
    with pytest.raises(decode.MediaError, match="a display matrix that shows it mirrored, which decord does not"):
        decode.video_timeline(path, "decord")
    assert decode.probe(path, streams=("video",), verify=True).video_backend == "pyav"
    red = decode.read_video(path, 0.0, 0.5, fps=8, size=32)[0, 0].float()
    quarters = [[red[r * 16 : r * 16 + 16, c * 16 : c * 16 + 16].mean().item() for c in (0, 1)] for r in (0, 1)]
    marked = quarters[corner[0]][corner[1]]  # (a quarter of it red: about 64)
    assert marked > 40 and sum(map(sum, quarters)) - marked < 10, quarters
