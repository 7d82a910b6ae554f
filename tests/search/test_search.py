"""`pipeline search` end to end: a real Optuna study, a real MLflow store, tiny real MNIST runs.

Searches run in this process (helpers.invoke); the ways a search is stopped (Ctrl-C, SIGTERM,
SIGKILL) are real processes, since only a process shows them.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import signal
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest
from helpers import (
    assert_one_line_error,
    assert_wrote_nothing,
    chromium,
    free_port,
    invoke,
    keep_screenshot,
    mlflow_client,
    opened_once,
    optuna_study,
    runs_by_role,
    start_cli,
    wait_for,
)
from optuna.trial import TrialState
from PIL import Image
from spaces import tiny_space

from pipeline.core import outcomes
from pipeline.core.timings import PHASES
from pipeline.data.splits import to_unit_pixels

TINY = tiny_space()


def _search(folder, space_text=TINY, *args, name="tiny", env=None):
    (folder / f"{name}.yaml").write_text(space_text)
    return invoke("search", "--space", f"{name}.yaml", *args, cwd=folder, env=env)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One search of 8 trials, inspected by several tests."""
    folder = tmp_path_factory.mktemp("search")
    result = _search(folder, TINY, "--trials", "8")
    assert result.returncode == 0, result.stderr
    return folder, result


def test_the_study_has_n_trials_and_mlflow_one_parent_and_n_matching_children(searched):
    folder, result = searched
    study = optuna_study(folder, "mnist-tiny")
    trials = study.get_trials()
    assert len(trials) == 8
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    roles = runs_by_role(folder, "mnist-tiny")
    assert len(roles["study"]) == 1
    parent = roles["study"][0]
    assert parent.info.status == "FINISHED"
    children = {r.info.run_id: r for r in roles["trial"]}
    assert len(children) == 8
    for trial in trials:
        run = children[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["pipeline.trial_number"] == str(trial.number)
        outcome = outcomes.by_name(trial.user_attrs["outcome"])
        assert trial.state.name == outcome.trial_state
        assert run.info.status == outcome.run_status
        assert run.data.tags["pipeline.state"] == outcome.name
        # Sampled and derived params; per-epoch metrics for every epoch the trial reported.
        params = run.data.params
        for key in ("width", "lr", "parameter_count", "used_device", "used_precision",
                    "used_cuda_graph", "data_checksum", "space_fingerprint", "torch_version",
                    "optuna_version", "seed"):
            assert key in params, key
        history = mlflow_client(folder).get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == sorted(trial.intermediate_values)
        for metric in ("train_loss", "val_loss", "lr", "epoch_seconds", "images_per_second"):
            assert metric in run.data.metrics
        if trial.state == TrialState.PRUNED:
            assert run.data.tags["pipeline.state"] == "pruned"
            assert run.data.tags["pipeline.pruned_epoch"] == str(
                trial.user_attrs["pruned_epoch"])
    states = {t.state for t in trials}
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states
    # The progress lines a log shows, one per trial.
    assert sum(line.startswith("trial ") for line in result.stdout.splitlines()) == 8


def test_every_trial_records_where_its_time_went(searched):
    """By phase, on the trial and its run; the phases add up to the trial's wall time as far as
    their own recording, and the report sums them."""
    folder, result = searched
    runs = {r.info.run_id: r for r in runs_by_role(folder, "mnist-tiny")["trial"]}
    for trial in optuna_study(folder, "mnist-tiny").get_trials():
        seconds = trial.user_attrs["seconds"]
        assert list(seconds) == list(PHASES)
        assert all(v >= 0 for v in seconds.values())
        wall = trial.duration.total_seconds()
        run = runs[trial.user_attrs["mlflow_run_id"]]
        # The phases account for the trial's time from its start (the claim included) to the
        # moment they are recorded, after its run closed. Only that recording and Optuna's own
        # end of the trial come later: their storage writes take what the machine's load makes
        # them take, so the bounds are the two moments the stores keep, not a tolerance.
        closed = run.info.end_time / 1000 - trial.datetime_start.timestamp()
        assert closed - 0.002 <= sum(seconds.values()) <= wall + 0.002, (closed, wall, seconds)
        # What none of the phases measured ("other") is small.
        assert seconds["other"] <= 0.05 + 0.05 * wall, seconds
        assert seconds["train"] > 0 and seconds["evaluate"] > 0
        metrics = run.data.metrics
        if trial.state == TrialState.COMPLETE:
            assert seconds["mlflow_model"] > 0 and seconds["mlflow_artifacts"] > 0
        else:
            assert seconds["mlflow_model"] == 0  # a pruned trial logs no model
        # What every trial's network costs to run, measured before it trained, on the trial and
        # its run alike.
        assert 0 < seconds["cost"] < 1.0
        cost = trial.user_attrs["cost"]
        assert list(cost) == ["params", "flops_per_image", "latency_ms", "images_per_second"]
        for name, value in cost.items():
            assert value > 0 and metrics[f"cost_{name}"] == pytest.approx(value)
        assert cost["params"] == int(run.data.params["parameter_count"])
        assert metrics["seconds_train"] == pytest.approx(seconds["train"])
        assert trial.user_attrs["overhead_seconds"] == pytest.approx(
            sum(v for k, v in seconds.items() if k not in ("train", "evaluate")), abs=2e-3)
    assert "Where the time went (8 finished trials" in result.stdout
    assert re.search(r"overhead \(all but train and evaluate\), mean \(median\): [\d.]+ s "
                     r"\([\d.]+ s\) per complete trial, [\d.]+ s \([\d.]+ s\) per pruned trial",
                     result.stdout)


# Successive halving with four reports per epoch: rungs at 1/4 and 1 epoch, and only the top
# quarter of the trials at a rung go on. Learning rates down to 1e-6 learn nothing.
HALVING = TINY.replace("pruner: {n_startup_trials: 2, n_warmup_steps: 0}",
                       "pruner: {type: successive_halving, reduction_factor: 4, "
                       "reports_per_epoch: 4}")


@pytest.fixture(scope="module")
def halved(tmp_path_factory):
    """A heavily pruned study: ten trials, most stopped at their first quarter epoch."""
    folder = tmp_path_factory.mktemp("halved")
    result = _search(folder, HALVING, "--trials", "10", name="halving")
    assert result.returncode == 0, result.stderr
    return folder, result


def test_successive_halving_stops_weak_trials_part_way_through_an_epoch(halved):
    tmp_path, _ = halved
    trials = optuna_study(tmp_path, "mnist-halving").get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and any(t.user_attrs["pruned_epoch"] < 1 for t in pruned)
    runs = {r.info.run_id: r for r in runs_by_role(tmp_path, "mnist-halving")["trial"]}
    for t in trials:
        # Reports are quarters of an epoch, numbered 1, 2, 3, ...; epochs trained follow them.
        assert sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1))
        assert t.user_attrs["epochs_trained"] == len(t.intermediate_values) / 4
        if t.state == TrialState.PRUNED:
            fraction = t.user_attrs["pruned_epoch"]
            assert fraction == t.user_attrs["epochs_trained"]
            assert runs[t.user_attrs["mlflow_run_id"]].data.tags["pipeline.pruned_epoch"] == \
                str(fraction)
            assert "(successive halving)" in t.user_attrs["reason"]
            assert f"pruned after {fraction:g} epochs" in t.user_attrs["reason"] or \
                f"pruned after epoch {fraction:g}" in t.user_attrs["reason"]
        else:
            assert len(t.intermediate_values) == 8  # two epochs, four reports each


def test_a_heavily_pruned_study_is_explained_at_its_first_rung_in_a_real_browser(
        halved, browser_available):
    """Most trials stopped at a quarter epoch: the page still says which parameters mattered,
    from every trial at that rung, and draws them all; the search's last lines name the three
    most important. A screenshot of it is kept (PIPELINE_TEST_ARTIFACTS)."""
    from selenium.webdriver.support.ui import WebDriverWait

    folder, result = halved
    trials = optuna_study(folder, "mnist-halving").trials
    assert sum(t.state == TrialState.PRUNED for t in trials) > len(trials) / 2
    rests_on = f"validation accuracy at 0.25 epoch, {len(trials)} trials"
    assert f"most important ({rests_on}): " in result.stdout
    browser = chromium()
    try:
        browser.get((folder / "reports" / "mnist-halving" / "index.html").as_uri())
        WebDriverWait(browser, 60).until(lambda d: d.execute_script(
            "const p = [...document.querySelectorAll('.js-plotly-plot')];"
            "return p.length > 0 && p.every(e => e.querySelector('svg'))"))
        importance = browser.execute_script(
            "const f = document.getElementById('figure-importance_at_the_first_rung');"
            "return f && {title: f.layout.title.text, params: f.data[0].y,"
            "             bars: f.querySelectorAll('.bars .point').length}")
        assert importance["title"] == f"Parameter importance: {rests_on}"
        assert len(importance["params"]) >= 2 and importance["bars"] >= 2
        history = browser.execute_script(
            "return document.getElementById('figure-history_at_the_first_rung').data"
            ".map(t => [t.name, (t.x || []).length])")
        drawn = dict(history)
        assert drawn["pruned"] + drawn["complete"] == len(trials)
        body = browser.find_element("tag name", "body").text
        assert "what mattered most" in body and rests_on in body
        keep_screenshot(browser, folder / "report_page_pruned.png")
    finally:
        browser.quit()


def test_complete_trials_have_a_confusion_matrix_and_a_model_that_reads_digits(searched, mnist,
                                                                             tmp_path):
    folder, _ = searched
    client = mlflow_client(folder)
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    complete = optuna_study(folder, "mnist-tiny").get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= 4
    images = to_unit_pixels(mnist.test.images[:200]).numpy()
    try:
        for trial in sorted(complete, key=lambda t: -t.value)[:2]:
            run_id = trial.user_attrs["mlflow_run_id"]
            artifacts = {a.path for a in client.list_artifacts(run_id)}
            assert {"confusion_matrix.png", "confusion_matrix.json"} <= artifacts
            # Into a folder of the test's: without one, MLflow makes one in /tmp and leaves it.
            matrix = json.loads(Path(client.download_artifacts(
                run_id, "confusion_matrix.json", str(tmp_path))).read_text())
            assert np.array(matrix["matrix"]).shape == (10, 10)
            assert np.array(matrix["matrix"]).sum() == 500  # every validation image, once
            metrics = client.get_run(run_id).data.metrics
            assert all(f"val_accuracy_digit_{d}" in metrics for d in range(10))
            # Recorded whatever the study's metric, so promotion can report it.
            assert trial.user_attrs["val_accuracy"] == pytest.approx(trial.value)
            # The model is filed under the study's experiment and linked to the trial's run.
            logged = mlflow.get_logged_model(trial.user_attrs["model_uri"].split("/")[-1])
            assert logged.source_run_id == run_id
            assert logged.experiment_id == client.get_run(run_id).info.experiment_id
            # Loaded as the README shows it.
            model = mlflow.pyfunc.load_model(trial.user_attrs["model_uri"])
            digits = model.predict(images)
            assert digits.shape == (200,) and digits.dtype == np.int64
            assert set(np.unique(digits)) <= set(range(10))
            assert (digits == mnist.test.labels[:200].numpy()).mean() > 0.6
    finally:
        mlflow.set_tracking_uri(None)


# The figures of a study whose first rung (epoch 1) all eight trials reached, four or more of
# them complete: the rung's figures over every trial, and the complete trials' own.
FIGURES = ("learning_curves", "importance_at_the_first_rung", "param_importances",
           "history_at_the_first_rung", "slices_at_the_first_rung",
           "parallel_coordinates_at_the_first_rung", "optimization_history",
           "cost_of_accuracy", "parallel_coordinate", "slice")


def test_the_report_folder_has_the_html_figures_and_the_parent_run_has_the_page(searched):
    folder, result = searched
    report = folder / "reports" / "mnist-tiny"
    for name in ("index", *FIGURES):
        assert (report / f"{name}.html").stat().st_size > 1000, name
    assert "Top trials of 'mnist-tiny'" in result.stdout
    parent = runs_by_role(folder, "mnist-tiny")["study"][0]
    logged = {a.path for a in mlflow_client(folder).list_artifacts(parent.info.run_id, "report")}
    assert {"report/index.html", "report/top_trials.csv"} <= logged


def test_the_report_page_stands_alone_and_renders_every_figure_in_a_real_browser(
        searched, browser_available):
    """index.html opened from disk with no network: headline, every figure drawn by the inlined
    plotly.js, the best trial's confusion matrix and mistakes, pruned trials marked; a
    screenshot of it is kept (PIPELINE_TEST_ARTIFACTS)."""
    from selenium.webdriver.support.ui import WebDriverWait

    folder, _ = searched
    index = folder / "reports" / "mnist-tiny" / "index.html"
    study = optuna_study(folder, "mnist-tiny")
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    browser = chromium()
    try:
        browser.get(index.as_uri())
        drawn = WebDriverWait(browser, 60).until(lambda d: d.execute_script(
            "const p = document.querySelectorAll('.js-plotly-plot');"
            f"return p.length === {len(FIGURES)} && [...p].every(e => e.querySelector('svg'))"
            " && p.length"))
        assert drawn == len(FIGURES)  # every figure of the report folder, on the one page
        body = browser.find_element("tag name", "body").text
        for words in ("best", "trials", "wall time", "saved by pruning", "Learning curves",
                      "The best trial", "Confusion matrix", "Its mistakes", "Top trials"):
            assert words in body, words
        assert f"{len(pruned)} pruned" in body
        # Both pictures are real images, decoded by the browser.
        sizes = browser.execute_script(
            "return [...document.images].map(i => i.complete && i.naturalWidth)")
        assert len(sizes) == 2 and all(w > 100 for w in sizes)
        curves = browser.execute_script(
            "return document.getElementById('figure-learning_curves').data"
            ".map(t => t.name)")
        assert "best trial" in curves
        assert ("pruned here" in curves) == bool(pruned)
        # Nothing was fetched but the page itself: it opens offline, from a mail or a run.
        fetched = browser.execute_script(
            "return performance.getEntriesByType('resource').map(r => r.name)")
        assert not [url for url in fetched if not url.startswith(("data:", "file:"))], fetched
        # What a reader sees first: the headline and the learning curves, drawn (not blank).
        shot = keep_screenshot(browser, folder / "report_page.png")
        with Image.open(shot) as picture:
            assert picture.size[0] >= 1000
            assert len(picture.convert("RGB").getcolors(1 << 20) or []) > 50
    finally:
        browser.quit()


def test_resume_adds_trials_and_a_changed_space_is_refused_unless_forced(tmp_path):
    space = TINY.replace("train_subset: 2000", "train_subset: 500")
    assert _search(tmp_path, space, "--trials", "2", "--no-report").returncode == 0
    # `pipeline report` on a study too small for importances: a note, not a crash.
    report = invoke("report", cwd=tmp_path)  # the most recent study
    assert report.returncode == 0, report.stderr
    assert re.search(r"parameter importances need at least 4 complete trials; this study has "
                     r"[0-2]\b", report.stdout)
    assert (tmp_path / "reports" / "mnist-tiny" / "optimization_history.html").exists()
    assert_one_line_error(invoke("report", "--study", "nope", cwd=tmp_path),
                          "no study named 'nope'", "mnist-tiny", code=2)
    resumed = _search(tmp_path, space, "--trials", "3", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout
    assert len(optuna_study(tmp_path, "mnist-tiny").trials) == 3
    roles = runs_by_role(tmp_path, "mnist-tiny")
    assert len(roles["study"]) == 1 and len(roles["trial"]) == 3

    changed = space.replace("high: 3.0e-2", "high: 5.0e-2")
    refused = _search(tmp_path, changed, "--trials", "4")
    assert_one_line_error(refused, "different search space", "params.lr.high: 0.03 → 0.05",
                          "--force", code=2)
    assert len(optuna_study(tmp_path, "mnist-tiny").trials) == 3

    forced = _search(tmp_path, changed, "--trials", "4", "--force", "--no-report")
    assert forced.returncode == 0, forced.stderr
    study = optuna_study(tmp_path, "mnist-tiny")
    assert len(study.trials) == 4
    assert len(study.user_attrs["space_history"]) == 1

    # The metric decides what "best" means: not even --force changes it.
    other_metric = changed.replace("study:\n", "study:\n  metric: val_loss\n", 1)
    assert_one_line_error(_search(tmp_path, other_metric, "--trials", "5", "--force"),
                          "a study cannot change its metric", "new --study name", code=2)
    assert len(optuna_study(tmp_path, "mnist-tiny").trials) == 4


def test_an_unreachable_tracking_server_is_one_line_and_writes_nothing(tmp_path):
    result = _search(tmp_path, TINY, "--trials", "1",
                     env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    assert_one_line_error(result, "tracking server at http://127.0.0.1:", "is unreachable",
                          "MLFLOW_TRACKING_URI", code=1)
    assert_wrote_nothing(tmp_path, "tiny.yaml")


@pytest.mark.parametrize("storage, fragment", [
    ("optuna.db", "'optuna.db' is not a database URL"),
    ("nosuch://x/y", "not a database URL SQLAlchemy knows"),
    ("postgresql+pg8000://u:pw@127.0.0.1:1/optuna",
     'its database driver (pg8000) is not installed; pip install -e ".[postgres]"'),
])
def test_a_bad_storage_url_is_one_line_and_writes_nothing(tmp_path, storage, fragment):
    result = _search(tmp_path, TINY, "--storage", storage)
    line = assert_one_line_error(result, fragment, code=2)
    assert "pw@" not in line  # never the password
    assert_wrote_nothing(tmp_path, "tiny.yaml")


FAULTS = textwrap.dedent("""\
    study:
      sampler: {type: grid, seed: 0}
      pruner: {type: none}
    data: {val_size: 500, train_subset: 1000}
    fixed: {epochs: 2, depth: 1, fc_layers: 0}
    presets:
      case:
        healthy: {width: 4, optimizer: adamw, lr: 0.01}
        diverging: {width: 4, batch_norm: false, optimizer: sgd, lr: 1.0e+6, momentum: 0.0,
                    schedule: constant}
        # 200,704 features x 5,000,000 units: a 4 TB weight matrix.
        too_big: {width: 1024, fc_layers: 1, fc_width: 5000000}
    params:
      case: {type: categorical, choices: [healthy, diverging, too_big]}
""")


@contextlib.contextmanager
def address_space_limit(extra_bytes: int = 8 << 30):
    """Limit this process's address space to what it uses now plus ``extra_bytes``: a huge
    allocation then fails whatever the kernel's overcommit setting (with overcommit on, a 4 TB
    allocation would succeed, and the kernel would kill the process when it is written)."""
    with open("/proc/self/status") as f:
        used = int(f.read().split("VmSize:")[1].split()[0]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_each_trial_outcome_closes_its_trial_and_run_as_the_table_says(tmp_path):
    """Complete, diverged and out of memory (pruned is in `searched`; interrupted and
    dead-worker below): each trial and its run end as outcomes.py maps them, and the study goes
    on."""
    with address_space_limit():
        result = _search(tmp_path, FAULTS, "--trials", "3", name="faults")
    assert result.returncode == 0, result.stderr
    study = optuna_study(tmp_path, "mnist-faults")
    by_case = {t.params["case"]: t for t in study.trials}
    expected = {"healthy": outcomes.COMPLETE, "diverging": outcomes.DIVERGED,
                "too_big": outcomes.OUT_OF_MEMORY}
    client = mlflow_client(tmp_path)
    for case, outcome in expected.items():
        trial = by_case[case]
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert trial.state.name == outcome.trial_state, case
        assert trial.user_attrs["outcome"] == outcome.name, case
        assert run.info.status == outcome.run_status, case
        assert run.data.tags["pipeline.state"] == outcome.name, case
    assert "diverged: loss became non-finite" in by_case["diverging"].user_attrs["reason"]
    assert by_case["diverging"].user_attrs["pruned_epoch"] == 1
    reason = by_case["too_big"].user_attrs["reason"]
    assert reason.startswith("out of memory:") and "can't allocate memory" in reason
    assert client.get_run(by_case["too_big"].user_attrs["mlflow_run_id"]).data.tags[
        "pipeline.reason"] == reason


# Long enough per epoch that a signal sent after the first epoch lands mid-trial.
SLOW = textwrap.dedent("""\
    study:
      sampler: {seed: 0, n_startup_trials: 2}
      pruner: {type: none}
    data: {val_size: 500, train_subset: 3000}
    fixed: {epochs: 5, depth: 1, fc_width: 16, batch_size: 64}
    params:
      width: {type: categorical, choices: [4, 8]}
      lr: {type: float, low: 3.0e-3, high: 3.0e-2, log: true}
""")
# A one-trial study: each stop hits the same trial (its retry), and the resume runs it once.
SLOW_ARGS = ("search", "--space", "slow.yaml", "--trials", "1", "--no-report")


def _mid_trial(folder):
    """A trial that is running and has reported at least one epoch."""
    study = opened_once(lambda: optuna_study(folder, "mnist-slow"))

    def check():
        if (opened := study()) is None:
            return None
        running = opened.get_trials(states=(TrialState.RUNNING,))
        return running[0] if running and running[0].intermediate_values else None
    return check


def _stop_mid_trial(folder, how: signal.Signals) -> dict:
    """Start the real program, stop it with ``how`` once a trial is in its second epoch."""
    proc = start_cli(*SLOW_ARGS, cwd=folder)
    victim = wait_for(_mid_trial(folder), what="a trial in its second epoch")
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=120)
    client = mlflow_client(folder)
    study = optuna_study(folder, "mnist-slow")
    run = client.get_run(victim.user_attrs["mlflow_run_id"])
    return {"code": proc.returncode, "stderr": stderr, "victim": victim, "run": run,
            "trial": study.trials[victim.number],
            "waiting": study.get_trials(states=(TrialState.WAITING,)),
            "running": study.get_trials(states=(TrialState.RUNNING,)),
            "running_runs": client.search_runs(
                [client.get_experiment_by_name("mnist-slow").experiment_id],
                "attributes.status = 'RUNNING'")}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """One study stopped three ways, each mid-trial: Ctrl-C, SIGTERM, then SIGKILL (no handler
    runs); then resumed by one more search."""
    folder = tmp_path_factory.mktemp("stopped")
    (folder / "slow.yaml").write_text(SLOW)
    phases = {how: _stop_mid_trial(folder, how)
              for how in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)}
    resumed = invoke(*SLOW_ARGS, cwd=folder)
    return folder, phases, resumed


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_stopped_search_fails_and_requeues_its_trial_and_leaves_nothing_running(stopped,
                                                                                 how):
    _, phases, _ = stopped
    phase = phases[how]
    assert phase["code"] == 128 + how
    assert "Traceback" not in phase["stderr"]
    errors = [line for line in phase["stderr"].splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "queued to run again" in errors[0], phase["stderr"]
    assert not phase["running"] and not phase["running_runs"]
    trial, run = phase["trial"], phase["run"]
    assert trial.state == TrialState.FAIL and trial.user_attrs["outcome"] == "interrupted"
    assert run.info.status == outcomes.INTERRUPTED.run_status == "KILLED"
    assert run.data.tags["pipeline.state"] == "interrupted"
    assert [t.params for t in phase["waiting"]] == [trial.params]


def test_a_killed_worker_is_reconciled_by_the_next_search_and_the_study_completes(stopped):
    folder, phases, resumed = stopped
    killed = phases[signal.SIGKILL]
    victim = killed["victim"]
    assert killed["code"] == -signal.SIGKILL
    assert killed["run"].info.status == "RUNNING"  # nothing closed it: no handler ran
    assert resumed.returncode == 0, resumed.stderr
    assert (f"failed 1 trial(s) left running by a dead worker (#{victim.number})"
            in resumed.stdout)
    study = optuna_study(folder, "mnist-slow")
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["outcome"] == "dead-worker"
    assert "died" in dead.user_attrs["reason"]
    run = mlflow_client(folder).get_run(victim.user_attrs["mlflow_run_id"])
    assert run.info.status == outcomes.DEAD_WORKER.run_status
    assert run.data.tags["pipeline.state"] == "dead-worker"
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 1
    # Every stopped trial ran again with its parameters, and finished.
    for phase in phases.values():
        number = phase["victim"].number
        reruns = [t for t in complete if number in t.system_attrs.get("retry_history", [])]
        assert len(reruns) == 1 and reruns[0].params == phase["victim"].params


def test_train_end_to_end_prints_progress_and_is_tracked_like_a_trial(tmp_path):
    config = tmp_path / "small.yaml"
    # YAML 1.1 reads 3e-3 as a string; the loader accepts it as the number it plainly is.
    config.write_text("depth: 2\nwidth: 8\nfc_width: 32\nlr: 3e-3\nepochs: 2\n"
                      "train_subset: 3000\nval_size: 500\nchannels_last: off\n")
    result = invoke("train", "--config", str(config), "--rotation", "10", "--fc-width", "64",
                    "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "conv8k3 → maxpool → conv16k3 → maxpool → fc64 → 10" in out  # option beats file
    assert "3,000 training / 500 validation images" in out
    assert "epoch 2/2" in out  # not a terminal: one summary line per epoch
    final = [line for line in out.splitlines() if line.startswith("validation accuracy")][0]
    assert float(final.split()[2].rstrip("%")) > 80 and float(final.split()[5].rstrip("%")) > 80
    runs = runs_by_role(tmp_path, "pipeline-train")["train"]
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["pipeline.state"] == "complete"
    assert run.data.params["fc_width"] == "64" and run.data.params["rotation"] == "10"
    assert "parameter_count" in run.data.params
    assert "test_accuracy" in run.data.metrics
    client = mlflow_client(tmp_path)
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    assert "confusion_matrix.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        models = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id], output_format="list")
    finally:
        mlflow.set_tracking_uri(None)
    assert [m.source_run_id for m in models] == [run.info.run_id]


def test_a_diverging_train_is_one_line_and_its_run_is_closed_diverged(tmp_path):
    result = invoke("train", "--depth", "1", "--width", "4", "--no-batch-norm", "--optimizer",
                    "sgd", "--lr", "1e6", "--momentum", "0", "--schedule", "constant",
                    "--epochs", "1", "--train-subset", "500", "--val-size", "100",
                    cwd=tmp_path)
    assert_one_line_error(result, "training diverged: loss became non-finite", "lower --lr",
                          code=1)
    run = runs_by_role(tmp_path, "pipeline-train")["train"][0]
    assert run.info.status == "KILLED" and run.data.tags["pipeline.state"] == "diverged"
