"""Stage 4: batch scoring of whole archives with Ray Data: per-frame scores, events, metrics, plots, ledger."""
