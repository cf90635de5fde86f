"""The synthetic audio-visual clips: deterministic, cut anywhere, sounds on events, a recurring motif."""

from __future__ import annotations

import time

import numpy as np
import torch

from ttt_mm.data import SyntheticClip


def test_deterministic_by_seed_and_index():
    a, b = SyntheticClip(1, 4), SyntheticClip(1, 4)
    assert torch.equal(a.audio(3.0, 1.0), b.audio(3.0, 1.0)) and torch.equal(a.video(3.0, 1.0, 8, 32), b.video(3.0, 1.0, 8, 32))
    assert not torch.equal(a.audio(3.0, 1.0), SyntheticClip(1, 5).audio(3.0, 1.0))
    assert not torch.equal(a.audio(3.0, 1.0), SyntheticClip(2, 4).audio(3.0, 1.0))


def test_windows_cut_anywhere_join_exactly():
    clip = SyntheticClip(0, 2)
    cuts = [0.0, 0.3125, 1.0, 2.75, 4.0]  # on the 1/16000 and 1/8 grids
    audio = torch.cat([clip.audio(s, e - s) for s, e in zip(cuts, cuts[1:])])
    video = torch.cat([clip.video(s, e - s, 8, 32) for s, e in zip(cuts[:1] + cuts[2:], cuts[2:])])
    assert torch.equal(audio, clip.audio(0.0, 4.0)) and torch.equal(video, clip.video(0.0, 4.0, 8, 32))
    assert clip.audio(-0.5, 1.0)[:8000].abs().max() == 0  # nothing before t = 0


def test_any_length_is_cheap():
    clip = SyntheticClip(0, 0, duration=4 * 3600.0)
    started = time.perf_counter()
    audio, video = clip.audio(3 * 3600.0, 4.0), clip.video(3 * 3600.0, 4.0, 8, 128)
    assert time.perf_counter() - started < 1.0
    assert audio.shape == (64000,) and video.shape == (32, 3, 128, 128) and audio.abs().max() < 1.0


def test_every_bounce_makes_a_tone_at_the_squares_pitch():
    clip = SyntheticClip(3, 1)
    scene = clip.scene
    times = np.arange(0, 20, 1 / 1000)
    velocity = np.diff(clip.positions(times), axis=0)  # [T-1, K, 2]
    turns = np.flatnonzero((np.sign(velocity[1:]) != np.sign(velocity[:-1])).any(axis=(1, 2)))
    assert len(turns) > 3
    events = clip.events(0.0, 20.0)
    bounce_events = [(e.time, e.hz) for e in events if e.kind == "bounce"]
    for turn in turns:
        t = times[turn + 1]
        assert min(abs(t - e) for e, _ in bounce_events) < 2e-3, f"no sound at the bounce at {t:.3f} s"
    notes = [e.time for e in events if e.kind == "note"]
    quiet = [(t, hz) for t, hz in bounce_events if min(abs(t - n) for n in notes) > 0.4]
    t, hz = quiet[0]
    assert hz in scene.pitch
    spectrum = torch.fft.rfft(clip.audio(t, 0.1) * torch.hann_window(1600)).abs()  # 10 Hz per bin
    assert abs(int(spectrum.argmax()) * 10 - hz) <= 10
    assert clip.audio(t - 0.1, 0.09).abs().max() < 0.5 * clip.audio(t, 0.05).abs().max()


def test_the_motif_recurs_every_period():
    clip = SyntheticClip(0, 9)
    grid = round(clip.scene.period * 16000) / 16000  # a period in whole samples
    one, later = clip.audio(20.0, 2.0), clip.audio(20.0 + 3 * grid, 2.0)
    other = SyntheticClip(0, 10).audio(20.0, 2.0)
    corr = float(torch.corrcoef(torch.stack([one, later]))[0, 1])
    corr_other = float(torch.corrcoef(torch.stack([one, other]))[0, 1])
    assert corr > 0.5 and abs(corr_other) < 0.1, (corr, corr_other)
