"""The embedding benchmark's pieces: each model row builds the tokenizer it names, and a child embeds a
file through the embed command's own config (a smoke run on a few seconds of audio: nothing timed)."""

import logging
import os

import numpy as np
import pytest
import soundfile as sf

from ttt_mm.bench import embed
from ttt_mm.bench.media import write_synthetic_flac
from ttt_mm.checkpoint import load_parts
from ttt_mm.data import selection
from ttt_mm.data.synthetic import SyntheticClip


def test_every_row_builds_the_tokenizer_it_names(tmp_path):
    kinds = {}
    for i, (name, (overrides, _)) in enumerate(embed.model_configs(32).items()):
        path = tmp_path / f"m{i}.ckpt"
        embed.write_checkpoint(path, [*overrides, "size=tiny"])
        kinds[name.split()[0]] = type(load_parts(path).tokenizer).__name__
    assert kinds == {"audio": "AudioTokenizer", "AV": "AVTokenizer", "video": "VideoTokenizer"}


def test_writing_a_checkpoint_prints_none_of_lightnings_notices(tmp_path, caplog):
    """Each model of the table printed Lightning's GPU and TPU lines and its tip, before the table."""
    notices = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = notices.level
    with caplog.at_level(logging.INFO):
        embed.write_checkpoint(tmp_path / "m.ckpt", ["tokenizer=audio", "size=tiny"])
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("lightning")]
    assert notices.level == level  # (put back)


def test_generated_audio_lasts_as_asked_and_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    """60.4 s came out as 60 s (the last part under half a second was dropped), and a file under 0.5 s
    had no samples; a run stopped while writing left a short file that --keep reused as whole."""
    for seconds in (60.4, 0.3):
        path = write_synthetic_flac(tmp_path / f"{seconds}.flac", minutes=seconds / 60)
        assert sf.info(str(path)).frames == round(seconds * 16000)
    monkeypatch.setattr(SyntheticClip, "audio", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_flac(tmp_path / "stopped.flac", minutes=2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.3.flac", "60.4.flac"]


def test_a_child_embeds_a_file_as_the_command_does(tmp_path):
    ckpt = tmp_path / "audio.ckpt"
    embed.write_checkpoint(ckpt, ["tokenizer=audio", "size=tiny"])
    flac = write_synthetic_flac(tmp_path / "tone.flac", minutes=0.1)
    row = embed.child(str(ckpt), str(flac), str(tmp_path / "out"), threads=1)
    assert row["media"] == pytest.approx(6.0, abs=0.05) and row["tokens"] == 150  # 25 tokens/s
    assert row["wall"] >= row["decode"] > 0 and row["peak_rss_mb"] >= row["rss_before_mb"] > 0
    assert row["index"] > 0  # the index's check, timed apart: a new file's, each child in an empty cache of its own
    caches = []
    real = selection.index_clips

    def index_clips(clips, spec, cache_dir, *args, **kwargs):
        caches.append((cache_dir, sorted(os.listdir(cache_dir))))
        return real(clips, spec, cache_dir, *args, **kwargs)

    memory = []  # the peak starts again before embedding: building the model and the index's check are not in it
    real_read = embed.resident_mib
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selection, "index_clips", index_clips)
        patch.setattr(embed, "reset_peak", lambda: memory.append("reset") or True)
        patch.setattr(embed, "resident_mib", lambda field: memory.append(field) or real_read(field))
        embed.child(str(ckpt), str(flac), str(tmp_path / "out"), threads=1)
        embed.child(str(ckpt), str(flac), str(tmp_path / "out"), threads=1)
    assert len(caches) == 2 and caches[0][0] != caches[1][0] and caches[0][1] == caches[1][1] == []
    assert memory == ["reset", "VmRSS", "VmHWM"] * 2
    rows = np.load(next((tmp_path / "out").glob("*.npy")))
    assert rows.shape[0] == 150 and rows.dtype == np.float16  # the command's default dtype


def test_a_short_file_no_shorter_than_a_long_one_is_a_usage_error_before_anything_runs(capsys):
    """Equal lengths ran every child, then failed on the memory ratio (an IndexError)."""
    with pytest.raises(SystemExit) as ended:
        embed.main(["--audio-minutes", "0.25", "--short-minutes", "0.25"])
    assert ended.value.code == 2 and "--short-minutes must be shorter" in capsys.readouterr().err


def test_a_short_file_named_as_a_long_one_is_a_usage_error(capsys):
    """59.99999 and 60 minutes are both written as audio_60min.flac: the long row embedded the short
    file again, and the memory ratio came out 1.0."""
    with pytest.raises(SystemExit) as ended:
        embed.main(["--audio-minutes", "60", "--video-minutes", "61", "--short-minutes", "59.99999"])
    assert ended.value.code == 2 and "must differ from --audio-minutes" in capsys.readouterr().err
