"""The code MLflow runs to rebuild a registered MemAE ("models from code").

The registry stores this file beside the checkpoint instead of a pickled Python object, so loading a model runs
only this project's installed code, never bytes from the model store.
"""

from mlflow.models import set_model

from pipelines.registry.pyfunc import MemAEScorer

set_model(MemAEScorer())
