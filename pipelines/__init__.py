"""Ray and MLflow wiring around the memae library: ingest, training, tuning, scoring, tracking."""
