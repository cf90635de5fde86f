"""Embedding files: a ``.npy`` written row by row (constant memory) and its ``.json`` sidecar.

Layout of one output, e.g. ``talk.flac.npy`` + ``talk.flac.json``:

- ``.npy``: ``[N, D]`` float16 or float32, a plain NumPy array (``np.load(path, mmap_mode="r")``);
- ``.json``: ``source``, ``start``/``end``/``duration`` (seconds of the file that were embedded),
  ``shape``, ``dtype``, ``layer``, ``norm``, ``hop_seconds``, ``clock`` (the row timestamps in
  compact form, see `ttt_mm.embed.clock.Clock`), ``pool`` and ``pooled`` (the pooled vector),
  ``checkpoint``, ``config_hash`` (of the model config and the embedding options), ``weights_hash``
  (of the checkpoint's weights), ``model`` and ``mixer`` (its mixers' kind, `Backbone.mixer_name`),
  and what the rows were made from: ``source_bytes`` and ``source_mtime_ns`` (the source file when it
  was read), ``span`` (the requested start and end) and ``decoder`` (`ttt_mm.data.decode.VERSION`:
  the readers' version); for an audio-visual model, ``silent_track`` (true: a video without usable
  sound, read with silence in its place).

Both are written under hidden temporary names in the same folder and renamed into place, the
``.npy`` first (`ttt_mm.storage.atomic.replaced_with_sidecar`): an interrupted run leaves no ``.npy``
or ``.json`` that is partial, and an output counts as done only when its ``.json`` exists. `load`
reads both back with the timestamps. `output_stem` names an input's output, and `out_of_date` says
when a finished one must be redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import torch

from ttt_mm.data import decode
from ttt_mm.data.decode import MediaError
from ttt_mm.data.sources import ClipInfo
from ttt_mm.embed.clock import Clock

DTYPES = ("float16", "float32")
SETTINGS = ("layer", "norm", "hop_seconds", "pool", "dtype")
"""The sidecar fields `config_hash` covers beside the model: the embedder's options that change its
rows, and the dtype they are stored in."""


class RowError(ValueError):
    """Rows that cannot be stored as asked (not finite, or beyond float16's range)."""


_HEADER_BYTES = 128  # whole .npy header; the shape is rewritten in place when the rows are known


def _npy_header(dtype: np.dtype, rows: int, dim: int) -> bytes:
    """A version-1.0 ``.npy`` header padded to exactly `_HEADER_BYTES` (so it can be rewritten)."""
    text = f"{{'descr': '{dtype.str}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    room = _HEADER_BYTES - 10 - 1  # magic (6) + version (2) + length (2), then text and "\n"
    if len(text) > room:
        raise ValueError(f"{rows} x {dim} rows do not fit a {_HEADER_BYTES}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", room + 1) + text.ljust(room).encode("latin1") + b"\n"


class NpyRowWriter:
    """Append ``[n, D]`` blocks to a ``.npy`` file whose row count is only known at the end.

    Rows are cast to ``dtype``; a value that overflows float16 raises `RowError` (use float32). `close`
    writes the final shape into the header.
    """

    def __init__(self, file: BinaryIO, dim: int, dtype: str = "float16") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}")
        self.file, self.dim, self.dtype, self.rows = file, dim, np.dtype(dtype).newbyteorder("<"), 0
        self.file.write(_npy_header(self.dtype, 0, dim))

    def write(self, block: np.ndarray) -> None:
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"expected rows [n, {self.dim}]; got {block.shape}")
        with np.errstate(over="ignore"):  # checked just below, with a clearer message
            out = block.astype(self.dtype, copy=False)
        if not np.isfinite(out).all():
            where = "overflow float16: use dtype=float32" if np.isfinite(block).all() else "are not finite"
            raise RowError(f"embedding values {where} (rows {self.rows}..{self.rows + len(block) - 1})")
        self.file.write(np.ascontiguousarray(out).tobytes())
        self.rows += len(block)

    def close(self) -> None:
        """Write the final shape into the header (the caller closes the file)."""
        self.file.flush()
        self.file.seek(0)
        self.file.write(_npy_header(self.dtype, self.rows, self.dim))
        self.file.flush()


def config_hash(model: dict, options: dict) -> str:
    """Short hash of the model config and the embedding options (what decides the numbers)."""
    text = json.dumps({"model": model, "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_hash(*modules: torch.nn.Module) -> str:
    """Short hash of the modules' weights (names, dtypes, shapes and values): it tells apart two
    checkpoints of one architecture, which `config_hash` cannot. Reads every weight once."""
    digest = hashlib.sha256()
    for i, module in enumerate(modules):
        for name, tensor in module.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{i}.{name} {t.dtype} {tuple(t.shape)}\n".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------- outputs on disk


def output_stem(clip: ClipInfo, output: Path) -> Path:
    """``<output>/<key>[@start-end]``: the key is the path relative to the input folder or manifest
    (absolute manifest paths lose their root, ``..`` becomes ``__``)."""
    parts = [
        ("__" if p == ".." else p) for p in PurePosixPath(clip.key or Path(clip.name).name).parts if p not in ("/", ".")
    ]
    stem = output.joinpath(*parts)
    return stem.with_name(stem.name + clip.segment.removeprefix(clip.name))


def output_paths(stem: Path) -> tuple[Path, Path]:
    """The ``.npy`` and the ``.json`` of the output at ``stem``."""
    return stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".json")


def read_sidecar(stem: Path) -> dict | None:
    """The sidecar of the finished output at ``stem``, None when there is no ``.npy`` and ``.json`` pair
    (a lone ``.json`` is another file, a metrics.json say). Raises ValueError for a sidecar that cannot
    be read or is not a JSON object."""
    npy, sidecar = output_paths(stem)
    if not (npy.is_file() and sidecar.is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{sidecar}: unreadable sidecar ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{sidecar}: not a sidecar (not a JSON object)")
    return meta


def remove_outputs(stem: Path) -> bool:
    """Deletes the output at ``stem`` (sidecar first, so no sidecar outlives its rows); whether there was one."""
    npy, sidecar = output_paths(stem)
    try:
        found = npy.exists() or sidecar.exists()
    except OSError:  # a name the filesystem cannot hold (too long): nothing is there
        return False
    if not found:  # (nor can there be, under an output "folder" that is a file)
        return False
    sidecar.unlink(missing_ok=True)
    npy.unlink(missing_ok=True)
    return found


def adopt_older_name(clip: ClipInfo, stem: Path) -> bool:
    """Renames the output of ``clip``'s span at ``stem`` (its `output_stem`) written under its older
    name (times printed with 6 significant digits, ``@12345.7-end``, before span names became exact),
    when only the older exists: a rerun then finds it, and no folder holds one span twice. Whether it did."""
    if not clip.start and clip.end is None:
        return False
    end = "end" if clip.end is None else f"{clip.end:g}"
    older = stem.with_name(stem.name.rsplit("@", 1)[0] + f"@{clip.start:g}-{end}")
    npy, sidecar = output_paths(stem)
    if older == stem or sidecar.exists() or npy.exists():
        return False
    try:
        old = read_sidecar(older)
    except ValueError:
        return False
    if old is None or old.get("span") != [clip.start, clip.end]:
        return False  # none, or another span that printed the same
    old_npy, old_sidecar = output_paths(older)
    os.replace(old_npy, npy)  # rows first: a sidecar never names rows that are not there
    os.replace(old_sidecar, sidecar)
    return True


def source_record(clip: ClipInfo) -> dict:
    """What identifies the media a clip's rows are made from: the file as it is now, the span, and
    the version of the readers that decode it.

    Raises `MediaError` when the file cannot be looked at (gone since the index probed it)."""
    path = os.path.abspath(clip.name)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise MediaError(clip.name, f"cannot read the file's size and time: {exc.strerror}") from None
    return {
        "source": path,
        "source_bytes": st.st_size,
        "source_mtime_ns": st.st_mtime_ns,
        "span": [clip.start, clip.end],
        "decoder": decode.VERSION,
    }


# Sidecar fields that decide an output's rows, and what a difference in each means.
_MADE_FROM = {
    "source": "another source file maps to this output",
    "source_bytes": "the source file changed",
    "source_mtime_ns": "the source file changed",
    "span": "another span of the source",
    "decoder": "decoded by another version of ttt-mm's readers (its timeline, channel mix, rotation or reader changed)",
    "weights_hash": "another checkpoint's weights",
    "config_hash": "other model config or settings",
}


def out_of_date(old: dict, expected: dict) -> str | None:
    """Why an output whose sidecar is ``old`` must be embedded again, or None when it records what
    ``expected`` (a run's `_MADE_FROM` fields: its settings and `source_record`) holds."""
    if "weights_hash" not in old:
        return "written by an older embed, whose sidecar records no weights_hash"
    for key, meaning in _MADE_FROM.items():
        if old.get(key) != expected[key] and not (key == "source" and _same_file(old.get(key), expected[key])):
            if key == "config_hash" and (named := changed_settings(old, expected)):
                return f"other settings ({named})"
            if key in _OF_EACH_FILE:  # (the reason of many files: one log line and one count for them all)
                return meaning
            return f"{meaning} ({key} {old.get(key, 'not recorded')}, now {expected[key]})"
    return None


_OF_EACH_FILE = {"source", "source_bytes", "source_mtime_ns", "span"}
"""The `_MADE_FROM` fields whose values are each file's own: a reason that named them was said once per file."""


def _same_file(old: str | None, now: str) -> bool:
    """Whether the source recorded as ``old`` is the file ``now`` names by another way (a linked folder)."""
    return old is not None and os.path.realpath(old) == os.path.realpath(now)


def changed_settings(old: dict, expected: dict) -> str:
    """The settings behind ``config_hash`` that differ between two sidecars, as ``key old -> expected``;
    the model by name only."""
    changed = [k for k in ("model", *SETTINGS) if old.get(k) != expected.get(k)]
    was = {k: json.dumps(old[k]) if k in old else "not recorded" for k in changed}
    return ", ".join(
        "the model config" if k == "model" else f"{k} {was[k]} -> {json.dumps(expected[k])}" for k in changed
    )


# -------------------------------------------------------------------------------------- reading


@dataclass
class Loaded:
    """An embedding file read back: ``embeddings`` is a read-only memory map ``[N, D]``."""

    embeddings: np.ndarray
    timestamps: np.ndarray  # [N] float64 seconds from the file start
    modality: np.ndarray  # [N] int8 (0 audio, 1 video, -1 mixed)
    pooled: np.ndarray | None
    meta: dict


def load(path: str | os.PathLike) -> Loaded:
    """Read ``x.npy`` (memory-mapped) and ``x.json`` given either path (or the common stem)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".npy", ".json") else path
    npy, sidecar = output_paths(stem)
    meta = json.loads(sidecar.read_text())
    rows = np.load(npy, mmap_mode="r")
    clock = Clock.from_json(meta["clock"])
    if clock.num_rows != len(rows):
        raise ValueError(f"{stem}: the sidecar describes {clock.num_rows} rows but the .npy holds {len(rows)}")
    pooled = meta.get("pooled")
    return Loaded(
        rows,
        clock.timestamps().numpy(),
        clock.modality().numpy(),
        None if pooled is None else np.asarray(pooled, dtype=np.float32),
        meta,
    )
