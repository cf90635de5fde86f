"""Train a ttt-mm model: ``python train.py [hydra overrides]`` (thin shim over ``ttt_mm.tasks.train``)."""

from ttt_mm.tasks.train import main

if __name__ == "__main__":
    main()
