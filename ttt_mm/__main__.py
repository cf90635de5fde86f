"""``python -m ttt_mm``: the commands, each run as its own module (a name given here, such as
``python -m ttt_mm train``, is told the command that runs it)."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": "fit a model on a data config (test=true: then score its test split); also python train.py",
    "evaluate": "score how well checkpoints predict whole clips, by context and horizon",
    "embed": "write each file's embeddings (rows per time step) with a checkpoint",
    "linear_probe": "fit linear classifiers on embeddings: a checkpoint's, against baselines",
    "probe": "index media files: what each holds, or why it cannot be used",
}
BENCHMARKS = "python -m ttt_mm.bench --help"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  python -m ttt_mm.tasks.{name:<{width}}  {what}" for name, what in COMMANDS.items()]
    return "\n".join(
        [
            "ttt-mm commands (Hydra overrides after each; --help lists its settings):",
            *lines,
            f"benchmarks: {BENCHMARKS}",
        ]
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name = argv[0].replace("-", "_")
    said = f"run it as python -m ttt_mm.tasks.{name}" if name in COMMANDS else "the commands are:\n" + usage()
    print(f"error: python -m ttt_mm {argv[0]}: {said}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
