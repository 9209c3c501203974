"""Ray and MLflow wiring around the memae library, one package per stage of the flow:

archive -> ingest/ -> train/ (tune/) -> registry/ -> score/ -> outputs, with common/ shared by all.
"""
