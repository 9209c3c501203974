"""Stage 3: models in the MLflow registry (a pyfunc over our checkpoint) and loading any model for scoring."""
