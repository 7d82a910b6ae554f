"""MLflow's process-wide state (its tracking URI, current experiment, active run) belongs to the
user: `pipeline` names its store on every call and sets none of it, so two commands with different
stores in one process (a notebook, a test) each write to their own store and leave nothing behind.
"""

from __future__ import annotations

import os

import mlflow
from helpers import invoke
from mlflow import MlflowClient

TRAIN = ("train", "--depth", "1", "--width", "4", "--fc-width", "16", "--epochs", "1",
         "--train-subset", "300", "--val-size", "100", "--channels-last", "off")


def _globals() -> tuple:
    return (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"),
            os.environ.get("MLFLOW_EXPERIMENT_ID"), mlflow.active_run())


def test_two_trainings_with_different_stores_in_one_process_keep_to_their_own(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    own = f"sqlite:///{first}/own.db"
    before = _globals()
    assert invoke(*TRAIN, cwd=first, env={"MLFLOW_TRACKING_URI": own}).returncode == 0
    assert _globals() == before
    assert invoke(*TRAIN, cwd=second).returncode == 0  # MLflow's default store of its folder
    assert _globals() == before
    for uri in (own, f"sqlite:///{second}/mlflow.db"):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("pipeline-train").experiment_id
        (run,) = client.search_runs([experiment])
        models = client.search_logged_models(experiment_ids=[experiment])
        assert [m.source_run_id for m in models] == [run.info.run_id]
    assert not (first / "mlflow.db").exists()
