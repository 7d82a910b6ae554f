"""Logged models load on the CPU on every machine, a GPU machine included."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException

from pipeline.core.settings import ModelSpec
from pipeline.data.splits import to_unit_pixels
from pipeline.ship.models import load_pyfunc
from pipeline.track.artifacts import log_model
from pipeline.track.runs import Tracker
from pipeline.train.model import build_model

SPEC = ModelSpec(depth=1, width=4, fc_layers=0)


@pytest.fixture
def logged_model(tmp_path, small_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    run = tracker.start_run(tracker.experiment("load"), "one")
    uri = log_model(run, build_model(SPEC, seed=0), SPEC, small_data.val.images)
    run.finish("FINISHED")
    return uri, to_unit_pixels(small_data.val.images[:8]).numpy()


def test_a_model_exported_on_the_cpu_loads_where_cuda_is_available(logged_model, monkeypatch):
    """On a GPU machine MLflow loads PyTorch models onto CUDA by default, which an exported
    program cannot do (seen on an H100); pipeline loads them on the CPU."""
    uri, images = logged_model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", raising=False)
    with pytest.raises(MlflowException, match="can't be loaded on 'cuda' device"):
        mlflow.pyfunc.load_model(uri)  # what MLflow does on its own there
    digits = load_pyfunc(uri).predict(images)
    assert digits.shape == (8,) and digits.dtype == np.int64
