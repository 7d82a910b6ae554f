"""What a trained network leaves in its run: the validation confusion matrix (picture and JSON),
per-digit accuracy, a picture of its mistakes, and the model itself in MLflow's PyTorch flavour."""

from __future__ import annotations

import copy

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from pipeline.core.settings import ModelSpec
from pipeline.track.runs import RunLog
from pipeline.train.diagnostics import Diagnostics, confusion_image, mistakes_image
from pipeline.train.model import DigitReader

MODEL_NAME_IN_RUN = "model"
MODEL_SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28))]),
    outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
)


def log_diagnostics(run: RunLog, diag: Diagnostics, images: torch.Tensor, labels: torch.Tensor,
                    predictions: torch.Tensor, title: str) -> None:
    """Confusion matrix (picture and JSON), per-class accuracy, a picture of mistakes."""
    with run.watch("mlflow_artifacts"):  # drawing the pictures included
        run.client.log_image(run.run_id, confusion_image(diag, title),
                             artifact_file="confusion_matrix.png")
        run.client.log_dict(run.run_id, diag.as_dict(), "confusion_matrix.json")
        mistakes = mistakes_image(images, labels, predictions)
        if mistakes is not None:
            run.client.log_image(run.run_id, mistakes, artifact_file="val_mistakes.png")
    run.log_metrics({f"val_accuracy_digit_{d}": a
                     for d, a in diag.per_class_accuracy.items()})


def log_model(run: RunLog, net: torch.nn.Module, spec: ModelSpec,
              example_images: torch.Tensor) -> str:
    """Log the network with MLflow's PyTorch flavour; pyfunc predicts digits. Returns its URI.

    Saved as a torch.export program ("pt2", MLflow's default): loading it runs no pickled code
    and needs no `pipeline` installed. The architecture rides along as metadata so `pipeline
    predict` can rebuild the network and report probabilities too.
    """
    with run.watch("mlflow_model"):  # the copy and the export included
        return _log_model(run, net, spec, example_images)


def _log_model(run: RunLog, net: torch.nn.Module, spec: ModelSpec,
               example_images: torch.Tensor) -> str:
    reader = DigitReader(copy.deepcopy(net).float().cpu()
                         .to(memory_format=torch.contiguous_format)).eval()
    # Two examples, not one: torch.export would specialise a batch dimension of size 1.
    example = (example_images[:2].float() / 255.0).numpy()
    # MLflow files a logged model under the fluent "current experiment" when no fluent run
    # is active; point it at this run's (a fluent run would force the status on exit).
    mlflow.set_tracking_uri(run.client.tracking_uri)
    mlflow.set_experiment(experiment_id=run.experiment_id)
    info = mlflow.pytorch.log_model(
        reader, name=MODEL_NAME_IN_RUN, run_id=run.run_id,
        signature=MODEL_SIGNATURE, input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        # MLflow would load the file it just wrote and run the example through it: half of
        # the model's cost per trial (0.15 s), for a check `pipeline promote` makes anyway
        # (it loads the model and measures it on the test set before registering it).
        validate_serving_input=False,
        metadata={"pipeline_architecture": spec.to_dict(),
                  "input": "float32 (N, 28, 28) pixels in [0, 1], white digit on black",
                  "output": "int64 (N,) predicted digits"},
    )
    return info.model_uri
