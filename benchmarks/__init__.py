"""benchmarks experiments of penalty-tf."""
