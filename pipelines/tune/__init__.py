"""Stage 2b: Ray Tune sweeps of memory size and entropy weight, each trial one training run."""
