"""Benchmarks that print tables: ``python -m ttt_mm.bench {layers,kernels,data,index,corrupt,embed} --help``."""
