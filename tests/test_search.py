"""`pipeline search` end to end: a real Optuna study, a real MLflow store, tiny real MNIST runs."""

from __future__ import annotations

import json
import re
import signal
import textwrap

import mlflow
import numpy as np
import pytest
from helpers import (
    assert_one_line_error,
    free_port,
    mlflow_client,
    optuna_study,
    run_cli,
    runs_by_role,
    start_cli,
    wait_for,
)
from optuna.trial import TrialState

# Learning rates down to 1e-6 learn nothing in two epochs: the seeded random start draws some,
# and the median pruner must stop them.
TINY = textwrap.dedent("""\
    study:
      sampler: {seed: 0, n_startup_trials: 5}
      pruner: {n_startup_trials: 2, n_warmup_steps: 0}
    data: {val_size: 500, train_subset: 3000}
    fixed: {epochs: 2, depth: 1, fc_width: 16, batch_size: 64}
    params:
      width: {type: categorical, choices: [4, 8]}
      lr: {type: float, low: 1.0e-6, high: 3.0e-2, log: true}
""")
STATUS_OF = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED",
             TrialState.FAIL: "FAILED"}


def _search(folder, space_text=TINY, *args, name="tiny", env=None):
    (folder / f"{name}.yaml").write_text(space_text)
    return run_cli("search", "--space", f"{name}.yaml", *args, cwd=folder, env=env)


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
        assert run.info.status == STATUS_OF[trial.state]
        # Sampled and derived params; per-epoch metrics for every epoch the trial reported.
        params = run.data.params
        for key in ("width", "lr", "parameter_count", "used_device", "used_precision",
                    "data_checksum", "space_fingerprint", "torch_version", "optuna_version",
                    "seed"):
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


def test_complete_trials_have_a_confusion_matrix_and_a_model_that_reads_digits(searched, mnist):
    folder, _ = searched
    client = mlflow_client(folder)
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    complete = optuna_study(folder, "mnist-tiny").get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= 4
    images = (mnist.test.images[:200].float() / 255).numpy()
    for trial in sorted(complete, key=lambda t: -t.value)[:2]:
        run_id = trial.user_attrs["mlflow_run_id"]
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert {"confusion_matrix.png", "confusion_matrix.json"} <= artifacts
        matrix = json.loads(open(client.download_artifacts(run_id,
                                                           "confusion_matrix.json")).read())
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
        model = mlflow.pyfunc.load_model(trial.user_attrs["model_uri"])
        digits = model.predict(images)
        assert digits.shape == (200,) and digits.dtype == np.int64
        assert set(np.unique(digits)) <= set(range(10))
        assert (digits == mnist.test.labels[:200].numpy()).mean() > 0.6


def test_the_report_folder_has_the_html_figures_and_the_parent_run_has_the_page(searched):
    folder, result = searched
    report = folder / "reports" / "mnist-tiny"
    for name in ("index", "optimization_history", "intermediate_values", "parallel_coordinate",
                 "slice", "param_importances"):
        assert (report / f"{name}.html").stat().st_size > 1000, name
    assert "Top trials of 'mnist-tiny'" in result.stdout
    parent = runs_by_role(folder, "mnist-tiny")["study"][0]
    logged = {a.path for a in mlflow_client(folder).list_artifacts(parent.info.run_id, "report")}
    assert {"report/index.html", "report/top_trials.csv"} <= logged


def test_resume_adds_trials_and_a_changed_space_is_refused_unless_forced(tmp_path):
    assert _search(tmp_path, TINY, "--trials", "2", "--no-report").returncode == 0
    # `pipeline report` on a study too small for importances: a note, not a crash.
    report = run_cli("report", cwd=tmp_path)  # the most recent study
    assert report.returncode == 0, report.stderr
    assert re.search(r"parameter importances need at least 4 complete trials; this study has "
                     r"[0-2]\b", report.stdout)
    assert (tmp_path / "reports" / "mnist-tiny" / "optimization_history.html").exists()
    assert_one_line_error(run_cli("report", "--study", "nope", cwd=tmp_path),
                          "no study named 'nope'", "mnist-tiny", code=2)
    resumed = _search(tmp_path, TINY, "--trials", "3")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout
    assert len(optuna_study(tmp_path, "mnist-tiny").trials) == 3
    roles = runs_by_role(tmp_path, "mnist-tiny")
    assert len(roles["study"]) == 1 and len(roles["trial"]) == 3

    changed = TINY.replace("high: 3.0e-2", "high: 5.0e-2")
    refused = _search(tmp_path, changed, "--trials", "4")
    assert_one_line_error(refused, "different search space", "params.lr.high: 0.03 → 0.05",
                          "--force", code=2)
    assert len(optuna_study(tmp_path, "mnist-tiny").trials) == 3

    forced = _search(tmp_path, changed, "--trials", "4", "--force")
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_a_storage_that_is_no_database_url_is_one_line(tmp_path):
    assert_one_line_error(_search(tmp_path, TINY, "--storage", "optuna.db"),
                          "'optuna.db' is not a database URL", "sqlite:///optuna.db", code=2)


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
        # 200,704 features x 5,000,000 units: a 4 TB weight matrix, refused by any allocator.
        too_big: {width: 1024, fc_layers: 1, fc_width: 5000000}
    params:
      case: {type: categorical, choices: [healthy, diverging, too_big]}
""")


def test_a_diverging_trial_is_pruned_and_an_out_of_memory_trial_failed_and_the_study_goes_on(
        tmp_path):
    result = _search(tmp_path, FAULTS, "--trials", "3", name="faults")
    assert result.returncode == 0, result.stderr
    study = optuna_study(tmp_path, "mnist-faults")
    by_case = {t.params["case"]: t for t in study.trials}
    assert by_case["healthy"].state == TrialState.COMPLETE
    assert by_case["diverging"].state == TrialState.PRUNED
    assert "diverged: loss became non-finite" in by_case["diverging"].user_attrs["reason"]
    assert by_case["too_big"].state == TrialState.FAIL
    assert "can't allocate memory" in by_case["too_big"].user_attrs["reason"]
    client = mlflow_client(tmp_path)
    runs = {case: client.get_run(t.user_attrs["mlflow_run_id"]) for case, t in by_case.items()}
    assert runs["healthy"].info.status == "FINISHED"
    assert runs["diverging"].info.status == "KILLED"
    assert "diverged" in runs["diverging"].data.tags["pipeline.reason"]
    assert runs["too_big"].info.status == "FAILED"
    assert runs["too_big"].data.tags["pipeline.state"] == "failed"
    assert "Traceback" not in result.stderr


SLOW = textwrap.dedent("""\
    study:
      sampler: {seed: 0, n_startup_trials: 2}
      pruner: {type: none}
    data: {val_size: 500, train_subset: 6000}
    fixed: {epochs: 4, depth: 1, fc_width: 16, batch_size: 64}
    params:
      width: {type: categorical, choices: [4, 8]}
      lr: {type: float, low: 3.0e-3, high: 3.0e-2, log: true}
""")


def _mid_trial(folder):
    """A trial that is running and has reported at least one epoch."""
    def check():
        try:
            study = optuna_study(folder, "mnist-slow")
        except Exception:  # noqa: BLE001 - the study may not exist yet
            return None
        running = study.get_trials(states=(TrialState.RUNNING,))
        return running[0] if running and running[0].intermediate_values else None
    return check


def _nothing_left_running(folder):
    study = optuna_study(folder, "mnist-slow")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    client = mlflow_client(folder)
    exp = client.get_experiment_by_name("mnist-slow")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    return study


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_search_leaves_nothing_running_and_resumes(tmp_path, signum):
    (tmp_path / "slow.yaml").write_text(SLOW)
    proc = start_cli("search", "--space", "slow.yaml", "--trials", "3", "--no-report",
                     cwd=tmp_path)
    victim = wait_for(_mid_trial(tmp_path), what="a trial in its second epoch")
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("Error:")] == [
        line for line in stderr.splitlines() if "queued to run again" in line]

    study = _nothing_left_running(tmp_path)
    interrupted = study.trials[victim.number]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["interrupted"] is True
    run = mlflow_client(tmp_path).get_run(interrupted.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["pipeline.state"] == "interrupted"
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.params for t in waiting] == [interrupted.params]

    resumed = run_cli("search", "--space", "slow.yaml", "--trials", "3", "--no-report",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    study = _nothing_left_running(tmp_path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == interrupted.params


def test_a_killed_worker_is_reconciled_by_the_next_search(tmp_path):
    (tmp_path / "slow.yaml").write_text(SLOW)
    proc = start_cli("search", "--space", "slow.yaml", "--trials", "2", "--no-report",
                     cwd=tmp_path)
    victim = wait_for(_mid_trial(tmp_path), what="a trial in its second epoch")
    proc.kill()  # SIGKILL: no handler runs, the trial and its run stay RUNNING
    proc.communicate(timeout=60)
    run_id = victim.user_attrs["mlflow_run_id"]
    assert mlflow_client(tmp_path).get_run(run_id).info.status == "RUNNING"

    resumed = run_cli("search", "--space", "slow.yaml", "--trials", "2", "--no-report",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"failed 1 trial(s) left running by a dead worker (#{victim.number})" in resumed.stdout
    study = _nothing_left_running(tmp_path)
    assert study.trials[victim.number].state == TrialState.FAIL
    assert "died" in study.trials[victim.number].user_attrs["reason"]
    run = mlflow_client(tmp_path).get_run(run_id)
    assert run.info.status == "KILLED"
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].params == victim.params
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2


def test_train_end_to_end_prints_progress_and_is_tracked_like_a_trial(tmp_path, mnist):
    config = tmp_path / "small.yaml"
    # YAML 1.1 reads 3e-3 as a string; the loader accepts it as the number it plainly is.
    config.write_text("depth: 2\nwidth: 8\nfc_width: 32\nlr: 3e-3\nepochs: 2\n"
                      "train_subset: 3000\nval_size: 500\nchannels_last: off\n")
    result = run_cli("train", "--config", str(config), "--rotation", "10", "--fc-width", "64",
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
    assert run.info.status == "FINISHED"
    assert run.data.params["fc_width"] == "64" and run.data.params["rotation"] == "10"
    assert "parameter_count" in run.data.params
    assert "test_accuracy" in run.data.metrics
    client = mlflow_client(tmp_path)
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    assert "confusion_matrix.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list")
    assert [m.source_run_id for m in models] == [run.info.run_id]
