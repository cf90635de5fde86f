"""Benchmarks that print tables: ``python -m ttt_mm.bench {layers,data,embed} --help``."""
