"""Shipping a model: promotion into the registry, `pipeline predict`, MLflow's own model server
answering real HTTP requests, and MLflow's UI in a real headless Chromium.

One small search (a good and a weak configuration, trained on CPU) feeds every test here; the
commands run in this process, and the servers (MLflow's model server and UI) as real processes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import (
    assert_one_line_error,
    assert_wrote_nothing,
    chromium,
    descendants,
    free_port,
    invoke,
    keep_screenshot,
    mlflow_model_server,
    optuna_dashboard_study,
    port_is_closed,
    start_cli,
    wait_for,
    wait_for_http,
)
from PIL import Image

from pipeline.data.splits import to_unit_pixels

SPACE = textwrap.dedent("""\
    study:
      sampler: {type: grid, seed: 0}
      pruner: {type: none}
    data: {val_size: 1000, train_subset: 16000}
    fixed: {epochs: 2, depth: 2, width: 16, fc_width: 64, batch_size: 64}
    presets:
      setup:
        good: {optimizer: adamw, lr: 3.0e-3}
        weak: {optimizer: sgd, lr: 1.0e-4, momentum: 0.0, nesterov: false, epochs: 1}
    params:
      setup: {type: categorical, choices: [good, weak]}
""")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A folder with a 2-trial study and its best model promoted to mnist-cnn@champion."""
    folder = tmp_path_factory.mktemp("shop")
    (folder / "ship.yaml").write_text(SPACE)
    searched = invoke("search", "--space", "ship.yaml", "--trials", "2", "--no-report",
                      cwd=folder)
    assert searched.returncode == 0, searched.stderr
    promoted = invoke("promote", "best", cwd=folder)
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


def test_promote_best_makes_a_champion_with_its_lineage(shop, mnist):
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
    # Its digit for every test image stays with the run, for comparisons with later candidates.
    kept = np.load(client.download_artifacts(run.info.run_id, "test_predictions.npy",
                                             str(folder / "kept")))
    assert (kept == mnist.test.labels.numpy()).mean() == pytest.approx(
        float(tags["pipeline.test_accuracy"]))
    table = invoke("models", cwd=folder)
    assert table.returncode == 0
    assert "champion" in table.stdout and "mnist-ship" in table.stdout


def test_predict_reads_digits_and_says_how_sure(shop, digit_files):
    folder, _ = shop
    paths, labels = digit_files
    result = invoke("predict", *map(str, paths[:3]), cwd=folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [int(line.split(": ")[1].split()[0]) for line in lines] == labels[:3].tolist()
    assert all("(p=" in line for line in lines)


def test_predict_answers_the_good_files_and_names_the_bad_one(shop, digit_files, tmp_path):
    folder, _ = shop
    paths, labels = digit_files
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    result = invoke("predict", "--json", str(paths[0]), str(bad), str(paths[1]), cwd=folder)
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
    result = invoke("predict", "--model", model, str(digit_files[0][0]), cwd=folder)
    assert_one_line_error(result, fragment, code=1)


def test_predict_before_any_champion_is_one_line(tmp_path, digit_files):
    client = _registry(tmp_path)
    client.create_registered_model("mnist-cnn")  # registered, but nothing promoted yet
    result = invoke("predict", str(digit_files[0][0]), cwd=tmp_path)
    assert_one_line_error(result, "model 'mnist-cnn' has no alias 'champion' yet",
                          "pipeline promote best", code=1)


def test_promote_refuses_clearly(shop, tmp_path):
    folder, _ = shop
    assert_one_line_error(invoke("promote", "best", "--study", "nope", cwd=folder),
                          "no study named 'nope'", code=2)
    assert_one_line_error(invoke("promote", "best", cwd=tmp_path),
                          "no study in sqlite:///optuna.db", code=2)
    assert_wrote_nothing(tmp_path)  # a reading command creates no empty store
    unreachable = invoke("promote", "best", cwd=folder,
                         env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    assert_one_line_error(unreachable, "is unreachable", code=1)
    untouched = tmp_path / "untouched"
    untouched.mkdir()
    assert_one_line_error(invoke("promote", "0123abcd", "--study", "mnist-ship", cwd=untouched),
                          "--study goes with `promote best`", code=2)
    assert_wrote_nothing(untouched)  # refused before any store was opened
    assert_one_line_error(invoke("promote", "0123abcd", cwd=folder),
                          "no MLflow run '0123abcd'", code=1)
    assert_one_line_error(invoke("promote", "0123abcd", "--max-params", "5000", cwd=untouched),
                          "--max-params and --max-latency-ms go with `promote best`", code=2)
    assert_one_line_error(invoke("promote", "best", "--alpha", "1", cwd=untouched),
                          "--alpha", code=2)
    versions = len(_registry(folder).search_model_versions("name = 'mnist-cnn'"))
    too_small = invoke("promote", "best", "--max-params", "1000", cwd=folder)
    assert_one_line_error(too_small, "no complete trial of study 'mnist-ship' has at most 1,000 "
                          "parameters (the smallest has ", "raise the limits", code=1)
    assert len(_registry(folder).search_model_versions("name = 'mnist-cnn'")) == versions


def test_promote_refuses_runs_that_are_not_finished_or_have_no_model(tmp_path):
    client = _registry(tmp_path)
    experiment = client.create_experiment("by-hand")
    killed = client.create_run(experiment).info.run_id
    client.set_terminated(killed, "KILLED")
    empty = client.create_run(experiment).info.run_id
    client.set_terminated(empty, "FINISHED")
    assert_one_line_error(invoke("promote", killed, cwd=tmp_path),
                          f"run {killed} is KILLED, not FINISHED", code=1)
    assert_one_line_error(invoke("promote", empty, cwd=tmp_path),
                          f"run {empty} has no logged model", code=1)


def test_promote_refuses_a_study_without_a_complete_trial(tmp_path):
    space = SPACE.replace("good: {optimizer: adamw, lr: 3.0e-3}",
                          "good: {width: 1024, fc_width: 5000000}")  # cannot even be allocated
    (tmp_path / "s.yaml").write_text(space.replace("choices: [good, weak]", "choices: [good]"))
    assert invoke("search", "--space", "s.yaml", "--trials", "1", "--no-report",
                  cwd=tmp_path).returncode == 0
    assert_one_line_error(invoke("promote", "best", cwd=tmp_path),
                          "has no complete trial with a logged model yet", code=1)


def test_promoting_from_a_loss_study_records_the_real_validation_accuracy(tmp_path):
    """A study may minimise val_loss; the version's lineage still carries validation accuracy."""
    space = (SPACE.replace("  pruner: {type: none}", "  metric: val_loss\n  pruner: {type: none}")
             .replace("train_subset: 16000", "train_subset: 2000").replace("epochs: 2", "epochs: 1")
             .replace("choices: [good, weak]", "choices: [good]"))
    (tmp_path / "loss.yaml").write_text(space)
    assert invoke("search", "--space", "loss.yaml", "--trials", "1", "--no-report",
                  cwd=tmp_path).returncode == 0
    promoted = invoke("promote", "best", cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stderr
    client = _registry(tmp_path)
    tags = client.get_model_version_by_alias("mnist-cnn", "champion").tags
    logged = client.get_run(tags["pipeline.run_id"]).data.metrics["val_accuracy"]
    assert float(tags["pipeline.val_accuracy"]) == pytest.approx(logged, abs=1e-6)
    assert "nan" not in promoted.stdout


@pytest.fixture
def model_server(shop):
    """`mlflow models serve` on the champion, on loopback; stopped after the test."""
    with mlflow_model_server(shop[0], "models:/mnist-cnn@champion", name="model-server") as url:
        yield url


def test_mlflow_serves_the_champion_and_agrees_with_pipeline_predict(shop, digit_files,
                                                                     model_server):
    folder, _ = shop
    paths, labels = digit_files
    body = invoke("predict", "--request", *map(str, paths), cwd=folder)
    assert body.returncode == 0, body.stderr
    response = requests.post(f"{model_server}/invocations", data=body.stdout,
                             headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200, response.text
    served = np.array(response.json()["predictions"])
    assert served.shape == (200,)
    assert (served == labels).mean() >= 0.97
    local = invoke("predict", "--json", *map(str, paths), cwd=folder)
    assert local.returncode == 0, local.stderr
    predicted = np.array([json.loads(line)["digit"] for line in local.stdout.splitlines()])
    assert np.array_equal(predicted, served)


@contextmanager
def _served_in_a_browser(command: str, folder: Path, shot: Path):
    """`pipeline COMMAND --port P` as a real process, and Chromium on its page. Yields the
    server, the browser and the URL; afterwards a screenshot is at ``shot`` (kept under
    PIPELINE_TEST_ARTIFACTS when set) and the server has been stopped with Ctrl-C."""
    port = free_port()
    server = start_cli(command, "--port", str(port), cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: f"at {url}" in server.output()[0], timeout=120,
                 what=f"`pipeline {command}`'s URL line")
        wait_for_http(url, server=server, what=f"pipeline {command}")
        browser = chromium()
        try:
            yield server, browser, url
            keep_screenshot(browser, shot)
        finally:
            browser.quit()
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)


def test_the_mlflow_ui_shows_the_study_and_its_trials_in_a_real_browser(shop, tmp_path,
                                                                        browser_available):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder, _ = shop
    shot = tmp_path / "mlflow-ui.png"
    with _served_in_a_browser("ui", folder, shot) as (ui, browser, url):
        # One server process (and its MLflow launcher), not MLflow's default fourteen.
        assert len(descendants(ui.pid)) <= 3, descendants(ui.pid)

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
    with Image.open(shot) as image:
        assert image.size[0] >= 1000
    port = int(url.rsplit(":", 1)[1])
    # Ctrl-C stops the whole server, its workers included: the port is free again.
    wait_for(lambda: port_is_closed(port), timeout=30, what="the UI's port to be released")


def test_ui_refuses_a_busy_port(shop):
    import socket

    folder, _ = shop
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = invoke("ui", "--port", str(busy.getsockname()[1]), cwd=folder)
    assert_one_line_error(result, "is in use", "--port", code=2)


def _comparison_tags(version) -> dict[str, str]:
    keys = ("compared_with_version", "candidate_only_right", "champion_only_right", "mcnemar_p",
            "alpha", "decision")
    return {k: version.tags[f"pipeline.{k}"] for k in keys if f"pipeline.{k}" in version.tags}


def test_the_champion_moves_for_a_better_model_or_by_force_and_promoting_again_is_idempotent(
        shop):
    """Under a model name of its own, so the other tests' champion never moves, in any order."""
    folder, _ = shop
    client = _registry(folder)
    name = "order-free"
    experiment = client.get_experiment_by_name("mnist-ship").experiment_id
    weak_run = client.search_runs([experiment], "params.setup = 'weak'")[0].info.run_id
    best = invoke("promote", "best", "--name", name, cwd=folder)
    assert best.returncode == 0, best.stderr
    champion = client.get_model_version_by_alias(name, "champion")

    worse = invoke("promote", weak_run, "--name", name, cwd=folder)
    assert worse.returncode == 0, worse.stderr
    assert "champion stays at version 1" in worse.stdout
    assert "McNemar's exact test (one-sided): p = " in worse.stdout
    assert client.get_model_version_by_alias(name, "champion").version == champion.version
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    kept = _comparison_tags(client.get_model_version(name, "2"))
    assert kept["decision"] == "kept" and kept["compared_with_version"] == "1"
    assert int(kept["champion_only_right"]) > int(kept["candidate_only_right"])
    assert float(kept["mcnemar_p"]) > 0.05 and kept["alpha"] == "0.05"

    for again in (invoke("promote", weak_run, "--name", name, cwd=folder),
                  invoke("promote", "best", "--name", name, cwd=folder)):
        assert again.returncode == 0, again.stderr
        assert "no new version" in again.stdout
    assert len(client.search_model_versions(f"name = '{name}'")) == 2

    forced = invoke("promote", weak_run, "--name", name, "--force", cwd=folder)
    assert forced.returncode == 0, forced.stderr
    assert client.get_model_version_by_alias(name, "champion").version != champion.version
    assert _comparison_tags(client.get_model_version(name, "2"))["decision"] == "forced"

    # The better model, registered before, is read again and compared: it takes the alias back.
    back = invoke("promote", "best", "--name", name, cwd=folder)
    assert back.returncode == 0, back.stderr
    assert "the candidate is better at p < 0.05" in back.stdout
    assert client.get_model_version_by_alias(name, "champion").version == champion.version
    better = _comparison_tags(client.get_model_version(name, "1"))
    assert better["decision"] == "better" and float(better["mcnemar_p"]) < 1e-6
    # The shared champion never moved.
    assert str(client.get_model_version_by_alias("mnist-cnn", "champion").version) == "1"


def _docs_block(marker: str) -> str:
    """The fenced block that follows ``<!-- marker -->`` on the shipping page, as users copy
    it."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "shipping.md").read_text()
    after = text.split(f"<!-- {marker} -->", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


def test_export_writes_an_onnx_file_that_answers_like_the_champion(shop, mnist):
    """The shipping page's command, its agreement figures on the 10,000 test images, the file in
    the registry beside the champion, and the page's onnxruntime lines reading it."""
    import mlflow
    import onnxruntime

    folder, _ = shop
    result = invoke("export", cwd=folder)
    assert result.returncode == 0, result.stderr
    same = int(result.stdout.split("the same digit on ")[1].split()[0].replace(",", ""))
    difference = float(result.stdout.split("largest probability difference ")[1].split()[0])
    assert same >= 9990 and difference <= 1e-3
    written = folder / "digit-reader.onnx"
    assert written.is_file() and not list(folder.glob(".*.partial"))

    # Any batch size: the batch dimension is dynamic. Digits agree with the served model.
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")  # the registry's too
    try:
        served = mlflow.pyfunc.load_model("models:/mnist-cnn@champion")
        session = onnxruntime.InferenceSession(str(written))
        images = to_unit_pixels(mnist.test.images[:7]).numpy()
        for batch in (images[:1], images):
            probabilities, digits = session.run(None, {"pixels": batch})
            assert probabilities.shape == (len(batch), 10)
            assert digits.tolist() == np.asarray(served.predict(batch)).tolist()
        # A copy is logged with the registered version, and the version says where.
        champion = _registry(folder).get_model_version_by_alias("mnist-cnn", "champion")
        copy = Path(mlflow.artifacts.download_artifacts(champion.tags["pipeline.onnx"]))
        assert copy.read_bytes() == written.read_bytes()
    finally:
        mlflow.set_tracking_uri(None)  # the next test starts from nothing, as invoke does

    example = subprocess.run([sys.executable, "-c", _docs_block("onnx-example")], cwd=folder,
                             capture_output=True, text=True, timeout=120)
    assert example.returncode == 0, example.stderr
    assert example.stdout.split()[0] in "0123456789"


@pytest.mark.parametrize("args, fragment, code", [
    (("--output", "no/such/folder/reader.onnx"), "does not exist", 2),
    (("--model", "models:/mnist-cnn@staging"), "has no alias 'staging'", 1),
])
def test_export_refuses_clearly_and_writes_nothing(shop, args, fragment, code):
    folder, _ = shop
    before = sorted(p.name for p in folder.iterdir())
    result = invoke("export", *args, cwd=folder)
    assert_one_line_error(result, fragment, code=code)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_export_checks_both_agreement_bounds():
    from pipeline.ship.export import Agreement

    assert Agreement(10_000, 9_990, 9e-4, 0.99).passed
    assert not Agreement(10_000, 9_989, 0.0, 0.99).passed  # one digit too many differs
    assert not Agreement(10_000, 10_000, 2e-3, 0.99).passed  # probabilities drifted


def test_optunas_own_dashboard_reads_the_study_and_its_attributes(shop):
    """`optuna-dashboard sqlite:///optuna.db`, as the docs have it, in the study's folder."""
    folder, _ = shop
    study = optuna_dashboard_study("sqlite:///optuna.db", "mnist-ship", cwd=folder)
    trials = study["trials"]
    assert len(trials) == 2 and {t["state"] for t in trials} <= {"Complete", "Pruned"}
    for trial in trials:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert len(attrs["mlflow_run_id"]) == 32  # the way from the dashboard to MLflow
        assert attrs["outcome"] in ("complete", "pruned")
        assert "train" in json.loads(attrs["seconds"])  # a dict, readable as JSON
    study_attrs = {a["key"]: a["value"] for a in study["user_attrs"]}
    assert study_attrs["space_fingerprint"]


def _draw_a_seven(browser, pad):
    """Real pointer events on the sketchpad's canvas: across the top, then down to the left."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # The pad's tools render after the pad itself: wait for them (a busy machine is slow).
    WebDriverWait(browser, 60).until(lambda d: pad.find_elements(
        By.CSS_SELECTOR, "button[aria-label='Brush']"))[0].click()
    canvas = WebDriverWait(browser, 60).until(
        lambda d: pad.find_elements(By.TAG_NAME, "canvas"))[-1]
    stroke = ActionChains(browser, duration=20)
    stroke.move_to_element_with_offset(canvas, -60, -90).click_and_hold()
    for x, y in [(-20, -90), (20, -90), (60, -90), (40, -30), (20, 30), (0, 90)]:
        stroke.move_to_element_with_offset(canvas, x, y)
    stroke.release().perform()
    return canvas


def test_the_demo_reads_a_digit_drawn_in_a_real_browser_as_predict_does(shop, tmp_path,
                                                                          browser_available):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder, _ = shop
    drawn = tmp_path / "drawn.png"
    with _served_in_a_browser("demo", folder, tmp_path / "demo.png") as (demo, browser, url):
        browser.get(url)
        pad = WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "sketchpad"))
        canvas = _draw_a_seven(browser, pad)
        answer = WebDriverWait(browser, 60).until(
            lambda d: "Digit:" in d.find_element(By.ID, "answer").text
            and d.find_element(By.ID, "answer").text)
        bars = browser.find_element(By.ID, "bars").text
        canvas.screenshot(str(drawn))
    stderr = demo.output()[1]
    assert demo.proc.returncode == 0 and "Traceback" not in stderr, stderr  # Ctrl-C: clean
    digit = int(answer.split("Digit:")[1].split()[0])
    assert all(str(d) in bars for d in range(10))  # ten probabilities, one bar each
    # The same drawing, as pixels of the page, read by `pipeline predict`: the same digit. The
    # crop keeps the drawing area and leaves out the pad's tool buttons.
    with Image.open(drawn) as picture:
        cx, cy = picture.width // 2, picture.height // 2
        picture.crop((cx - 130, cy - 130, cx + 130, cy + 130)).save(drawn)
    predicted = invoke("predict", str(drawn), cwd=folder)
    assert predicted.returncode == 0, predicted.stderr
    assert int(predicted.stdout.split(": ")[1].split()[0]) == digit == 7


def test_the_demo_refuses_before_any_server_starts(tmp_path, shop):
    client = _registry(tmp_path)
    client.create_registered_model("mnist-cnn")  # registered, but nothing promoted yet
    result = invoke("demo", cwd=tmp_path)
    assert_one_line_error(result, "model 'mnist-cnn' has no alias 'champion' yet",
                          "pipeline promote best", code=1)
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = invoke("demo", "--port", str(busy.getsockname()[1]), cwd=shop[0])
    assert_one_line_error(result, "is in use", "--port", code=2)


@pytest.mark.parametrize("command, module, fragment", [
    ("export", "onnxruntime", 'pip install -e ".[export]"'),
    ("demo", "gradio", 'pip install -e ".[demo]"'),
])
def test_a_missing_extra_says_how_to_install_it(shop, monkeypatch, command, module, fragment):
    folder, _ = shop
    monkeypatch.setitem(sys.modules, module, None)  # `import` now fails, as without the extra
    before = sorted(p.name for p in folder.iterdir())
    result = invoke(command, cwd=folder)
    assert_one_line_error(result, f"`pipeline {command}` needs", fragment, code=2)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_export_refuses_a_digit_reader_pipeline_did_not_log(shop, tmp_path):
    """A model from elsewhere that takes 28x28 images: its network cannot be rebuilt."""
    import mlflow

    from pipeline.track.artifacts import MODEL_SIGNATURE

    class Zeros(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return np.zeros(len(model_input), dtype=np.int64)

    folder, _ = shop
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    try:
        with mlflow.start_run() as run:
            mlflow.pyfunc.log_model(name="zeros", python_model=Zeros(),
                                    signature=MODEL_SIGNATURE)
    finally:
        mlflow.set_tracking_uri(None)
    output = tmp_path / "zeros.onnx"
    result = invoke("export", "--model", f"runs:/{run.info.run_id}/zeros", "-o", str(output),
                    cwd=folder)
    assert_one_line_error(result, "carries no `pipeline` architecture", code=1)
    assert not output.exists()


def test_a_search_warm_started_from_the_champion_runs_its_parameters_first(shop):
    """Last in this file: it adds a study, which `promote best` would otherwise take as the most
    recent."""
    import optuna

    folder, _ = shop
    # The shop's space, on a few images: what is checked is which parameters run, not how well.
    (folder / "warm.yaml").write_text(SPACE.replace("train_subset: 16000", "train_subset: 500")
                                      .replace("epochs: 2,", "epochs: 1,"))
    refused = invoke("search", "--space", "warm.yaml", "--study", "warm", "--trials", "1",
                     "--warm-start", "nope", "--no-report", cwd=folder)
    assert_one_line_error(refused, "--warm-start nope: no such study in this storage", code=2)
    storage = f"sqlite:///{folder}/optuna.db"
    assert "warm" not in optuna.get_all_study_names(storage)  # refused before it was made

    result = invoke("search", "--space", "warm.yaml", "--study", "warm", "--trials", "1",
                    "--warm-start", "models:/mnist-cnn@champion", "--no-report", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "warm start: 1 configuration(s) of models:/mnist-cnn@champion queued" in result.stdout
    champion = _registry(folder).get_model_version_by_alias("mnist-cnn", "champion")
    (trial,) = optuna.load_study(study_name="warm", storage=storage).trials
    assert trial.params == {"setup": "good"}  # the champion's setup
    assert trial.user_attrs["warm_start"] == (f"models:/mnist-cnn@champion "
                                              f"(run {champion.run_id})")
