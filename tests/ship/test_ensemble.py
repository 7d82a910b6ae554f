"""`pipeline promote ensemble`: a study's top trials averaged into one registered model that
MLflow's own scoring server serves, `pipeline predict` reads and `pipeline export` writes as one
ONNX graph, gated against the champion like any candidate.

A four-trial grid of one-block networks on a few thousand MNIST images feeds every test; the
commands and MLflow's scoring app run in this process (the shipping tests start
`mlflow models serve` itself).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import (
    assert_one_line_error,
    invoke,
    mlflow_scoring_app,
    optuna_study,
)

SPACE = textwrap.dedent("""\
    study:
      sampler: {type: grid, seed: 0}
      pruner: {type: none}
    data: {val_size: 300, train_subset: 1500}
    fixed: {epochs: 1, depth: 1, fc_width: 16, batch_size: 64}
    params:
      lr: {type: categorical, choices: [3.0e-3, 1.0e-2]}
      width: {type: categorical, choices: [4, 8]}
""")
STUDY = "mnist-ens"


def _client(folder: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{folder}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """A folder with a four-trial study and the ensemble of its three best as mnist-cnn@champion."""
    folder = tmp_path_factory.mktemp("ensemble")
    (folder / "ens.yaml").write_text(SPACE)
    searched = invoke("search", "--space", "ens.yaml", "--trials", "4", "--no-report",
                      cwd=folder)
    assert searched.returncode == 0, searched.stderr
    promoted = invoke("promote", "ensemble", "--top", "3", cwd=folder)
    assert promoted.returncode == 0, promoted.stderr
    return folder, promoted


def test_promote_ensemble_registers_the_average_of_the_top_trials_as_one_model(ensemble, mnist):
    from pipeline.ship import DigitModel

    folder, promoted = ensemble
    study = optuna_study(folder, STUDY)
    top = sorted(study.trials, key=lambda t: t.value, reverse=True)[:3]
    members = "+".join(str(t.number) for t in top)
    assert f"ensemble of the 3 best trials of study '{STUDY}': {members}" in promoted.stdout
    assert "mnist-cnn@champion -> version 1" in promoted.stdout
    client = _client(folder)
    version = client.get_model_version_by_alias("mnist-cnn", "champion")
    assert version.tags["pipeline.members"] == members
    assert version.tags["pipeline.verified"] == "true"
    run = client.get_run(version.run_id)
    assert run.data.tags["pipeline.role"] == "ensemble"
    assert run.data.params["member_run_ids"].split(",") == [
        t.user_attrs["mlflow_run_id"] for t in top]
    # Its cost is its members' together.
    assert run.data.metrics["cost_params"] == sum(t.user_attrs["cost"]["params"] for t in top)

    # Its probabilities are the mean of its members' (rebuilt from the one registered model),
    # its digit for each test image, as promotion kept it, that mean's best, and its test
    # accuracy, as registered, those digits'.
    images = (mnist.test.images[:1000].numpy() / 255).astype(np.float32)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    try:
        digits, probabilities = DigitModel("models:/mnist-cnn@champion").predict(images)
        alone = [DigitModel(t.user_attrs["model_uri"]).predict(images)[1] for t in top]
    finally:
        mlflow.set_tracking_uri(None)
    assert np.allclose(probabilities, np.mean(alone, axis=0), atol=1e-5)
    assert np.array_equal(digits, probabilities.argmax(axis=1))
    kept = np.load(client.download_artifacts(run.info.run_id, "test_predictions.npy",
                                             str(folder)))
    assert np.array_equal(kept[:1000], digits)
    assert float(version.tags["pipeline.test_accuracy"]) == pytest.approx(
        (kept == mnist.test.labels.numpy()).mean())


def test_promoting_the_same_ensemble_again_makes_nothing_new(ensemble):
    folder, _ = ensemble
    again = invoke("promote", "ensemble", "--top", "3", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert "logged before" in again.stdout and "no new version" in again.stdout
    client = _client(folder)
    assert len(client.search_model_versions("name = 'mnist-cnn'")) == 1
    experiment = client.get_experiment_by_name(STUDY).experiment_id
    assert len(client.search_runs([experiment], "tags.`pipeline.role` = 'ensemble'")) == 1


def test_an_ensemble_is_gated_against_the_champion_like_a_single_network(ensemble):
    folder, _ = ensemble
    client, name = _client(folder), "gated"
    assert invoke("promote", "best", "--name", name, cwd=folder).returncode == 0
    gated = invoke("promote", "ensemble", "--name", name, cwd=folder)  # --top 3 by default
    assert gated.returncode == 0, gated.stderr
    assert "McNemar's exact test (one-sided): p = " in gated.stdout
    tags = client.get_model_version(name, "2").tags
    assert tags["pipeline.compared_with_version"] == "1"
    assert tags["pipeline.decision"] in ("better", "kept")
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    assert champion == ("2" if tags["pipeline.decision"] == "better" else "1")


def test_mlflow_serves_the_ensemble_as_pipeline_predict_reads_it(ensemble, mnist, tmp_path,
                                                                 monkeypatch):
    from PIL import Image

    folder, _ = ensemble
    paths = []
    for i in range(20):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(mnist.test.images[i].numpy()).save(paths[-1])
    store = f"sqlite:///{folder}/mlflow.db"
    with mlflow_scoring_app("models:/mnist-cnn@champion", tracking_uri=store,
                            monkeypatch=monkeypatch) as url:
        body = invoke("predict", "--request", *map(str, paths), cwd=folder)
        assert body.returncode == 0, body.stderr
        response = requests.post(f"{url}/invocations", data=body.stdout,
                                 headers={"Content-Type": "application/json"}, timeout=60)
        assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    local = invoke("predict", "--json", *map(str, paths), cwd=folder)
    assert local.returncode == 0, local.stderr
    assert [json.loads(line)["digit"] for line in local.stdout.splitlines()] == served


def test_export_writes_the_ensemble_as_one_onnx_graph_that_answers_like_it(ensemble):
    import onnx

    folder, _ = ensemble
    result = invoke("export", "--output", "ensemble.onnx", cwd=folder)
    assert result.returncode == 0, result.stderr
    same = int(result.stdout.split("the same digit on ")[1].split()[0].replace(",", ""))
    assert same >= 9990
    graph = onnx.load(str(folder / "ensemble.onnx")).graph
    assert [i.name for i in graph.input] == ["pixels"]
    assert len([n for n in graph.node if n.op_type == "Conv"]) == 3  # one per member


@pytest.mark.parametrize("args, fragment, code", [
    (("ensemble", "--top", "9"), "has 4 complete trial(s) with a logged model; an ensemble of 9 "
                                 "needs 9: use --top 4, or search more", 1),
    (("ensemble", "--top", "1"), "1 is not in the range x>=2", 2),
    (("best", "--top", "3"), "--top goes with `promote ensemble` only", 2),
    (("ensemble", "--max-params", "9000"), "go with `promote best` only", 2),
])
def test_promote_ensemble_refuses_clearly_and_registers_nothing(ensemble, args, fragment, code):
    folder, _ = ensemble
    client = _client(folder)
    before = len(client.search_model_versions("name = 'mnist-cnn'"))
    assert_one_line_error(invoke("promote", *args, cwd=folder), fragment, code=code)
    assert len(client.search_model_versions("name = 'mnist-cnn'")) == before


def test_an_ensemble_that_fails_to_log_leaves_its_run_failed_not_running(ensemble, monkeypatch):
    from pipeline.ship import ensemble as module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "log_model", full_disk)
    folder, _ = ensemble
    with pytest.raises(OSError):
        invoke("promote", "ensemble", "--top", "2", "--name", "broken", cwd=folder)
    client = _client(folder)
    experiment = client.get_experiment_by_name(STUDY).experiment_id
    (run,) = client.search_runs([experiment], "params.top = '2'")
    assert run.info.status == "FAILED"
    assert run.data.tags["pipeline.reason"].endswith("No space left on device")
