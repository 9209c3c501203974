"""What every stage shares: typed job configuration, console, Ray start-up and resource shares, MLflow store."""
