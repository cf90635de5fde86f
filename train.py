"""Train a ttt-mm model: ``python train.py [hydra overrides]`` (thin shim over ``ttt_mm.tasks.train``)."""

from ttt_mm.training.interrupts import leave_ctrl_c_to_the_first_process

leave_ctrl_c_to_the_first_process()  # before the slow imports: DDP's other processes run this file too

from ttt_mm.tasks.train import main  # noqa: E402

if __name__ == "__main__":
    main()
