"""Shipping a model: promotion into the registry, `pipeline predict`, MLflow's own model server
answering real HTTP requests, and MLflow's UI in a real headless Chromium.

One small search (a good and a weak configuration, trained on CPU) feeds every test here. The test
that moves the champion around runs last in this file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import (
    assert_one_line_error,
    free_port,
    run_cli,
    start_cli,
    start_server,
    wait_for,
)
from PIL import Image

SPACE = textwrap.dedent("""\
    study:
      sampler: {type: grid, seed: 0}
      pruner: {type: none}
    data: {val_size: 1000, train_subset: 20000}
    fixed: {epochs: 3, depth: 2, width: 16, fc_width: 64, batch_size: 128}
    presets:
      setup:
        good: {optimizer: adamw, lr: 3.0e-3}
        weak: {optimizer: sgd, lr: 1.0e-4, momentum: 0.0, nesterov: false}
    params:
      setup: {type: categorical, choices: [good, weak]}
""")


def _store_env(folder: Path) -> dict:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A folder with a 2-trial study and its best model promoted to mnist-cnn@champion."""
    folder = tmp_path_factory.mktemp("shop")
    (folder / "ship.yaml").write_text(SPACE)
    searched = run_cli("search", "--space", "ship.yaml", "--trials", "2", "--no-report",
                       cwd=folder)
    assert searched.returncode == 0, searched.stderr
    promoted = run_cli("promote", "best", cwd=folder)
    assert promoted.returncode == 0, promoted.stderr
    return folder, promoted


@pytest.fixture(scope="module")
def digit_files(shop, mnist):
    """The first 200 MNIST test images as PNG files, and their labels."""
    folder = shop[0] / "digits"
    folder.mkdir()
    paths = []
    for i in range(200):
        path = folder / f"test{i:03d}.png"
        Image.fromarray(mnist.test.images[i].numpy()).save(path)
        paths.append(path)
    return paths, mnist.test.labels[:200].numpy()


def _registry(folder: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db",
                        registry_uri=f"sqlite:///{folder}/mlflow.db")


def test_promote_best_makes_a_champion_with_its_lineage(shop):
    folder, promoted = shop
    assert "mnist-cnn@champion -> version 1" in promoted.stdout
    client = _registry(folder)
    champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    tags = champion.tags
    for key in ("study", "trial_number", "run_id", "val_accuracy", "test_accuracy",
                "data_checksum", "space_fingerprint", "model_uri"):
        assert tags.get(f"pipeline.{key}"), key
    assert tags["pipeline.study"] == "mnist-ship"
    assert tags["pipeline.verified"] == "true"
    assert float(tags["pipeline.test_accuracy"]) > 0.97
    run = client.get_run(tags["pipeline.run_id"])
    assert run.data.params["setup"] == "good"
    assert run.data.metrics["test_accuracy"] == pytest.approx(
        float(tags["pipeline.test_accuracy"]))
    table = run_cli("models", cwd=folder)
    assert table.returncode == 0
    assert "champion" in table.stdout and "mnist-ship" in table.stdout


def test_predict_reads_digits_and_says_how_sure(shop, digit_files):
    folder, _ = shop
    paths, labels = digit_files
    result = run_cli("predict", *map(str, paths[:3]), cwd=folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [int(line.split(": ")[1].split()[0]) for line in lines] == labels[:3].tolist()
    assert all("(p=" in line for line in lines)


def test_predict_answers_the_good_files_and_names_the_bad_one(shop, digit_files, tmp_path):
    folder, _ = shop
    paths, labels = digit_files
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    result = run_cli("predict", "--json", str(paths[0]), str(bad), str(paths[1]), cwd=folder)
    assert result.returncode == 1
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a.get("digit") for a in answers] == [labels[0], None, labels[1]]
    assert "not an image" in answers[1]["error"]
    assert abs(sum(answers[0]["probabilities"]) - 1) < 1e-3
    assert_one_line_error(result, str(bad), "not an image")


@pytest.mark.parametrize("model, fragment", [
    ("models:/nope@champion", "no registered model 'nope'"),
    ("models:/mnist-cnn@staging", "model 'mnist-cnn' has no alias 'staging' yet"),
    ("models:/mnist-cnn/99", "model 'mnist-cnn' has no version 99 yet"),
])
def test_predict_with_a_missing_model_is_one_line(shop, digit_files, model, fragment):
    folder, _ = shop
    result = run_cli("predict", "--model", model, str(digit_files[0][0]), cwd=folder)
    assert_one_line_error(result, fragment, code=1)


def test_predict_before_any_champion_is_one_line(tmp_path, digit_files):
    client = _registry(tmp_path)
    client.create_registered_model("mnist-cnn")  # registered, but nothing promoted yet
    result = run_cli("predict", str(digit_files[0][0]), cwd=tmp_path)
    assert_one_line_error(result, "model 'mnist-cnn' has no alias 'champion' yet",
                          "pipeline promote best", code=1)


def test_promote_refuses_clearly(shop, tmp_path):
    folder, _ = shop
    assert_one_line_error(run_cli("promote", "best", "--study", "nope", cwd=folder),
                          "no study named 'nope'", code=2)
    assert_one_line_error(run_cli("promote", "best", cwd=tmp_path),
                          "no study in sqlite:///optuna.db", code=2)
    unreachable = run_cli("promote", "best", cwd=folder,
                          env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    assert_one_line_error(unreachable, "is unreachable", code=1)
    untouched = tmp_path / "untouched"
    untouched.mkdir()
    assert_one_line_error(run_cli("promote", "0123abcd", "--study", "mnist-ship", cwd=untouched),
                          "--study goes with `promote best`", code=2)
    assert list(untouched.iterdir()) == []  # refused before any store was opened
    assert_one_line_error(run_cli("promote", "0123abcd", cwd=folder),
                          "no MLflow run '0123abcd'", code=1)


def test_promote_refuses_runs_that_are_not_finished_or_have_no_model(tmp_path):
    client = _registry(tmp_path)
    experiment = client.create_experiment("by-hand")
    killed = client.create_run(experiment).info.run_id
    client.set_terminated(killed, "KILLED")
    empty = client.create_run(experiment).info.run_id
    client.set_terminated(empty, "FINISHED")
    assert_one_line_error(run_cli("promote", killed, cwd=tmp_path),
                          f"run {killed} is KILLED, not FINISHED", code=1)
    assert_one_line_error(run_cli("promote", empty, cwd=tmp_path),
                          f"run {empty} has no logged model", code=1)


def test_promote_refuses_a_study_without_a_complete_trial(tmp_path):
    space = SPACE.replace("good: {optimizer: adamw, lr: 3.0e-3}",
                          "good: {width: 1024, fc_width: 5000000}")  # cannot even be allocated
    (tmp_path / "s.yaml").write_text(space.replace("choices: [good, weak]", "choices: [good]"))
    assert run_cli("search", "--space", "s.yaml", "--trials", "1", "--no-report",
                   cwd=tmp_path).returncode == 0
    assert_one_line_error(run_cli("promote", "best", cwd=tmp_path),
                          "has no complete trial with a logged model yet", code=1)


def test_promoting_from_a_loss_study_records_the_real_validation_accuracy(tmp_path):
    """A study may minimise val_loss; the version's lineage still carries validation accuracy."""
    space = (SPACE.replace("  pruner: {type: none}", "  metric: val_loss\n  pruner: {type: none}")
             .replace("train_subset: 20000", "train_subset: 3000").replace("epochs: 3", "epochs: 1")
             .replace("choices: [good, weak]", "choices: [good]"))
    (tmp_path / "loss.yaml").write_text(space)
    assert run_cli("search", "--space", "loss.yaml", "--trials", "1", "--no-report",
                   cwd=tmp_path).returncode == 0
    promoted = run_cli("promote", "best", cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stderr
    client = _registry(tmp_path)
    tags = client.get_model_version_by_alias("mnist-cnn", "champion").tags
    logged = client.get_run(tags["pipeline.run_id"]).data.metrics["val_accuracy"]
    assert float(tags["pipeline.val_accuracy"]) == pytest.approx(logged, abs=1e-6)
    assert "nan" not in promoted.stdout


@pytest.fixture
def model_server(shop):
    """`mlflow models serve` on the champion, on loopback; stopped after the test."""
    folder, _ = shop
    port = free_port()
    server = start_server(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/mnist-cnn@champion",
         "--host", "127.0.0.1", "--port", str(port), "--env-manager", "local"],
        cwd=folder, env=_store_env(folder), name="model-server")
    url = f"http://127.0.0.1:{port}"

    def up():
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited: {server.output()[1][-2000:]}")
        try:
            return requests.get(f"{url}/ping", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, timeout=180, what="mlflow models serve to answer /ping")
    yield url
    server.stop()


def test_mlflow_serves_the_champion_and_agrees_with_pipeline_predict(shop, digit_files,
                                                                     model_server):
    folder, _ = shop
    paths, labels = digit_files
    body = run_cli("predict", "--request", *map(str, paths), cwd=folder)
    assert body.returncode == 0, body.stderr
    response = requests.post(f"{model_server}/invocations", data=body.stdout,
                             headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200, response.text
    served = np.array(response.json()["predictions"])
    assert served.shape == (200,)
    assert (served == labels).mean() >= 0.97
    local = run_cli("predict", "--json", *map(str, paths), cwd=folder)
    assert local.returncode == 0, local.stderr
    predicted = np.array([json.loads(line)["digit"] for line in local.stdout.splitlines()])
    assert np.array_equal(predicted, served)


def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_mlflow_ui_shows_the_study_and_its_trials_in_a_real_browser(shop, tmp_path,
                                                                        browser_available):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder, _ = shop
    port = free_port()
    ui = start_cli("ui", "--port", str(port), cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: f"at {url}" in ui.output()[0], timeout=60, what="the UI's URL line")

        def up():
            try:
                return requests.get(url, timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, timeout=120, what="pipeline ui to answer")
        browser = _chromium()
        try:
            def page_has(text):
                return lambda d: text in d.find_element(By.TAG_NAME, "body").text

            def element(xpath):
                return WebDriverWait(browser, 60).until(
                    lambda d: (d.find_elements(By.XPATH, xpath) or [None])[0])

            browser.get(f"{url}/#/experiments")
            # MLflow 3 opens experiments in its GenAI view; runs live under "Model training".
            element("//*[normalize-space(text())='Model training']").click()
            element("//a[normalize-space(.)='mnist-ship']").click()
            # The study's parent run, with its trials folded under it: unfold them.
            parent = element("//a[normalize-space(.)='mnist-ship' and contains(@href, '/runs/')]")
            parent.find_element(By.XPATH, "./ancestor::*[@role='presentation'][1]//button").click()
            WebDriverWait(browser, 60).until(page_has("trial-0001"))
            assert "trial-0000" in browser.find_element(By.TAG_NAME, "body").text
            shot = tmp_path / "mlflow-ui.png"
            browser.save_screenshot(str(shot))
            keep = os.environ.get("PIPELINE_TEST_ARTIFACTS")
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(keep) / "mlflow-ui.png")
        finally:
            browser.quit()
        with Image.open(shot) as image:
            assert image.size[0] >= 1000
    finally:
        ui.send_signal(signal.SIGINT)
        ui.communicate(timeout=60)
    # Ctrl-C stops the whole server, its workers included: the port is free again.
    wait_for(lambda: _port_free(port), timeout=30, what="the UI's port to be released")


def _port_free(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}", timeout=1)
    except requests.ConnectionError:
        return True
    return False


def test_ui_refuses_a_busy_port(shop):
    import socket

    folder, _ = shop
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_cli("ui", "--port", str(busy.getsockname()[1]), cwd=folder)
    assert_one_line_error(result, "is in use", "--port", code=2)


def test_promoting_a_worse_run_keeps_the_champion_and_promoting_again_is_idempotent(shop):
    """Runs last in this file: it moves the champion with --force at the end."""
    folder, _ = shop
    client = _registry(folder)
    champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    weak_run = [r for r in client.search_runs(
        [client.get_experiment_by_name("mnist-ship").experiment_id],
        "params.setup = 'weak'")][0].info.run_id

    worse = run_cli("promote", weak_run, cwd=folder)
    assert worse.returncode == 0, worse.stderr
    assert "champion stays at version 1" in worse.stdout
    assert client.get_model_version_by_alias("mnist-cnn", "champion").version == champion.version
    versions = client.search_model_versions("name = 'mnist-cnn'")
    assert len(versions) == 2

    for again in (run_cli("promote", weak_run, cwd=folder), run_cli("promote", "best",
                                                                    cwd=folder)):
        assert again.returncode == 0, again.stderr
        assert "no new version" in again.stdout
    assert len(client.search_model_versions("name = 'mnist-cnn'")) == 2

    forced = run_cli("promote", weak_run, "--force", cwd=folder)
    assert forced.returncode == 0, forced.stderr
    assert client.get_model_version_by_alias("mnist-cnn", "champion").version != (
        champion.version)
