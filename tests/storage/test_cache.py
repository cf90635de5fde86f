"""One cache setting moves every cache the pipeline keeps."""

from __future__ import annotations

from ttt_mm.data.index import cache_file
from ttt_mm.ops.native import build


def test_xdg_cache_home_moves_the_dataset_index_and_the_compiled_loops(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TTT_MM_CACHE", raising=False)
    assert cache_file([str(tmp_path / "clips" / "a.wav")]).parent == tmp_path / "ttt-mm" / "index"
    assert build._cache_dir() == tmp_path / "ttt-mm" / "kernels"
    monkeypatch.setenv("TTT_MM_CACHE", str(tmp_path / "loops"))
    assert build._cache_dir() == tmp_path / "loops"
