"""Long-clip evaluation: metric functions, streamed per-clip scoring, rollouts, per-model reports,
the CSV/JSON tables and the figures (``python -m ttt_mm.tasks.evaluate`` drives them). Linear probes
of embeddings are in `ttt_mm.linear_probe`.
"""
