"""Experiments around the library: the paper's image benchmark (Table 1) and the synthetic video corpus that demos,
tests and benchmarks use in the layouts of the real data sets."""
