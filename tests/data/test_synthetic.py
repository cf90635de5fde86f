"""The synthetic audio-visual clips: deterministic, cut anywhere, sounds on events, a per-clip chain rule."""

from __future__ import annotations

import numpy as np
import torch

from ttt_mm.data import SyntheticClip
from ttt_mm.data.synthetic import NOTE_HZ, NOTE_PATTERN, NOTES, RUN, TILE


def test_deterministic_by_seed_and_index():
    a, b = SyntheticClip(1, 4), SyntheticClip(1, 4)
    assert torch.equal(a.audio(3.0, 1.0), b.audio(3.0, 1.0)) and torch.equal(
        a.video(3.0, 1.0, 8, 32), b.video(3.0, 1.0, 8, 32)
    )
    assert not torch.equal(a.audio(3.0, 1.0), SyntheticClip(1, 5).audio(3.0, 1.0))
    assert not torch.equal(a.audio(3.0, 1.0), SyntheticClip(2, 4).audio(3.0, 1.0))


def test_windows_cut_anywhere_join_exactly():
    clip = SyntheticClip(0, 2)
    cuts = [0.0, 0.3125, 1.0, 2.75, 4.0]  # on the 1/16000 and 1/8 grids
    audio = torch.cat([clip.audio(s, e - s) for s, e in zip(cuts, cuts[1:])])
    video = torch.cat([clip.video(s, e - s, 8, 32) for s, e in zip(cuts[:1] + cuts[2:], cuts[2:])])
    assert torch.equal(audio, clip.audio(0.0, 4.0)) and torch.equal(video, clip.video(0.0, 4.0, 8, 32))
    assert clip.audio(-0.5, 1.0)[:8000].abs().max() == 0  # nothing before t = 0


def test_any_length_is_cheap(monkeypatch):
    """A window three hours into a clip computes only around that window (counted, not timed): the
    sounds, positions and chain notes asked for, and the random streams drawn."""
    clip = SyntheticClip(0, 0, duration=4 * 3600.0)
    start = 3 * 3600.0
    asked = {"events": [], "positions": [], "chain": []}

    def spy(method, calls):
        def recorded(self, *args):
            calls.append(args)
            return method(self, *args)

        return recorded

    for name, calls in asked.items():
        monkeypatch.setattr(SyntheticClip, name, spy(getattr(SyntheticClip, name), calls))
    streams = []
    default_rng = np.random.default_rng
    monkeypatch.setattr(np.random, "default_rng", lambda seed: streams.append(seed) or default_rng(seed))

    audio, video = clip.audio(start, 4.0), clip.video(start, 4.0, 8, 128)
    assert audio.shape == (64000,) and video.shape == (32, 3, 128, 128) and audio.abs().max() < 1.0
    assert asked["events"] and all(start - 5 <= t0 < t1 <= start + 5 for t0, t1 in asked["events"])
    assert asked["positions"] and all(start <= t.min() <= t.max() <= start + 4 for (t,) in asked["positions"])
    steps = np.concatenate([np.ravel(s) for (s,) in asked["chain"]])
    assert len(steps) <= 100 and steps.min() >= (start - 5) / 0.25
    assert 0 < len(streams) <= 32  # noise for 4 or 5 seconds and the chain blocks of its steps (16 here)


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
    notes = [e for e in events if e.kind == "note"]
    clear = [  # bounces with no chain note near their pitch (or its octave) just before or after
        (t, hz)
        for t, hz in bounce_events
        if all(min(abs(n.hz - hz), abs(2 * n.hz - hz)) > 0.05 * hz for n in notes if -0.4 < n.time - t < 0.1)
    ]
    t, hz = clear[0]
    assert hz in scene.pitch

    def level(at: float) -> float:  # magnitude at the bounce pitch in 0.1 s from `at`
        return float(torch.fft.rfft(clip.audio(at, 0.1) * torch.hann_window(1600)).abs()[round(hz / 10)])

    assert level(t) > 4 * level(t - 0.1)


def _walk(successor: np.ndarray, steps: int) -> list[int]:
    notes = [0]
    for _ in range(steps):
        notes.append(int(successor[notes[-1]]))
    return notes


def test_the_chain_follows_its_clips_rule_between_jumps():
    clip = SyntheticClip(0, 9)
    assert sorted(_walk(clip.scene.successor, NOTES - 1)) == list(range(NOTES))  # one cycle through every note
    steps = np.arange(1, 2000)
    notes = clip.chain(np.arange(2000))
    follows = notes[1:] == clip.scene.successor[notes[:-1]]
    assert follows[steps % RUN != 0].all()
    assert 0.8 / NOTES < 1 - follows[steps % RUN == 0].mean() < 1  # a jump lands anywhere
    assert np.array_equal(clip.chain(np.arange(500, 700)), notes[500:700])  # any stretch, the same notes
    assert not np.array_equal(SyntheticClip(0, 10).scene.successor, clip.scene.successor)


def test_each_chain_note_is_seen_and_heard():
    clip = SyntheticClip(0, 9)
    frames = clip.video(0.0, 6.0, 8, 32).permute(0, 2, 3, 1).float() / 255  # [48, 32, 32, 3]
    notes = clip.chain(clip.step_at(np.arange(48) / 8))
    cells = np.arange(32) * 2 * TILE // 32 % TILE  # 2 x 2 tiles of TILE x TILE cells
    expected = torch.from_numpy(NOTE_PATTERN[notes][:, cells][:, :, cells]).float()
    match = ((frames - expected).abs().amax(-1) < 1 / 255).float().mean(dim=(1, 2))
    assert (match > 0.8).all()  # the note's picture, except where a square covers it
    assert clip.step_at(np.arange(48) / 8).tolist() == [
        (k + 1) // 2 for k in range(48)
    ]  # a change inside every tubelet
    onsets = [e for e in clip.events(0.0, 6.0) if e.kind == "note"]
    assert [round(e.time / 0.125) for e in onsets] == [0] + list(range(1, 48, 2))
    heard = 0
    for e in onsets[1:]:
        spectrum = torch.fft.rfft(clip.audio(e.time + 0.005, 0.1) * torch.hann_window(1600)).abs()
        heard += abs(int(spectrum.argmax()) * 10 - e.hz) <= 20
        assert e.hz in NOTE_HZ
    assert heard >= 0.8 * (len(onsets) - 1)
