import logging
import os

import pytest
import torch

if not torch.cuda.is_available():  # the Triton kernels then run, slowly but exactly, in Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _root_logging():
    """A Hydra job run in a test sets up logging (console and file handlers, the root logger at INFO);
    they go with the test: a root left at INFO let later tests' caplog hold INFO lines they never asked
    for, and those tests failed only after such a one."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The dataset index and the compiled CPU loops cache under $XDG_CACHE_HOME: keep the tests' out of
    the user's home (the loops are compiled once per session, in a few seconds)."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def media_tree(tmp_path_factory):
    """Small real media in every layout the data configs read: class folders of videos with sound,
    a CSV manifest of them, and a LibriSpeech-style tree of FLAC files."""
    from mediafiles import tone, write_video, write_wav

    root = tmp_path_factory.mktemp("media_tree")
    videos = root / "videos"
    for cls, name in (("bounce", "a.mp4"), ("bounce", "b.mp4"), ("still", "c.mp4")):
        (videos / cls).mkdir(parents=True, exist_ok=True)
        write_video(videos / cls / name, seconds=3.0, fps=16, width=64, height=48, audio_rate=16000)
    manifest = root / "manifest.csv"
    manifest.write_text(
        "path,label\n" + "".join(f"videos/{c}/{n},{c}\n" for c, n in (("bounce", "a.mp4"), ("still", "c.mp4")))
    )
    libri = root / "librispeech"
    for speaker, chapter, utt in (("19", "198", 0), ("19", "198", 1), ("26", "495", 0)):
        folder = libri / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        write_wav(folder / f"{speaker}-{chapter}-{utt:04d}.flac", tone(3.0, 16000, 300 + 100 * utt), 16000)
    return {"videos": videos, "manifest": manifest, "librispeech": libri}
