"""What a training run needs beside the model and the data: the backbone state a streamed run
carries from one batch to the next and through its checkpoints (`carried_state`); loading those
checkpoints without reading every process's part into each process (`checkpoint_io`); the DDP
strategy's settings (`data_parallel`), who answers a Ctrl-C (`interrupts`), and a SIGTERM that stops
every process of a data-parallel fit after the same step (`terminated_together`)."""
