"""MemAE in the MLflow model registry: a pyfunc over our checkpoint, with its preprocessing and calibration.

The registered model takes float32 clips N x C x T x H x W in [-1, 1] (the `preprocessing` metadata says how
frames were decoded, resized and scaled) and returns a DataFrame: `clip_score` (the clip's reconstruction error
by the training run's rule) and `frame_00` .. `frame_{T-1}` (mean absolute error of each frame of the clip).
The device is chosen when the model is loaded, so a model registered on a CPU runs on a GPU and back.

    model = mlflow.pyfunc.load_model("models:/memae-demo@champion")
    scores = model.predict(clips)
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from memae.checkpoint import load_checkpoint, model_from_checkpoint
from memae.scoring import clip_errors

MODEL_ARTIFACT_NAME = "model"
MODEL_CODE = Path(__file__).with_name("scorer_code.py")  # what MLflow runs to rebuild the model: no pickle

class MemAEScorer(mlflow.pyfunc.PythonModel):
    """Loads the checkpoint artifact on the best device available and scores clips."""

    # MLflow would wrap `predict` to validate inputs against type hints, and warn that it has none: its signature is
    # inferred from an example when it is registered (register_checkpoint) instead.
    _skip_type_hint_validation = True

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.spec = model_from_checkpoint(load_checkpoint(context.artifacts["checkpoint"]))
        self.model.to(self.device).eval()
        self.preprocessing = json.loads(Path(context.artifacts["preprocessing"]).read_text())

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a signature
        """Clips N x C x T x H x W float32 in [-1, 1] -> DataFrame of clip_score and frame_00 .. frame_{T-1}."""
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32), device=self.device)
        with torch.no_grad():
            recon = self.model(x)["output"]
        clip = clip_errors(x, recon, self.preprocessing.get("error_rule", "l1")).cpu().numpy()
        frames = (recon - x).abs().mean(dim=(1, 3, 4)).cpu().numpy()
        columns = {"clip_score": clip}
        columns.update({f"frame_{t:02d}": frames[:, t] for t in range(frames.shape[1])})
        return pd.DataFrame(columns)


def register_checkpoint(
    checkpoint_file: str | Path,
    name: str,
    preprocessing: Mapping[str, Any],
    calibration: Mapping[str, Any] | None = None,
    alias: str | None = None,
) -> str:
    """Logs the checkpoint as a pyfunc model in the active MLflow run, registers a new version, moves the alias.

    Returns the new version number as a string.
    """
    spec = load_checkpoint(checkpoint_file)["model_spec"]
    shape = (1, spec["in_channels"], preprocessing["clip_len"], preprocessing["height"], preprocessing["width"])
    example = np.zeros(shape, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        meta_file = Path(tmp) / "preprocessing.json"
        meta_file.write_text(json.dumps(dict(preprocessing), indent=2))
        artifacts = {"checkpoint": str(checkpoint_file), "preprocessing": str(meta_file)}
        loaded = MemAEScorer()  # only to infer the output signature; the logged instance holds no weights
        loaded.load_context(mlflow.pyfunc.PythonModelContext(artifacts=artifacts, model_config={}))
        signature = infer_signature(example, loaded.predict(None, example))
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            registered_model_name=name,
            metadata={"model_spec": spec, "preprocessing": dict(preprocessing), "calibration": dict(calibration or {})},
            pip_requirements=[f"torch>={torch.__version__.split('+')[0]}", "numpy", "pandas", "memae"],
        )
    version = str(info.registered_model_version)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, version)
    return version


def model_metadata(model_uri: str) -> dict[str, Any]:
    """The metadata (spec, preprocessing, calibration) stored with a logged or registered model."""
    return dict(mlflow.models.get_model_info(model_uri).metadata or {})
