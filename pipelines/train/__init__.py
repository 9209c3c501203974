"""Stage 2: Ray Train (DDP) training of MemAE on ingested clips, checkpoints, MLflow tracking, registration."""
