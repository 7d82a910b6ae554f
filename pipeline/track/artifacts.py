"""What a trained network leaves in its run: the validation confusion matrix (picture and JSON),
per-digit accuracy, a picture of its mistakes, and the model itself in MLflow's PyTorch flavour."""

from __future__ import annotations

import copy
import os
import tempfile

import mlflow
import numpy as np
import torch
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

from pipeline.core.settings import ModelSpec
from pipeline.data.splits import to_unit_pixels
from pipeline.track.runs import RunLog
from pipeline.train.diagnostics import Diagnostics, confusion_image, mistakes_image
from pipeline.train.model import DigitReader, architecture_of

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


def log_model(run: RunLog, net: torch.nn.Module, spec: ModelSpec | list[ModelSpec],
              example_images: torch.Tensor) -> str:
    """Log the network with MLflow's PyTorch flavour; pyfunc predicts digits. Returns its URI.

    Saved as a torch.export program ("pt2", MLflow's default): loading it runs no pickled code
    and needs no `pipeline` installed. The architecture rides along as metadata so `pipeline
    predict` can rebuild the network and report probabilities too. An ensemble (train.model,
    one spec per member) is logged the same way, as one model.
    """
    with run.watch("mlflow_model"):  # the copy and the export included
        reader = DigitReader(copy.deepcopy(net).float().cpu()
                             .to(memory_format=torch.contiguous_format)).eval()
        # Two examples, not one: torch.export would specialise a batch dimension of size 1.
        example = to_unit_pixels(example_images[:2]).numpy()
        return _log_logged_model(run, reader, spec, example)


def _log_logged_model(run: RunLog, reader: DigitReader, spec: ModelSpec | list[ModelSpec],
                      example: np.ndarray) -> str:
    """What ``mlflow.pytorch.log_model`` does, through this run's client: MLflow's fluent call
    files the model under the process-wide tracking URI and "current experiment", which a
    library must not set. A logged model of the run's experiment, linked to the run as its
    output; saved by MLflow's PyTorch flavour; uploaded; marked READY (FAILED if any step
    fails)."""
    client = run.client
    model = client.create_logged_model(run.experiment_id, name=MODEL_NAME_IN_RUN,
                                       source_run_id=run.run_id)
    try:
        client.log_outputs(run.run_id, [LoggedModelOutput(model.model_id, step=0)])
        with tempfile.TemporaryDirectory() as scratch:
            local = os.path.join(scratch, MODEL_NAME_IN_RUN)
            mlflow.pytorch.save_model(
                reader, local, signature=MODEL_SIGNATURE, input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                mlflow_model=Model(artifact_path=model.artifact_location, run_id=run.run_id,
                                   model_uuid=model.model_id, model_id=model.model_id),
                metadata={"pipeline_architecture": architecture_of(
                              spec if isinstance(spec, list) else [spec]),
                          "input": "float32 (N, 28, 28) pixels in [0, 1], white digit on black",
                          "output": "int64 (N,) predicted digits"})
            client.log_model_artifacts(model.model_id, local)
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return f"models:/{model.model_id}"
