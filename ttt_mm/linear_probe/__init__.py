"""Linear probes of embeddings (``python -m ttt_mm.tasks.linear_probe``): per-file features of a model,
its random-weights twin, log-mel statistics or an embedding folder (`features`), grouped stratified
folds (`folds`), the cross-validated classifier (`classifier`) and the output tables (`tables`).
"""
