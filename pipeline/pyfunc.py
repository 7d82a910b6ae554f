"""Loading the models `pipeline` logs, as MLflow's pyfunc, on the CPU on every machine."""

from __future__ import annotations

import mlflow

# Models are exported (torch.export) with their weights on the CPU, which is what lets them load
# on any machine. Where CUDA exists MLflow loads a PyTorch model onto the GPU unless told
# otherwise, and an exported program cannot move: it would fail.
LOAD_ON_CPU = {"device": "cpu"}


def load_pyfunc(model_uri: str):
    """``mlflow.pyfunc.load_model(model_uri)``, on the CPU."""
    return mlflow.pyfunc.load_model(model_uri, model_config=LOAD_ON_CPU)
