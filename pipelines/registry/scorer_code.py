"""The code MLflow runs to rebuild a registered MemAE ("models from code").

The registry stores this source file beside the checkpoint instead of a pickled Python object: what a model version
runs when `mlflow.pyfunc.load_model` loads it can be read in the model store, and it only imports this project's
installed code. The scoring job never runs it: it reads the weights alone (`weights_only`, pipelines/registry/
source.py), so a model version with other code cannot run anything in a nightly run.
"""

from mlflow.models import set_model

from pipelines.registry.pyfunc import MemAEScorer

set_model(MemAEScorer())
