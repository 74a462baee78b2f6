"""Benchmarks: run against the emulator, reported as ratios against baselines measured in the same run."""
