"""Embedding speed and memory of long files on this machine: ``python -m ttt_mm.bench embed [options]``.

Inputs are generated into a temporary folder (or ``--keep DIR``, reused when present) from the
synthetic clips of `ttt_mm.data.synthetic`: a 60-minute 16 kHz mono FLAC and a 10-minute H.264 +
AAC video (256 x 256, 24 fps, 16 kHz mono), plus 1-minute versions of both for the memory target.
Models are the default training config (``conf/train.yaml``: TTT-Linear, 128 wide, 4 blocks) with
random weights, which cost the same as trained ones: the audio tokenizer for the FLAC and the
audio-visual tokenizer of ``experiment=synthetic_av`` for the video (32 px video tokens as that
run trains it; ``--video-size 128`` for the tokenizer's own default), and the video tokenizer alone
(``python train.py``'s) on the same video, which separates the cost of its audio track.

Each (model, input) runs in a fresh subprocess that embeds the file as the embed command does on
its first run over it: the file is checked by the dataset index (``index s``: probe workers started,
the audio read whole, the first and last frames decoded; a new cache, as for a file never seen; later
runs read the cache) and then embedded (`ttt_mm.tasks.embed.embed_one`: windows streamed with the
state carried, rows written to a float16 ``.npy``). It reports the embedding's wall time (``x real
time`` and ``RTF`` are of it alone), the part of it spent decoding windows (``decode s``; the rest is
tokenizing, the model and writing), tokens, its RSS before embedding and its peak RSS (``VmHWM``).
Target: the peak RSS for the 60-minute audio file within 1.2x of that for the 1-minute file; the
ratio of what each file adds above the RSS before embedding is printed beside it (most of the peak
is torch and the decoders, loaded either way). (Audio tracks inside video containers are decoded
whole by PyAV when first read, see `ttt_mm.data.decode`, so the peak of the audio-visual rows grows
with the video's length.)
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ttt_mm.bench.media import write_synthetic_flac, write_synthetic_video
from ttt_mm.tasks.common import CONF_DIR

from .arguments import positive_float, positive_int
from .memory import reset_peak, resident_mib

TARGET_RATIO = 1.2


def model_configs(size: int) -> dict[str, tuple[list[str], str]]:
    """Name: (``train.yaml`` overrides, input kind) of each model, video tokens at ``size`` px."""
    return {
        "audio tokenizer (25 tok/s)": (["tokenizer=audio"], "audio"),
        f"AV tokenizer, {size} px": (["experiment=synthetic_av", f"data.size={size}"], "video"),
        f"video tokenizer, {size} px": (["tokenizer=video", f"data.size={size}"], "video"),
    }


def write_checkpoint(path: Path, overrides: list[str]) -> str:
    """Save the default training model (``conf/train.yaml`` + ``overrides``) with random weights the
    way Lightning does; returns its backbone in words."""
    import lightning as L
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    model = instantiate(cfg.model)
    quiet = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    notices = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = notices.level
    notices.setLevel(logging.WARNING)  # (it only saves: its GPU and TPU lines and tips said nothing, three times)
    try:
        trainer = L.Trainer(accelerator="cpu", **quiet)
        trainer.strategy.connect(model)
        trainer.save_checkpoint(path, weights_only=False)
    finally:
        notices.setLevel(level)
    b = model.backbone
    return f"{b.mixer_name} {b.dim} wide x {b.depth} blocks"


# ------------------------------------------------------------------------------------------ child


def child(ckpt: str, media: str, out: str, threads: int) -> dict:
    """Embed one file as the command does; timings and memory of this process."""
    import torch
    from hydra import compose, initialize_config_dir

    from ttt_mm.data.selection import index_clips
    from ttt_mm.data.sources import ClipInfo
    from ttt_mm.tasks import embed as task

    torch.set_num_threads(threads)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):  # the command's own defaults
        cfg = compose("embed", overrides=[f"ckpt={ckpt}", "device=cpu"])
    embedder, meta = task.build(cfg)
    decode = [0.0]
    windows = embedder.windows

    def timed_windows(*args, **kwargs):  # time spent decoding, apart from tokenizer, model and writer
        it = windows(*args, **kwargs)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            decode[0] += time.perf_counter() - t0
            if batch is None:
                return
            yield batch

    embedder.windows = timed_windows
    with tempfile.TemporaryDirectory() as cache:  # (a cache of its own: as for a file never seen)
        t0 = time.perf_counter()
        selection = index_clips([ClipInfo(media, key=Path(media).name)], embedder.read_spec(), cache)
        index = time.perf_counter() - t0
    if not selection.clips:
        raise RuntimeError(f"the index left {media} out: {selection.rejected}")
    reset_peak()  # (the peak of building the model and indexing the file is not the embedding's)
    rss_before = resident_mib("VmRSS")
    t0 = time.perf_counter()
    data = task.embed_one(embedder, selection.clips[0], Path(out) / Path(media).name, meta, cfg.dtype)
    wall = time.perf_counter() - t0
    return {
        "index": index,
        "wall": wall,
        "decode": decode[0],
        "media": data["duration"],
        "tokens": data["tokens"],
        "rss_before_mb": rss_before,
        "peak_rss_mb": resident_mib("VmHWM"),
    }


def _run_child(ckpt: Path, media: Path, out: Path, threads: int) -> dict:
    call = f"child({str(ckpt)!r}, {str(media)!r}, {str(out)!r}, {threads})"
    code = f"import json; from ttt_mm.bench.embed import child; print(json.dumps({call}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"embedding {media} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttt_mm.bench embed", description=__doc__.splitlines()[0])
    parser.add_argument("--audio-minutes", type=positive_float, default=60.0)
    parser.add_argument("--video-minutes", type=positive_float, default=10.0)
    parser.add_argument(
        "--short-minutes", type=positive_float, default=1.0, help="the reference file for the memory ratio"
    )
    parser.add_argument(
        "--video-size", type=positive_int, default=32, help="video tokenizer frame size (32: the default training data)"
    )
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads in each embedding process")
    parser.add_argument("--keep", default=None, help="folder for the generated media (reused if present)")
    args = parser.parse_args(argv)
    if args.short_minutes >= min(args.audio_minutes, args.video_minutes):
        parser.error("--short-minutes must be shorter than --audio-minutes and --video-minutes (the memory ratio)")
    if f"{args.short_minutes:g}" in (f"{args.audio_minutes:g}", f"{args.video_minutes:g}"):  # (the files' names)
        parser.error("--short-minutes must differ from --audio-minutes and --video-minutes in 6 significant digits")

    with tempfile.TemporaryDirectory() as tmp:
        media = Path(args.keep or tmp)
        media.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        files: dict[tuple[str, float], Path] = {}
        for kind in ("audio", "video"):
            for minutes in (args.short_minutes, args.audio_minutes if kind == "audio" else args.video_minutes):
                path = media / (f"audio_{minutes:g}min.flac" if kind == "audio" else f"video_{minutes:g}min.mp4")
                if not path.is_file():
                    try:
                        (write_synthetic_flac if kind == "audio" else write_synthetic_video)(path, minutes)
                    except ImportError:
                        print("PyAV is needed to write the benchmark video: pip install -e '.[dev]'")
                        return 2
                files[kind, minutes] = path
        print(f"media ready in {time.perf_counter() - t0:.0f} s under {media}", flush=True)
        models = model_configs(args.video_size)
        ckpts = {name: Path(tmp) / f"model{i}.ckpt" for i, name in enumerate(models)}
        backbones = {write_checkpoint(ckpts[name], overrides) for name, (overrides, _) in models.items()}
        print(f"default training config ({', '.join(sorted(backbones))}), random weights, ", end="")
        print(f"torch threads {args.threads}, float16 .npy output")
        print(
            f"{'input':<24} {'model':<28} {'media s':>8} {'tokens':>9} {'index s':>8} {'wall s':>8} {'decode s':>9} "
            f"{'x real time':>12} {'RTF':>7} {'RSS before MB':>14} {'peak RSS MB':>12} {'peak - before':>14}"
        )
        ratios, added = {}, {}
        for name, (_, kind) in models.items():
            rows = []
            for (file_kind, _), path in files.items():
                if file_kind != kind:
                    continue
                r = _run_child(ckpts[name], path, Path(tmp) / "out", args.threads)
                rows.append(r)
                print(
                    f"{path.name:<24} {name:<28} {r['media']:8.0f} {r['tokens']:9d} {r['index']:8.1f} {r['wall']:8.1f} "
                    f"{r['decode']:9.1f} {r['media'] / r['wall']:11.1f}x {r['wall'] / r['media']:7.4f} "
                    f"{r['rss_before_mb']:14.0f} {r['peak_rss_mb']:12.0f} "
                    f"{r['peak_rss_mb'] - r['rss_before_mb']:14.0f}",
                    flush=True,
                )
            short, long = rows  # (the short file first: `files` lists it first for each kind)
            ratios[name] = long["peak_rss_mb"] / short["peak_rss_mb"]
            added[name] = (long["peak_rss_mb"] - long["rss_before_mb"]) / max(
                1.0, short["peak_rss_mb"] - short["rss_before_mb"]
            )
        for name, ratio in ratios.items():
            target = f"target <= {TARGET_RATIO}" if name.startswith("audio") else "no target"
            print(
                f"peak RSS, long / {args.short_minutes:g}-minute file, {name}: {ratio:.3f} ({target}); "
                f"what the file adds above the RSS before: {added[name]:.2f}x"
            )
    return 0 if next(iter(ratios.values())) <= TARGET_RATIO else 1
