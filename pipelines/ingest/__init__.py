"""Stage 1: an archive of videos -> per-video Parquet frame shards with a manifest; clips are cut when read."""
