"""Embedding: streaming equals one pass, timestamps match the media, the embed command's outputs,
bad files and interruptions. Tiny models and seconds-long files written to tmp_path."""

from __future__ import annotations

import errno
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from embedhelpers import TOKENIZERS, one_pass, save_checkpoint
from hydra import compose, initialize_config_dir
from mediafiles import tone, write_video, write_wav

from ttt_mm.data import decode
from ttt_mm.embed import Embedder, Stream, load_parts
from ttt_mm.embed.files import NpyRowWriter, load
from ttt_mm.storage import atomic
from ttt_mm.tasks import embed as task
from ttt_mm.tasks.common import ConfigError, Interrupted
from ttt_mm.tasks.probe import main as probe_command

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine two threads spin-wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    ckpts = {name: save_checkpoint(root / f"{name}.ckpt", tok) for name, tok in TOKENIZERS.items()}
    return ckpts | {
        "av_lact": save_checkpoint(root / "av_lact.ckpt", TOKENIZERS["av"], mixer="lact"),
        "audio_mamba": save_checkpoint(root / "audio_mamba.ckpt", TOKENIZERS["audio"], variant="mamba"),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("embed_media")
    noise = np.random.default_rng(0).normal(0, 0.05, round(2.5 * 22050)).astype(np.float32)
    return {
        "audio": write_wav(root / "speech22k.wav", tone(2.5, 22050, 300) + noise, 22050),  # resampled to 16 kHz
        "av": write_video(root / "clip.mp4", seconds=3.0, fps=16, width=64, height=48, audio_rate=16000),
    }


def _reference(embedder: Embedder, path: Path, layer: int = -1, norm: bool = True):
    """Rows of one pass over the whole file (the steps whose tokens are all real), and its tokens."""
    start, end = embedder.span(path)
    batch: dict = {}
    if "audio" in embedder.modalities:
        rate = embedder.sample_rate
        batch |= {"audio": decode.read_audio(path, start, end - start, rate)[None], "sample_rate": rate}
    if "video" in embedder.modalities:
        batch |= {
            "video": decode.read_video(path, start, end - start, embedder.fps, embedder.size)[None],
            "fps": embedder.fps,
        }
    rows, tokens = one_pass(embedder.tokenizer, embedder.backbone, batch, layer, norm)
    k = embedder.tokens_per_step
    keep = tokens.mask[0].reshape(-1, k).all(-1).repeat_interleave(k)
    return rows[0, keep], tokens.timestamps[0, keep], tokens.modality[0, keep]


# ------------------------------------------------------------------------------------ streaming


@pytest.mark.parametrize(
    "kind,media,window,layer,norm",
    [
        ("audio", "audio", 0.4, -1, True),  # 10 tokens per window: windows cut TTT mini-batches of 8
        ("audio", "audio", 0.4, 0, False),
        ("av", "av", 0.5, -1, True),  # 18 tokens per window
        ("video", "av", 0.75, -1, True),  # 12 tokens per window
        ("av_lact", "av", 0.5, -1, True),  # LaCT: windows cut its chunks of 8 and attention windows of 6
        ("audio_mamba", "audio", 0.08, -1, True),  # 62.5 tokens in windows of 2: the last holds no whole one
    ],
    ids=["audio", "audio-layer0-nonorm", "av", "video", "av-lact", "audio-mamba"],
)
def test_streaming_equals_one_pass(ckpts, files, kind, media, window, layer, norm):
    embedder = Embedder.from_checkpoint(ckpts[kind], layer=layer, norm=norm, window_seconds=window, device="cpu")
    out = embedder.embed_file(files[media])
    assert embedder.window_seconds < embedder.span(files[media])[1] / 3  # several windows
    rows, timestamps, modality = _reference(embedder, files[media], layer, norm)
    assert out.embeddings.shape == rows.shape and rows.shape[0] > 0
    assert (out.embeddings - rows).abs().max().item() < 1e-4
    torch.testing.assert_close(out.timestamps, timestamps, atol=1e-5, rtol=0)
    assert torch.equal(out.modality.long(), modality)
    torch.testing.assert_close(out.pooled, rows.mean(0), atol=1e-5, rtol=0)


def test_a_stream_continued_from_a_span_off_the_step_grid_says_where_it_starts(ckpts, files):
    """The message told a user whose second span started at 1.01 s to change the windows' length."""
    embedder = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, device="cpu")
    stream = embedder.stream()
    for window in embedder.windows(files["audio"], 0.0, 1.0):
        stream.push(window)
    with pytest.raises(
        ValueError, match=r"1\.010000 s into the input.*start every span and window of one stream a whole"
    ):
        for window in embedder.windows(files["audio"], 1.01, None):
            stream.push(window)


def test_a_file_spanned_or_windowed_alone_is_probed_in_a_worker_not_here(ckpts, files, monkeypatch, tmp_path):
    """Without its index entry, span and windows probed the file in the caller's process: a file that
    aborts a decoder (decord) took the caller down, which embed_file's index had kept away."""
    shutil.copy(files["av"], tmp_path / "clip.mp4")  # (not indexed yet)
    probed_here = []
    monkeypatch.setattr(decode, "probe", lambda *args, **kwargs: probed_here.append(args))
    embedder = Embedder.from_checkpoint(ckpts["av"], window_seconds=0.5, device="cpu")
    start, end = embedder.span(tmp_path / "clip.mp4")
    assert (start, end) == (0.0, pytest.approx(3.0, abs=0.05)) and len(
        list(embedder.windows(tmp_path / "clip.mp4"))
    ) == 6
    assert not probed_here
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(decode.MediaError, match="not a readable media container"):
        embedder.span(tmp_path / "bad.mp4")
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-cache-here")  # (an index cache that cannot be written)
    assert embedder.span(tmp_path / "clip.mp4") == (start, end) and not probed_here
    monkeypatch.undo()

    class Worker:  # (a DataLoader worker, which cannot start the index's processes: it probes the file itself)
        daemon = True

    monkeypatch.setattr(multiprocessing, "current_process", Worker)
    assert embedder.span(tmp_path / "clip.mp4") == (start, end)


def test_a_stream_takes_its_windows_once_in_order_and_none_after_it_finished(ckpts, files):
    """A window pushed again, out of order or after `finish` was embedded from the state that had read
    past it: other rows, and timestamps repeated or going back, without an error."""
    embedder = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, device="cpu")
    windows = list(embedder.windows(files["audio"], 0.0, 1.2))
    straight = embedder.stream()
    wanted = [straight.push(w) for w in windows]
    stream = embedder.stream()
    stream.push(windows[0])
    stream.push(windows[1])
    for window in (windows[0], windows[1]):
        with pytest.raises(
            ValueError,
            match=r"^a window starts 0(\.4)? s into the input, before the end of the last one \(0\.8 s\): push",
        ):
            stream.push(window)
    assert torch.equal(stream.push(windows[2]), wanted[2])  # (the refused windows changed nothing: it goes on)
    stream.finish()
    with pytest.raises(RuntimeError, match="^this stream is finished"):
        stream.push(windows[2])
    assert stream.clock.steps == [(0, 30)]


def test_a_stream_refuses_a_window_whose_rows_are_not_equally_long(ckpts, files):
    """Rows share one clock: a step padded in one row was dropped from every row, and the longer
    input's rows went missing from its embedding and its pooled vector unsaid."""
    embedder = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, device="cpu")
    (window,) = embedder.windows(files["audio"], 0.0, 0.4)
    both = {k: torch.cat([v, v]) if torch.is_tensor(v) and v.ndim else v for k, v in window.items()}
    alone = embedder.stream().push(window)
    torch.testing.assert_close(embedder.stream().push(both), torch.cat([alone, alone]))  # (equally long: as alone)
    both["audio_mask"][1, 3200:] = False  # the second input ends halfway: padding after it
    both["audio_lengths"][1] = 3200
    with pytest.raises(ValueError, match="^the 2 rows of this window are not equally long"):
        embedder.stream().push(both)


def test_a_stream_takes_no_window_after_one_that_ended_inside_a_step(ckpts, files, tmp_path):
    """The padding of an input's last step (an audio-visual step whose sound ends inside it) went into
    the state, and a later window went on from it, its rows timed after a step that never became one."""
    embedder = Embedder.from_checkpoint(ckpts["av"], window_seconds=0.5, device="cpu")
    stream = embedder.stream()
    for window in embedder.windows(files["av"], 0.0, 2.9):  # steps of 0.25 s: the last one partly padding
        stream.push(window)
    longer = write_video(tmp_path / "longer.mp4", seconds=4.0, fps=16, width=64, height=48, audio_rate=16000)
    (after,) = embedder.windows(longer, 3.0, 3.5)  # (where the stream's steps go on: no overlap, on the grid)
    with pytest.raises(ValueError, match=r"^the window before ended the input \(padding from 2.75 s into it\)"):
        stream.push(after)


def test_timestamps_match_the_media(ckpts, files):
    audio = Embedder.from_checkpoint(ckpts["audio"], device="cpu").embed_file(files["audio"])
    duration = decode.probe(files["audio"]).audio_duration  # 2.5 s
    n = int(duration / 0.04 + 1e-9)  # every whole 40 ms token, none past the end
    assert audio.embeddings.shape[0] == n == 62
    torch.testing.assert_close(audio.timestamps, torch.arange(n, dtype=torch.float64) * 0.04)
    assert audio.clock.steps == [(0, n)]

    av = Embedder.from_checkpoint(ckpts["av"], window_seconds=0.5, device="cpu").embed_file(files["av"])
    steps = av.embeddings.shape[0] // 9  # 5 audio tokens then 4 patches per 0.25 s step
    assert steps == 12 and av.embeddings.shape[0] == steps * 9
    first = av.timestamps[:9].tolist()
    assert first == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.0, 0.0, 0.0, 0.0])
    assert av.modality[:9].tolist() == [0] * 5 + [1] * 4
    torch.testing.assert_close(av.timestamps.reshape(steps, 9)[:, 0], torch.arange(steps, dtype=torch.float64) * 0.25)


def test_a_span_of_a_file_keeps_file_time(ckpts, files):
    embedder = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, device="cpu")
    whole = embedder.embed_file(files["audio"])
    part = embedder.embed_file(files["audio"], start=0.6, end=2.0)
    assert part.embeddings.shape[0] == 35
    torch.testing.assert_close(part.timestamps, 0.6 + torch.arange(35, dtype=torch.float64) * 0.04)
    assert not torch.allclose(part.embeddings[0], whole.embeddings[15])  # a fresh state at 0.6 s
    for start in (-5.0, math.nan, "0.6"):  # a negative start was read as made-up silence before the audio
        with pytest.raises(ValueError, match="start must be a time in seconds >= 0"):
            embedder.embed_file(files["audio"], start=start)
        with pytest.raises(ValueError, match="start must be a time in seconds >= 0"):
            embedder.windows(files["audio"], start=start)
    assert embedder.span(files["audio"], np.float32(0.6)) == pytest.approx((0.6, 2.5))
    # an end of NaN or inf read the whole file; one before the start blamed the file ("only 0.000 s of audio")
    for end, message in (
        (math.nan, "end must be a time"),
        (math.inf, "end must be a time"),
        (-5.0, "end must be a time"),
    ):
        with pytest.raises(ValueError, match=message):
            embedder.embed_file(files["audio"], start=1.0, end=end)
    for end, where in ((0.5, "before"), (1.0, "at")):
        with pytest.raises(ValueError, match=f"^end {end:g} is {where} start 1; the span would be empty$"):
            embedder.span(files["audio"], 1.0, end)


def test_a_window_within_rounding_of_whole_steps_is_taken_as_them_and_a_huge_one_reads_the_file_whole(ckpts, files):
    """0.40000001 s (10.00000025 steps of 0.04 s) passed the step check, then the sample grid's refused
    its windows mid-file; a window of 1e12 s gave a 2.5 s file no window ("shorter than one token")."""
    exact = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, device="cpu").embed_file(files["audio"])
    near = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.40000001, device="cpu")
    assert near.window_seconds == 0.4
    typed = Embedder.from_checkpoint(ckpts["audio"], window_seconds=1.4, device="cpu")
    assert typed.window_seconds == 1.4  # as typed, not 35 * 0.04 = 1.4000000000000001 (the sidecars record it)
    torch.testing.assert_close(near.embed_file(files["audio"]).embeddings, exact.embeddings)
    huge = Embedder.from_checkpoint(ckpts["audio"], window_seconds=1e12, device="cpu").embed_file(files["audio"])
    assert (huge.embeddings - exact.embeddings).abs().max().item() < 1e-5


def test_the_window_an_error_suggests_is_taken():
    """A step of 1024/22050 s: 0.3 s was refused with "e.g. 0.325079", and so was 0.325079."""
    from functools import partial

    from ttt_mm.backbone import Backbone
    from ttt_mm.layers import TTTLayer
    from ttt_mm.tokenizers import AudioTokenizer

    parts = (
        AudioTokenizer(dim=16, n_mels=20, sample_rate=22050, hop_length=256),
        Backbone(16, 1, partial(TTTLayer, num_heads=2)),
    )
    with pytest.raises(ValueError, match=r"must be a multiple of the tokenizer's step .* \(e.g. ([\d.]+)\)$") as error:
        Embedder(*parts, window_seconds=0.3)
    suggested = float(re.search(r"e.g. ([\d.]+)\)$", str(error.value))[1])
    assert Embedder(*parts, window_seconds=suggested).window_seconds == pytest.approx(0.3, abs=0.03)


def test_a_clip_of_one_step_is_read_whatever_second_it_starts_at(ckpts):
    """A one-step clip from 0.3 s was refused: "only 0.04 s of audio in the clip (less than one token step,
    0.04 s)", its end (0.3 + 640 / 16000) less its start a hair under the step (from 0.1 or 0.7 it passed)."""
    embedder = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, device="cpu")
    step = embedder.tokenizer.seconds_per_step
    for start in (0.0, 0.1, 0.3, 0.7, 1234.56):
        assert embedder.embed_tensor(audio=0.1 * torch.randn(640), start=start).timestamps.shape == (1,), start
    end = 0.3 + 640 / 16000
    assert end - 0.3 < step  # (the rounding the test is about)


def test_a_stream_opened_elsewhere_than_its_first_window_names_the_start_to_open_it_at(ckpts, files):
    """Windows of a span from 1.1 s pushed to ``stream()`` were refused with "start every span and window
    of one stream at a multiple of" the step: it is ``stream(start=1.1)`` that was missing."""
    embedder = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, device="cpu")
    first = next(embedder.windows(files["audio"], 1.1, 2.0))
    with pytest.raises(
        ValueError, match=r"open the stream where its first window starts, Embedder.stream\(start=1.1\)$"
    ):
        embedder.stream().push(first)
    assert embedder.stream(start=1.1).push(first).shape[1] == 10  # (0.4 s of 0.04 s steps)
    late = {"start": torch.tensor([5025.125], dtype=torch.float64)}  # (refused before it is read: no media needed)
    with pytest.raises(ValueError, match=r"Embedder.stream\(start=5025.125\)$"):  # (not :g's 5025.12, refused again)
        embedder.stream().push(late)


def test_embed_tensor_equals_embed_file_and_batch_rows_are_independent(ckpts, files):
    embedder = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, device="cpu")
    samples = decode.read_audio(files["audio"], 0, None, 16000)
    single = embedder.embed_tensor(audio=samples)
    from_file = embedder.embed_file(files["audio"])
    assert (single.embeddings - from_file.embeddings).abs().max().item() < 1e-5
    batch = embedder.embed_tensor(audio=torch.stack([samples, 0.5 * samples.flip(0)]))
    assert batch.embeddings.shape == (2, *single.embeddings.shape) and batch.pooled.shape == (2, 32)
    assert (batch.embeddings[0] - single.embeddings).abs().max().item() < 1e-5
    hops = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, hop_seconds=0.5, device="cpu")
    shifted = hops.embed_tensor(audio=samples, start=0.25)  # the first sample at 0.25 s: hops counted from there
    torch.testing.assert_close(shifted.timestamps, hops.embed_tensor(audio=samples).timestamps + 0.25)
    other = embedder.embed_tensor(audio=0.5 * samples.flip(0))
    assert (batch.embeddings[1] - other.embeddings).abs().max().item() < 1e-5
    assert (batch.pooled - torch.stack([single.pooled, other.pooled])).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="^this model reads audio only; it takes no video$"):  # (said: audio=None)
        embedder.embed_tensor(video=torch.zeros(8, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="^this model reads audio: pass audio=$"):
        embedder.embed_tensor()
    for start in (math.nan, math.inf, "0.5", True):  # (said: cannot convert float NaN to integer, ...)
        with pytest.raises(ValueError, match=rf"^start must be a finite time in seconds; got {start!r}$"):
            embedder.embed_tensor(audio=samples, start=start)
    with pytest.raises(TypeError, match=r"got ndarray \(a NumPy array: torch.from_numpy\)"):  # (an AttributeError)
        embedder.embed_tensor(audio=samples.numpy())
    with pytest.raises(
        ValueError, match=r"rows of 2 samples, .* \[n_samples, channels\] array\? .*audio.mean\(dim=1\)"
    ):
        embedder.embed_tensor(audio=torch.stack([samples, samples], dim=1))  # (said: 0.000125 s of audio)
    for empty, said in (
        (torch.zeros(0), "no samples"),
        (torch.zeros(2, 0), "no samples"),
        (torch.zeros(0, 99), "an empty batch \\(0 rows\\)"),
    ):
        with pytest.raises(ValueError, match=rf"^audio has {said}: shape \({empty.shape[0]},"):
            embedder.embed_tensor(audio=empty)


def test_a_step_with_only_some_of_its_tokens_real_gives_no_row(ckpts):
    """Sound that ends 0.07 s before the picture: the last step has video but not all of its audio."""
    embedder = Embedder.from_checkpoint(ckpts["av"], window_seconds=0.5, device="cpu")
    spec = embedder.read_spec()
    audio = torch.from_numpy(tone(0.93, spec.sample_rate))
    video = torch.zeros(round(spec.fps), 3, spec.size, spec.size, dtype=torch.uint8)  # 1 s of frames
    out = embedder.embed_tensor(audio=audio, video=video)
    steps = math.floor(0.93 / embedder.seconds_per_step + 1e-9)
    assert steps == 3 and len(out.embeddings) == steps * embedder.tokens_per_step  # (not the fourth step's)
    assert out.timestamps.max() < steps * embedder.seconds_per_step
    # streams that end further apart than a frame: what is read would end with the shorter (it did, unsaid)
    with pytest.raises(ValueError, match=r"^audio lasts 3.000 s and video 1.000 s: give both for the same span"):
        embedder.embed_tensor(audio=torch.from_numpy(tone(3.0, spec.sample_rate)), video=video)
    stereo = torch.from_numpy(tone(1.0, spec.sample_rate)).expand(2, -1)  # [channels, n] beside one clip
    with pytest.raises(
        ValueError, match=r"^audio has a batch axis and video none \(audio \(2, \d+\), video \(\d+, 3, "
    ):
        embedder.embed_tensor(audio=stereo, video=video)  # (said: give both with or without a batch axis)
    with pytest.raises(
        ValueError, match=r"^give audio and video both with or both without a batch axis \(audio \(\d+,\)"
    ):
        embedder.embed_tensor(audio=stereo[0], video=video[None])


def test_downsampling_and_pooling(ckpts, files):
    plain = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, pool="mean_std", device="cpu")
    tokens = plain.embed_file(files["audio"])
    binned = Embedder.from_checkpoint(ckpts["audio"], window_seconds=0.4, hop_seconds=0.5, pool="max", device="cpu")
    out = binned.embed_file(files["audio"])
    bins = torch.floor(tokens.timestamps / 0.5 + 1e-9).long()  # 62 tokens of 40 ms -> 5 bins of 0.5 s
    expected = torch.stack([tokens.embeddings[bins == b].mean(0) for b in range(5)])
    assert out.embeddings.shape == (5, 32)
    torch.testing.assert_close(out.embeddings, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.timestamps, torch.arange(5, dtype=torch.float64) * 0.5)
    torch.testing.assert_close(out.pooled, tokens.embeddings.amax(0))
    x = tokens.embeddings.double()
    torch.testing.assert_close(
        tokens.pooled.double(), torch.cat([x.mean(0), x.std(0, unbiased=False)]), atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match="shorter than one token step"):
        Embedder.from_checkpoint(ckpts["audio"], hop_seconds=0.01)
    for hop in (0, -1):  # (not "shorter than one token step": a hop must be positive first)
        with pytest.raises(
            ValueError,
            match=rf"^hop_seconds must be a positive number of seconds \(at least one token step, [\d.]+ s\); "
            rf"got {hop}$",
        ):
            Embedder.from_checkpoint(ckpts["audio"], hop_seconds=hop)
    for window in (0, -3):  # (0 and -3 were said not to be multiples of the step, "e.g. 0.04")
        with pytest.raises(
            ValueError, match=rf"^window_seconds must be a positive number of seconds .*; got {window}$"
        ):
            Embedder.from_checkpoint(ckpts["audio"], window_seconds=window)
    for key in ("hop_seconds", "window_seconds"):
        for value in (math.nan, math.inf):
            with pytest.raises(ValueError, match=f"{key} must be a finite number of seconds; got {value}"):
                Embedder.from_checkpoint(ckpts["audio"], **{key: value})
    for layer in ("last", 2, -3, True):  # (depth 2; "last" failed on a raw comparison)
        with pytest.raises(ValueError, match=rf"^layer must be a block's index from -2 to 1 .* got {layer!r}$"):
            Embedder.from_checkpoint(ckpts["audio"], layer=layer)
    with pytest.raises(ValueError, match="^norm must be True or False; got 'foo'$"):  # (it read as true)
        Embedder.from_checkpoint(ckpts["audio"], norm="foo")


def test_loader_matches_lightning(ckpts):
    from ttt_mm.module import SequenceModel

    model = SequenceModel.load_from_checkpoint(ckpts["av"], map_location="cpu")
    tokenizer, backbone, hparams = load_parts(ckpts["av"])
    for ours, theirs in ((tokenizer, model.tokenizer), (backbone, model.backbone)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert hparams["tokenizer"]["_target_"] == "ttt_mm.tokenizers.AVTokenizer"


# --------------------------------------------------------------------------------------- command


def _cfg(**overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("embed", overrides=[f"{k}={v}" for k, v in ({"progress": "false"} | overrides).items()])


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    write_wav(root / "a.wav", tone(1.3, 16000), 16000)
    write_wav(root / "sub" / "b.flac", tone(0.9, 16000, 660), 16000)
    (root / "empty.wav").write_bytes(b"")
    (root / "sub" / "corrupt.mp4").write_bytes(
        np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    )
    (root / "notes.txt").write_text("not media")
    return root


def test_a_file_of_digital_silence_is_embedded_and_said_to_be(ckpts, tmp_path, caplog):
    """Training and evaluation leave it out of audio-only reads; embedding keeps it (silence has an
    embedding), and said nothing of it."""
    silent = write_wav(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    summary = task.run(_cfg(ckpt=ckpts["audio"], input=silent, output=tmp_path / "out"))
    assert len(summary.written) == 1
    assert f"{silent}: the audio is digital silence: embedded as it is" in caplog.text
    assert "(an audio model's training and evaluation leave such a file out)" in caplog.text
    caplog.clear()
    again = task.run(_cfg(ckpt=ckpts["audio"], input=silent, output=tmp_path / "out"))
    assert again.skipped and "digital silence" not in caplog.text  # up to date: nothing embedded, nothing said


def test_a_video_whose_track_is_digital_silence_is_said_to_be_read_as_one_without_sound(
    ckpts, tmp_path, caplog, monkeypatch
):
    """Runs that read audio and video take it as a video without sound; the line said they leave it out
    only when they read audio alone."""
    import mediafiles

    monkeypatch.setattr(mediafiles, "tone", lambda seconds, rate, *args: np.zeros(round(seconds * rate), np.float32))
    video = mediafiles.write_video(tmp_path / "mute.mp4", seconds=3.0, fps=16, width=64, height=48)
    summary = task.run(_cfg(ckpt=ckpts["av"], input=video, output=tmp_path / "out"))
    assert len(summary.written) == 1
    assert f"{video}: the audio is digital silence: embedded as it is (training and evaluation read such a file " in (
        caplog.text
    )
    assert "as a video without sound" in caplog.text and "an audio model's" not in caplog.text
    assert "embedding only the sound" not in caplog.text  # (an audio-visual model reads both)


def test_videos_embedded_by_an_audio_model_are_said_to_be_read_for_their_sound_alone(ckpts, tmp_path, caplog):
    """Only the sidecars' modalities told a user that an audio checkpoint had embedded a video's sound."""
    root = tmp_path / "in"
    root.mkdir()
    video = write_video(root / "clip.mp4", seconds=1.0, fps=8, width=32, height=32)
    write_wav(root / "a.wav", tone(1.0, 16000), 16000)
    with caplog.at_level(logging.INFO, logger="ttt_mm"):
        summary = task.run(_cfg(ckpt=ckpts["audio"], input=root, output=tmp_path / "out"))
    assert len(summary.written) == 2
    said = "embedding only the sound of a video, {}: the checkpoint's model reads audio"
    assert said.format(video) in caplog.text


def test_a_probe_manifests_bad_rows_fail_with_their_reasons_like_a_folders_bad_files(ckpts, folder, tmp_path):
    manifest = tmp_path / "probed.jsonl"
    assert probe_command([str(folder), "-o", str(manifest)]) == 0
    summary = task.run(_cfg(ckpt=ckpts["audio"], input=manifest, output=tmp_path / "out", window_seconds=0.4))
    assert sorted(Path(p).name for p in summary.written) == ["a.wav", "b.flac"]
    failed = dict(summary.failed)
    assert failed.keys() == {str(folder / "empty.wav"), str(folder / "sub" / "corrupt.mp4")}
    assert failed[str(folder / "empty.wav")] == "empty file (0 bytes)"


def test_a_file_whose_name_is_not_utf8_is_embedded(ckpts, tmp_path):
    """Its output's temporary name was encoded as UTF-8, which raised and ended the whole job."""
    root = tmp_path / "in"
    root.mkdir()
    name = os.fsdecode(b"caf\xe9.wav")  # Latin-1 bytes, as old archives have
    os.rename(write_wav(root / "cafe.wav", tone(0.8, 16000), 16000), root / name)
    summary = task.run(_cfg(ckpt=ckpts["audio"], input=root, output=tmp_path / "out", window_seconds=0.4))
    assert summary.written == [str(root / name)] and not summary.failed
    assert (tmp_path / "out" / f"{name}.npy").is_file() and (tmp_path / "out" / f"{name}.json").is_file()


def test_folder_with_bad_files(ckpts, folder, tmp_path):
    out = tmp_path / "out"
    summary = task.run(_cfg(ckpt=ckpts["audio"], input=folder, output=out, window_seconds=0.4))
    assert sorted(Path(p).name for p in summary.written) == ["a.wav", "b.flac"]
    failed = dict(summary.failed)
    assert failed.keys() == {str(folder / "empty.wav"), str(folder / "sub" / "corrupt.mp4")}
    assert "empty" in failed[str(folder / "empty.wav")] and "ffmpeg" in failed[str(folder / "sub" / "corrupt.mp4")]
    report = summary.report()
    assert "failed 2" in report and all(f"{name}: {reason}" in report for name, reason in failed.items())

    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "a.wav.json",
        "a.wav.npy",
        "sub",
        "sub/b.flac.json",
        "sub/b.flac.npy",
    ]
    rows = np.load(out / "a.wav.npy", mmap_mode="r")
    meta = json.loads((out / "a.wav.json").read_text())
    assert isinstance(rows, np.memmap) and rows.dtype == np.float16 and rows.shape == (32, 32) == tuple(meta["shape"])
    assert meta["source"] == str(folder / "a.wav") and meta["duration"] == pytest.approx(1.3)
    assert meta["checkpoint"] == str(ckpts["audio"]) and len(meta["config_hash"]) == 16 and meta["layer"] == 1
    assert meta["mixer"] == "ttt_linear"  # (a probe of the folder names it in a sweep's table)
    loaded = load(out / "a.wav.npy")
    np.testing.assert_allclose(loaded.timestamps, np.arange(32) * 0.04)
    assert loaded.pooled.shape == (32,) and set(loaded.modality.tolist()) == {0}
    direct = Embedder.from_checkpoint(ckpts["audio"], device="cpu").embed_file(folder / "a.wav")
    np.testing.assert_allclose(rows, direct.embeddings.numpy(), atol=2e-3, rtol=2e-3)  # float16 on disk

    again = task.run(_cfg(ckpt=ckpts["audio"], input=folder, output=out))
    assert len(again.skipped) == 2 and not again.written and len(again.failed) == 2
    redo = task.run(
        _cfg(ckpt=ckpts["audio"], input=folder, output=out, overwrite="true", dtype="float32", hop_seconds=0.5)
    )
    assert len(redo.written) == 2
    assert np.load(out / "a.wav.npy").shape == (3, 32) and load(out / "a.wav").timestamps.tolist() == [0.0, 0.5, 1.0]


def test_an_audio_visual_sidecar_says_where_silence_stood_in_for_the_sound(ckpts, files, tmp_path):
    """A video without sound embeds silence in its audio rows and pooled vector, and nothing in its output
    said so: pooled vectors of videos with and without sound compared as alike."""
    mute = write_video(tmp_path / "mute.mp4", seconds=1.0, fps=16, width=64, height=48, audio_rate=None)
    sidecars = {}
    for name, path in (("mute", mute), ("sound", files["av"]), ("audio model", files["audio"])):
        ckpt = ckpts["audio" if name == "audio model" else "av"]
        task.run(_cfg(ckpt=ckpt, input=path, output=tmp_path / name, window_seconds=1.0))
        (sidecar,) = (tmp_path / name).rglob("*.json")
        sidecars[name] = json.loads(sidecar.read_text())
    assert sidecars["mute"]["silent_track"] is True and sidecars["sound"]["silent_track"] is False
    assert "silent_track" not in sidecars["audio model"]  # (a model of one stream reads no stand-in)
    # the Python API says it too (only a log line at INFO did)
    av = Embedder.from_checkpoint(ckpts["av"], window_seconds=1.0, device="cpu")
    assert av.embed_file(mute).silent_track is True and av.embed_file(files["av"]).silent_track is False
    alone = Embedder.from_checkpoint(ckpts["audio"], window_seconds=1.0, device="cpu")
    assert alone.embed_file(files["audio"]).silent_track is None


def test_files_without_the_stream_the_model_reads_are_left_out_and_listed_not_failed(
    ckpts, tmp_path, monkeypatch, capsys, caplog
):
    """A video model given a folder of mixed media called each sound file failed, twice over, and
    exited 1: a good file of another kind is no failure. Nothing embedded at all still is."""
    root = tmp_path / "in"
    root.mkdir()
    write_video(root / "clip.mp4", seconds=1.0, fps=16, width=64, height=48, audio_rate=None)
    write_wav(root / "song.wav", tone(1.3, 16000), 16000)
    (root / "empty.wav").write_bytes(b"")
    args = {"ckpt": ckpts["video"], "input": root, "output": tmp_path / "out", "window_seconds": 0.5}
    heard = task.run(
        _cfg(**args | {"ckpt": ckpts["audio"], "window_seconds": 0.48})
    )  # (an audio model's outputs, in the same folder)
    assert [Path(p).name for p in heard.written] == ["song.wav"]
    with caplog.at_level(logging.WARNING, logger="ttt_mm"):
        summary = task.run(_cfg(**args))
    # its output goes (another model's), said once for all such files: they read fine, unlike a failed one
    assert "removed the earlier outputs of 1 input(s) that lack a stream this model reads" in caplog.text
    assert "which cannot be read now" not in caplog.text and not list((tmp_path / "out").glob("song*"))
    assert [Path(p).name for p in summary.written] == ["clip.mp4"]
    assert summary.lacking == [(str(root / "song.wav"), "no video stream (the model reads video)")]
    assert summary.failed == [(str(root / "empty.wav"), "empty file (0 bytes)")]
    assert (
        summary.report()
        .splitlines()[0]
        .endswith("failed 1, left out 1 (no stream the model reads) -> " + str(args["output"]))
    )
    assert f"1 left out:\n  {root / 'song.wav'}: no video stream (the model reads video)\n1 failed:" in summary.report()

    def status(**changed) -> int:
        monkeypatch.setattr(
            sys, "argv", ["embed", *(f"{k}={v}" for k, v in (args | changed).items()), "progress=false"]
        )
        try:
            task.main()
        except SystemExit as ended:
            return ended.code
        return 0

    (root / "empty.wav").unlink()
    assert status() == 0  # (clip.mp4 already done, song.wav left out)
    (root / "clip.mp4").unlink()
    assert status(output=tmp_path / "none") == 1  # (only a file of another kind: nothing made)
    assert "embedded 0, skipped 0 (already done), failed 0, left out 1" in capsys.readouterr().err


def test_the_summary_lists_a_name_with_a_line_break_on_one_line():
    """Its log line escaped the break; the summary printed it raw, the rest of the name on a line of its own."""
    summary = task.Summary(failed=[("in/new\nline.ogg", "empty file (0 bytes)")], output="out")
    assert summary.report().splitlines()[-1] == "  in/new\\nline.ogg: empty file (0 bytes)"


def test_a_rerun_redoes_outputs_made_from_another_checkpoint_or_source(ckpts, tmp_path, caplog):
    """Skipped means the sidecar records this run's checkpoint weights, source file and settings."""
    root = tmp_path / "in"
    root.mkdir()
    a, b = write_wav(root / "a.wav", tone(0.6, 16000), 16000), write_wav(root / "b.wav", tone(0.5, 16000, 660), 16000)
    out = tmp_path / "out"
    torch.manual_seed(1)  # the fixture's checkpoints were drawn after seed 0
    other = save_checkpoint(tmp_path / "other.ckpt", TOKENIZERS["audio"])  # same architecture, other weights

    reports = []

    def embed(ckpt, source=root, **overrides):
        caplog.clear()
        summary = task.run(_cfg(ckpt=ckpt, input=source, output=out, **overrides))
        reports.append(summary.report())
        return sorted(Path(p).name for p in summary.written), len(summary.skipped)

    assert embed(ckpts["audio"]) == (["a.wav", "b.wav"], 0)
    first = json.loads((out / "a.wav.json").read_text())
    assert first["source_bytes"] == a.stat().st_size and first["span"] == [0.0, None]
    assert embed(ckpts["audio"]) == ([], 2)  # the record matches: skipped
    (tmp_path / "link").symlink_to(root)
    assert embed(ckpts["audio"], tmp_path / "link") == ([], 2)  # the same files through a linked folder

    assert embed(other) == (["a.wav", "b.wav"], 0)
    assert caplog.text.count("another checkpoint's weights") == 1  # one line for a run's new checkpoint, not one a file
    assert "embedded again: 2 out of date, another checkpoint's weights (weights_hash" in reports[-1]
    again = json.loads((out / "a.wav.json").read_text())
    assert again["weights_hash"] != first["weights_hash"] and again["config_hash"] == first["config_hash"]
    assert again["pooled"] != first["pooled"]
    copied = tmp_path / "copy" / "other.ckpt"
    copied.parent.mkdir()
    copied.write_bytes(other.read_bytes())
    assert embed(copied) == ([], 2)  # the same weights under another path

    write_wav(a, tone(0.7, 16000), 16000)  # changed in place: another size
    st = b.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: another time
    assert embed(other) == (["a.wav", "b.wav"], 0)
    assert caplog.text.count("the source file changed") == 1  # (one line for both, each file's values not in it)
    assert "embedded again: 2 out of date, the source file changed" in reports[-1]

    sidecar = json.loads((out / "b.wav.json").read_text())
    del sidecar["weights_hash"]  # as written before weights were recorded
    (out / "b.wav.json").write_text(json.dumps(sidecar))
    assert embed(other, hop_seconds=0.2) == (["a.wav", "b.wav"], 0)
    assert "b.wav again: written by an older embed, whose sidecar records no weights_hash" in caplog.text
    assert "a.wav again: other settings (hop_seconds null -> 0.2)" in caplog.text
    sidecar = json.loads((out / "a.wav.json").read_text())
    assert sidecar["decoder"] == decode.VERSION
    del sidecar["decoder"]  # as written before the readers had a version: their timeline or mix may differ
    (out / "a.wav.json").write_text(json.dumps(sidecar))
    assert embed(other, hop_seconds=0.2) == (["a.wav"], 1)
    assert "a.wav again: decoded by another version of ttt-mm's readers" in caplog.text

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_wav(elsewhere / "a.wav", tone(0.7, 16000), 16000)
    (elsewhere / "list.csv").write_text("path\na.wav\n")  # its a.wav maps to the same output name
    assert embed(other, elsewhere / "list.csv", hop_seconds=0.2) == (["a.wav"], 0)
    assert "another source file maps to this output" in caplog.text
    assert json.loads((out / "a.wav.json").read_text())["source"] == str(elsewhere / "a.wav")

    b.write_bytes(b.read_bytes()[:30])  # now unreadable: its earlier output describes what it was
    assert embed(other, hop_seconds=0.2) == (["a.wav"], 0)  # (its output had become elsewhere's a.wav's)
    assert "removed the earlier output of" in caplog.text and str(b) in caplog.text
    assert not (out / "b.wav.npy").exists() and not (out / "b.wav.json").exists()


def test_overwrite_and_dtype_redo_an_output_and_a_rerun_that_fails_leaves_no_stale_one(ckpts, tmp_path, monkeypatch):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    write_wav(root / "a.wav", tone(0.6, 16000), 16000)
    npy, sidecar = out / "a.wav.npy", out / "a.wav.json"

    def embed(**overrides):
        summary = task.run(_cfg(ckpt=ckpts["audio"], input=root, output=out, **overrides))
        return len(summary.written), len(summary.skipped), len(summary.failed)

    assert embed() == (1, 0, 0) and embed() == (0, 1, 0)
    assert embed(overwrite="true") == (1, 0, 0)  # asked to: embedded again
    assert embed(dtype="float32") == (1, 0, 0) and np.load(npy).dtype == np.float32  # stored otherwise: again
    fail = lambda self, batch: (_ for _ in ()).throw(decode.MediaError(str(root / "a.wav"), "decoding failed"))  # noqa: E731
    with monkeypatch.context() as patch:
        patch.setattr(Stream, "push", fail)
        assert embed(dtype="float16") == (0, 0, 1)  # out of date, and now failing: its old rows are gone
    assert not npy.exists() and not sidecar.exists()
    assert embed() == (1, 0, 0)
    with monkeypatch.context() as patch:  # overwrite=true, failing: its output is still what it would write
        patch.setattr(Stream, "push", fail)
        assert embed(overwrite="true") == (0, 0, 1)
    assert npy.exists() and sidecar.exists()  # (it was removed, "out of date")

    def full_disk(data):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:  # the sidecar cannot be written: the old pair stays, whole
        patch.setattr(atomic, "_json_text", full_disk)
        with pytest.raises(OSError, match="No space left"):
            embed(dtype="float32")
    assert np.load(npy).dtype == np.float16 and json.loads(sidecar.read_text())["dtype"] == "float16"
    assert sorted(p.name for p in out.iterdir()) == ["a.wav.json", "a.wav.npy"]  # (no temporaries left)


def test_a_list_or_a_pattern_given_as_input_says_how_to_give_several_files(ckpts, folder, tmp_path):
    """Both files of ``input=[a,b]`` exist, and ``*`` reaches the command unexpanded: each was said not
    to exist."""
    listed = f"input=[{folder / 'a.wav'},{folder / 'sub' / 'b.flac'}]"
    with pytest.raises(ConfigError, match=r"^input takes one file, folder or manifest; got a list of 2: give their"):
        task.run(_cfg(ckpt=ckpts["audio"], output=tmp_path / "out", **dict([listed.split("=", 1)])))
    with pytest.raises(ConfigError, match=r"^input=.*/\*.wav: a pattern is not expanded here: give the folder"):
        task.run(_cfg(ckpt=ckpts["audio"], input=folder / "*.wav", output=tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"^input=.*/\?\.wav: a pattern is not expanded here"):  # (it matches a.wav)
        task.run(_cfg(ckpt=ckpts["audio"], input=folder / "?.wav", output=tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"^input=.*/my clips \[2024\] does not exist"):  # (a path, not a pattern)
        task.run(_cfg(ckpt=ckpts["audio"], input=f"'{folder / 'my clips [2024]'}'", output=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_dtype_embeddings_are_not_stored_in_is_said_as_other_choices_are(ckpts, folder, tmp_path):
    """As `config_types` says a typed key's (``pool``); it printed a tuple: ``one of ('float16', 'float32')``."""
    with pytest.raises(ConfigError, match=r"^dtype must be one of 'float16', 'float32'; got 'bfloat16'$"):
        task.run(_cfg(ckpt=ckpts["audio"], input=folder, output=tmp_path / "out", dtype="bfloat16"))
    assert not (tmp_path / "out").exists()


def test_inputs_that_list_no_files_and_paths_that_are_not_checkpoints(ckpts, folder, tmp_path):
    (tmp_path / "header.csv").write_text("path,start,end,label\n")
    (tmp_path / "empty.jsonl").write_text("")
    for manifest in ("header.csv", "empty.jsonl"):
        with pytest.raises(ConfigError, match=f"input={tmp_path / manifest}: the manifest lists no files"):
            task.run(_cfg(ckpt=ckpts["audio"], input=tmp_path / manifest, output=tmp_path / "out"))
    with pytest.raises(ConfigError, match=f"checkpoint {tmp_path} is a directory, not a checkpoint file$"):
        task.run(_cfg(ckpt=tmp_path, input=folder, output=tmp_path / "out"))
    # the checkpoint is said first: a mistyped one was said after the inputs were listed (a large folder: minutes)
    with pytest.raises(ConfigError, match=f"^checkpoint {tmp_path / 'x.ckpt'} does not exist$"):
        task.run(_cfg(ckpt=tmp_path / "x.ckpt", input=tmp_path / "no such folder", output=tmp_path / "out"))
    run = tmp_path / "run"  # a run's folder given for its checkpoint: one is named
    (run / "checkpoints").mkdir(parents=True)
    for name in ("epoch0.ckpt", "last.ckpt"):
        (run / "checkpoints" / name).write_bytes(b"")
    with pytest.raises(
        ConfigError, match=f"a checkpoint file; it holds 2 checkpoint\\(s\\), e.g. {run}/checkpoints/last.ckpt$"
    ):
        task.run(_cfg(ckpt=run, input=folder, output=tmp_path / "out"))
    assert task.list_inputs(str(folder), task.extensions_of(".FLAC"))[0][0].name == str(folder / "sub" / "b.flac")
    summary = task.run(_cfg(ckpt=ckpts["audio"], input=folder, output=tmp_path / "out", extensions="flac"))
    assert summary.written == [str(folder / "sub" / "b.flac")] and not summary.failed


def test_files_are_opened_in_this_process_only_after_a_worker_probed_them(ckpts, folder, files, tmp_path, monkeypatch):
    """The command and `embed_file` read what the dataset index found (probed in worker processes):
    this process never probes a file itself, so a decoder that aborts on one cannot take it down."""

    def probe_here(path, *args, **kwargs):
        raise AssertionError(f"{path} probed in the main process")

    monkeypatch.setattr(decode, "probe", probe_here)  # the workers are forked from a clean forkserver: unaffected
    monkeypatch.setattr(decode.probing, "probe", probe_here)  # what a read without a backend would call
    summary = task.run(_cfg(ckpt=ckpts["audio"], input=folder, output=tmp_path / "out", window_seconds=0.4))
    assert len(summary.written) == 2 and len(summary.failed) == 2
    embedder = Embedder.from_checkpoint(ckpts["av"], window_seconds=0.5, device="cpu")
    assert embedder.embed_file(files["av"]).embeddings.shape[0] > 0
    with pytest.raises(decode.MediaError, match="ffmpeg"):
        embedder.embed_file(folder / "sub" / "corrupt.mp4")


def test_manifest_spans_and_labels(ckpts, files, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,start,end,label\n{files['av']},0.5,2.5,dog\n{files['av']},,,cat\n")
    out = tmp_path / "out"
    summary = task.run(_cfg(ckpt=ckpts["av"], input=manifest, output=out, window_seconds=0.5))
    assert len(summary.written) == 2 and not summary.failed
    stem = out.joinpath(*[p for p in Path(str(files["av"])).parts if p != "/"])
    part = load(stem.with_name("clip.mp4@0.5-2.5.npy"))
    assert part.embeddings.shape == (8 * 9, 32) and part.timestamps[0] == 0.5 and part.meta["label"] == "dog"
    assert load(stem.with_name("clip.mp4.json")).meta["label"] == "cat"  # by name: another label shifts no index
    npy = stem.with_name("clip.mp4@0.5-2.5.npy").read_bytes()
    manifest.write_text(f"path,start,end,label\n{files['av']},0.5,2.5,bird\n{files['av']},,,\n")  # relabelled
    summary = task.run(_cfg(ckpt=ckpts["av"], input=manifest, output=out, window_seconds=0.5))
    assert len(summary.skipped) == 2 and not summary.written  # the same rows: not embedded again
    assert load(stem.with_name("clip.mp4@0.5-2.5.npy")).meta["label"] == "bird"  # but the sidecar says the new label
    assert "label" not in load(stem.with_name("clip.mp4.npy")).meta
    assert stem.with_name("clip.mp4@0.5-2.5.npy").read_bytes() == npy


def test_two_inputs_that_would_share_an_output_are_a_config_error(ckpts, files, tmp_path):
    manifest = tmp_path / "list.csv"
    relative = str(files["audio"]).lstrip("/")  # the same output stem as the absolute path
    (tmp_path / relative).parent.mkdir(parents=True)
    shutil.copy(files["audio"], tmp_path / relative)
    manifest.write_text(f"path\n{files['audio']}\n{relative}\n")
    with pytest.raises(ConfigError, match=r"and .* would both be written to .*: list each file once"):
        task.run(_cfg(ckpt=ckpts["audio"], input=manifest, output=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("output", ["notes.txt", "notes.txt/run"])
def test_an_output_under_a_file_is_a_config_error_even_when_every_input_fails(ckpts, tmp_path, output):
    """A bad input's earlier output is removed before the output folder is made: under a file that
    removal raised NotADirectoryError with a traceback."""
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty.wav").write_bytes(b"")
    cfg = _cfg(ckpt=ckpts["audio"], input=tmp_path / "empty.wav", output=tmp_path / output)
    if output == "notes.txt":
        with pytest.raises(ConfigError, match=r"^output=.*notes.txt cannot be made a folder: a file of that name"):
            task.run(cfg)
    else:  # (nothing to write: no folder is needed, and the input's failure is the answer)
        assert task.run(cfg).failed == [(str(tmp_path / "empty.wav"), "empty file (0 bytes)")]
    assert (tmp_path / "notes.txt").read_text() == "x"


def test_an_output_that_cannot_be_written_fails_its_file_alone(ckpts, tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    write_wav(root / "a.wav", tone(1.0, 16000), 16000)
    write_wav(root / ("n" * 248 + ".wav"), tone(1.0, 16000), 16000)  # its output name, + ".npy", is too long
    summary = task.run(_cfg(ckpt=ckpts["audio"], input=root, output=tmp_path / "out"))
    assert summary.written == [str(root / "a.wav")]
    ((name, reason),) = summary.failed
    assert name.endswith("n.wav") and reason == "cannot write its output: File name too long"
    again = task.run(_cfg(ckpt=ckpts["audio"], input=root, output=tmp_path / "out", overwrite=True))
    assert [reason for _, reason in again.failed] == [
        "cannot write its output: File name too long"
    ]  # (it ended the job)

    def no_colons(src, dst):  # as FAT, exFAT and SMB refuse ':' in a name (a whole job stopped)
        if ":" in os.fspath(dst):
            raise OSError(errno.EINVAL, "Invalid argument", os.fspath(dst))
        return replace(src, dst)

    write_wav(root / "a:b.wav", tone(1.0, 16000), 16000)
    replace = os.replace
    monkeypatch.setattr(os, "replace", no_colons)
    summary = task.run(_cfg(ckpt=ckpts["audio"], input=root, output=tmp_path / "out2"))
    assert summary.written == [str(root / "a.wav")] and len(summary.failed) == 2
    assert dict(summary.failed)[str(root / "a:b.wav")] == "cannot write its output: Invalid argument"


def test_a_span_that_no_longer_fits_its_file_loses_its_output(ckpts, tmp_path, caplog):
    wav = write_wav(tmp_path / "tone.wav", tone(3.0, 16000), 16000)
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,start,end\n{wav},0,1\n{wav},2,3\n")
    out = tmp_path / "out"
    first = task.run(_cfg(ckpt=ckpts["audio"], input=manifest, output=out))
    assert sorted(Path(p).name for p in first.written) == ["tone.wav@0-1", "tone.wav@2-3"]
    write_wav(wav, tone(1.5, 16000), 16000)  # the file is now shorter than the second span
    with caplog.at_level(logging.WARNING):
        again = task.run(_cfg(ckpt=ckpts["audio"], input=manifest, output=out))
    assert [Path(p).name for p, _ in again.failed] == ["tone.wav@2-3"]
    assert "starts at 2 s, at or after the end" in again.failed[0][1]
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["tone.wav@0-1.json", "tone.wav@0-1.npy"]
    assert f"embedding {wav}@0-1 again: the source file changed" in caplog.text  # the span, not the file
    wav.write_bytes(b"")  # now unreadable: each span is an output not made
    gone = task.run(_cfg(ckpt=ckpts["audio"], input=manifest, output=out))
    assert [(Path(p).name, r) for p, r in gone.failed] == [
        (f"tone.wav@{s}", "empty file (0 bytes)") for s in ("0-1", "2-3")
    ]


def test_an_output_under_the_older_span_name_is_renamed_not_made_twice(ckpts, tmp_path):
    wav = write_wav(tmp_path / "tone.wav", tone(3.0, 16000), 16000)
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,start,end\n{wav},0.1234567,2\n")
    out = tmp_path / "out"
    assert len(task.run(_cfg(ckpt=ckpts["audio"], input=manifest, output=out)).written) == 1
    (npy,) = out.rglob("*.npy")
    for path in (npy, npy.with_suffix(".json")):  # as the earlier version named them (6 digits)
        path.rename(path.with_name(path.name.replace("@0.1234567-2", "@0.123457-2")))
    again = task.run(_cfg(ckpt=ckpts["audio"], input=manifest, output=out))
    assert len(again.skipped) == 1 and not again.written  # found under its new name and up to date
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "tone.wav@0.1234567-2.json",
        "tone.wav@0.1234567-2.npy",
    ]


def test_a_spans_duration_is_written_without_float_noise(ckpts, tmp_path):
    wav = write_wav(tmp_path / "tone.wav", tone(3.0, 16000), 16000)
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,start,end\n{wav},0.31,2.3\n")
    assert len(task.run(_cfg(ckpt=ckpts["audio"], input=manifest, output=tmp_path / "out")).written) == 1
    (sidecar,) = (tmp_path / "out").rglob("*.json")
    assert '"duration": 1.99,' in sidecar.read_text()


def test_interrupted_run_leaves_no_partial_output(ckpts, folder, tmp_path, monkeypatch):
    calls = {"n": 0}
    push = Stream.push

    def interrupt_on_the_fourth_window(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:  # a.wav has 4 windows of 0.4 s: Ctrl-C in its last one
            raise KeyboardInterrupt
        return push(self, batch)

    monkeypatch.setattr(Stream, "push", interrupt_on_the_fourth_window)
    out = tmp_path / "out"
    said = r"^0 of the 2 readable inputs are embedded in .*out and kept, the one in progress not written; the same"
    with pytest.raises(Interrupted, match=said + " command embeds the rest$"):  # (how far it got, how to go on)
        task.run(_cfg(ckpt=ckpts["audio"], input=folder, output=out, window_seconds=0.4))
    assert [p.name for p in out.rglob("*") if p.is_file()] == []  # nothing final, no temporaries
    calls["n"] = 0  # with overwrite=true the same command would embed every input again, not the rest
    anew = (
        r"^0 of the 2 readable inputs are embedded in .*out anew and kept, the one in progress not written, the "
        r"others' outputs of earlier runs \(if any\) as they were; the same command without overwrite=true embeds "
        r"the rest \(with it, all"
    )  # (a count of this run's: the outputs of earlier runs were not counted, nor said to be there)
    with pytest.raises(Interrupted, match=anew):
        task.run(_cfg(ckpt=ckpts["audio"], input=folder, output=out, window_seconds=0.4, overwrite=True))


def test_a_run_interrupted_while_its_inputs_are_probed_says_nothing_was_written(ckpts, folder, tmp_path, monkeypatch):
    """It said that finished outputs were kept and the file in progress not written."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(task, "index_clips", interrupted)
    with pytest.raises(Interrupted, match=r"^nothing was written \(the inputs were being listed and probed\)$"):
        task.run(_cfg(ckpt=ckpts["audio"], input=folder, output=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ttt_mm.tasks.embed", "progress=false", "threads=1", *args]


def test_embed_and_the_probe_start_without_lightning_or_the_compiler():
    """They run in one process and use none of them, yet importing Lightning took 2-3 s of every start
    (a missing input was said after 7 s), and torch's compiler (imported where an op was marked to run
    as it is under torch.compile) about 1 s more."""
    loaded = "import sys, ttt_mm.tasks.embed, ttt_mm.tasks.linear_probe; print(*sys.modules, sep='\\n')"
    proc = subprocess.run([sys.executable, "-c", loaded], capture_output=True, text=True, timeout=120, check=True)
    modules = proc.stdout.splitlines()
    assert "ttt_mm.tasks.embed" in modules and not [m for m in modules if m.split(".")[0] == "lightning"]
    assert "torch._dynamo" not in modules and "torch._inductor" not in modules


@pytest.mark.slow
@pytest.mark.parametrize("name", ["empty.wav", "new\nline.wav"])
def test_single_bad_file_is_one_error_line(ckpts, folder, tmp_path, name):
    """(A line break in the name is escaped: the line stays one.)"""
    (folder / name).write_bytes(b"")
    proc = subprocess.run(
        _command(f"ckpt={ckpts['audio']}", f"input='{folder / name}'", f"output={tmp_path / 'out'}"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {folder / name.replace(chr(10), chr(92) + 'n')}: empty file (0 bytes)"
    assert os.listdir(tmp_path) == ["in"]  # no output, no Hydra run directory or log file


@pytest.mark.slow
def test_a_key_added_with_a_plus_that_the_command_does_not_have_is_an_error(ckpts, folder, tmp_path):
    """Hydra suggests +key=value for a key it does not know: +hop=0.5 then ran as if not given."""
    out = tmp_path / "out"
    proc = subprocess.run(
        _command(f"ckpt={ckpts['audio']}", f"input={folder / 'a.wav'}", f"output={out}", "+hop=0.5"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().endswith("error: +hop: hop is not a key of this command; did you mean hop_seconds?")
    # a training setting: embed ran as if it had not been given (the model's own are used)
    data = _command(f"ckpt={ckpts['audio']}", f"input={folder / 'a.wav'}", f"output={out}", "+data.clip_second=4")
    proc = subprocess.run(data, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and not out.exists()
    said = "error: +data.clip_second: this command has no data settings: it uses those of the model's checkpoint"
    assert proc.stderr.strip().endswith(said + ", as trained")
    own = _command(f"ckpt={ckpts['audio']}", f"input={folder / 'a.wav'}", f"output={out}", "+tag=abc")
    proc = subprocess.run(own, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and (out / "a.wav.npy").is_file()  # a key of the user's own, like none of these


# The embed command with its row writer stalled after the first rows: a run caught mid-file, whatever
# the machine's speed.
_STALLED_EMBED = """
import sys, threading
from ttt_mm.embed.files import NpyRowWriter
write = NpyRowWriter.write
def stall(self, rows):
    write(self, rows)
    self.file.flush()
    threading.Event().wait()
NpyRowWriter.write = stall
sys.argv = ["embed", *sys.argv[1:]]
from ttt_mm.tasks.embed import main
main()
"""


@pytest.mark.slow
def test_killed_run_leaves_no_partial_npy(ckpts, tmp_path):
    long = write_wav(tmp_path / "long.wav", tone(4.0, 16000), 16000)
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-c",
        _STALLED_EMBED,
        *_command(f"ckpt={ckpts['audio']}", f"input={long}", f"output={out}")[3:],
    ]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size for p in out.glob(".long.wav.npy.*.tmp")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the stalled run ended on its own"
            time.sleep(0.05)
        assert list(out.glob(".long.wav.npy.*.tmp")), "no rows were written within two minutes"
    finally:
        proc.send_signal(signal.SIGKILL)  # the stalled run never ends by itself
        proc.wait()
    assert list(out.glob("*.npy")) == [] and list(out.glob("*.json")) == []


def test_npy_writer_header_and_float16_overflow(tmp_path):
    path = tmp_path / "x.npy"
    with open(path, "wb") as f:
        writer = NpyRowWriter(f, 3, "float32")
        writer.write(np.arange(6, dtype=np.float32).reshape(2, 3))
        writer.write(np.ones((0, 3), np.float32))
        writer.write(np.full((1, 3), 7, np.float32))
        writer.close()
    np.testing.assert_array_equal(np.load(path), [[0, 1, 2], [3, 4, 5], [7, 7, 7]])
    with open(tmp_path / "y.npy", "wb") as f, pytest.raises(ValueError, match="overflow float16"):
        NpyRowWriter(f, 1, "float16").write(np.array([[1e6]], np.float32))


def test_a_device_this_machine_lacks_is_one_error_line(ckpts, folder, tmp_path, monkeypatch):
    """The embed command and the Embedder resolve devices as evaluate does (one rule)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device=cuda, but this machine has no usable CUDA GPU"):
        task.run(_cfg(ckpt=ckpts["audio"], input=folder, output=tmp_path / "out", device="cuda"))
    with pytest.raises(ValueError, match="is not a device"):
        Embedder.from_checkpoint(ckpts["audio"], device="gpu0")
    assert Embedder.from_checkpoint(ckpts["audio"]).device == torch.device("cpu")


@pytest.mark.slow
def test_a_sweep_embeds_each_job_into_its_own_folder_and_goes_on_past_bad_files(ckpts, folder, tmp_path):
    """``-m ckpt=a,b``: each job's outputs land in ``output/<job>`` (they overwrote each other in
    ``output``), and a job with bad files fails without ending the sweep (its exit used to)."""
    out = tmp_path / "out"
    both = f"ckpt={ckpts['audio']},{ckpts['audio_mamba']}"
    proc = subprocess.run(
        [*_command(both, f"input={folder}", f"output={out}"), "-m"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 1 and "2 input(s) failed" in proc.stderr, proc.stderr[-3000:]
    said = proc.stderr.splitlines()  # what each job ran, also the first (job 0's own logging hid it)
    assert [m[1] for line in said if (m := re.search(r"\[HYDRA\]\s+(#\d+) : ", line))] == ["#0", "#1"]
    assert any(line.endswith("Launching 2 jobs locally") for line in said)
    report = proc.stderr.rstrip().splitlines()[-3:]  # every failed job, not only the first Hydra raises
    assert report[0] == "sweep: 2 job(s) of 2 ended in an error:"
    for job, name in enumerate(["audio", "audio_mamba"]):
        line = report[1 + job]
        assert line.startswith(f"  #{job} ") and f"ckpt={ckpts[name]} " in line
        assert re.search(r": 2 input\(s\) failed, [1-9]\d* embedded \(outputs kept\)$", line)  # (a job that ran)
    assert (out / "multirun.yaml").is_file() and not (tmp_path / "multirun").exists()  # not in the current folder
    for job, name in enumerate(["audio", "audio_mamba"]):
        sidecar = json.loads((out / str(job) / "a.wav.json").read_text())
        assert sidecar["checkpoint"] == str(ckpts[name])
        assert (out / str(job) / "sub" / "b.flac.npy").is_file()


def test_a_sweep_without_an_output_is_refused_once_before_any_job(tmp_path):
    """Each job failed alone on the missing output, after the sweep had made its folder in the shared /tmp."""
    proc = subprocess.run(
        [*_command("ckpt=a.ckpt", f"input={tmp_path}", "pool=mean,max"), "-m"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        "error: output must be set (hydra.sweep.dir reads it), e.g. output=/path/to/folder"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # (no sweep folder, nothing written)
