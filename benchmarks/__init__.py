"""Benchmarks against the emulator, reported as ratios to baselines run at the same time."""
