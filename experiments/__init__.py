"""Experiments around the library: the paper's image benchmark (Table 1) and the synthetic video corpus."""
