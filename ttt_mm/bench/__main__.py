"""Entry point: ``python -m ttt_mm.bench <suite> [options]``; ``<suite> --help`` gives its options."""

from __future__ import annotations

import importlib
import sys

SUITES = {  # name: (module, what it measures)
    "layers": ("ttt_mm.bench.layers", "tokens/s and peak memory of one mixer layer against sequence length"),
    "data": ("ttt_mm.bench.data", "decode + tokenize throughput on one CPU worker"),
    "index": ("ttt_mm.bench.index", "the dataset index's cost per file, cold and cached"),
    "corrupt": ("ttt_mm.bench.corrupt", "corrupted copies of media files, and how the probe command copes"),
    "embed": ("ttt_mm.bench.embed", "embedding speed and memory on long files"),
    "kernels": ("ttt_mm.bench.kernels", "GPU: the Triton kernels against the PyTorch core and SDPA attention"),
}


def usage() -> str:
    lines = [f"usage: python -m ttt_mm.bench {{{','.join(SUITES)}}} [options]   (<suite> --help: its options)", ""]
    return "\n".join(lines + [f"  {name:8s} {what}" for name, (_, what) in SUITES.items()])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv or argv[0] not in SUITES:
        said = f"error: no suite {argv[0]!r}\n" if argv else ""
        print(said + usage(), file=sys.stderr)
        return 2
    return importlib.import_module(SUITES[argv[0]][0]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
