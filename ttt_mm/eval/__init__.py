"""Long-clip evaluation: metric functions, streamed per-clip scoring, rollouts, per-model reports,
the CSV/JSON tables and the figures (``python -m ttt_mm.tasks.evaluate`` drives them); and linear
probes of embeddings: folds, the classifier and per-file features (``python -m ttt_mm.tasks.linear_probe``).
"""
