"""One trial from sampled parameters to its closed run, on an in-memory Optuna study, a real
MLflow store and a few hundred synthetic images: each way a trial ends is written to the trial
and its run as the outcome table says, in well under a second of training."""

from __future__ import annotations

import dataclasses
import textwrap
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState

from pipeline.core import outcomes
from pipeline.core.progress import SearchProgress
from pipeline.core.timings import PHASES
from pipeline.data.splits import DataSplits, Split
from pipeline.search.request import SearchRequest
from pipeline.search.trial import TAKEN_OVER, StudyRuns, TrialResult, TrialRunner
from pipeline.study.space import load_space
from pipeline.track.runs import Tracker

SPACE = textwrap.dedent("""\
    study: {pruner: {type: median, n_startup_trials: 0}}
    data: {val_size: 64, train_subset: 256}
    fixed: {epochs: 2, depth: 1, width: 4, fc_width: 16, batch_size: 64, channels_last: "off"}
    params:
      lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
""")
DIVERGING = SPACE.replace('channels_last: "off"}', 'channels_last: "off", batch_norm: false, '
                          'optimizer: sgd, momentum: 0.0, schedule: constant}').replace(
    "low: 1.0e-3, high: 1.0e-2", "low: 1.0e+6, high: 2.0e+6")


def _images(n: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator),
                 torch.randint(0, 10, (n,), generator=generator))


DATA = DataSplits(_images(256, 0), _images(64, 1), "synthetic", 64, 0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> StudyRuns:
    """A real MLflow store for the module (making one costs seconds) and a parent run."""
    tracker = Tracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    experiment = tracker.experiment("runner")
    return StudyRuns(tracker, experiment, tracker.start_run(experiment, "study").run_id)


def _run_one(tmp_path, runs, space_text, *, pruner=None, should_stop=None, claimed_before=0.0):
    (tmp_path / "space.yaml").write_text(space_text)
    space = load_space(tmp_path / "space.yaml")
    req = SearchRequest(space=space, trials=1, study_name="runner", storage_url="memory",
                        tracking_uri=runs.tracker.uri, seed=0, device="cpu")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    time.sleep(claimed_before)  # the claim's own writes, before the runner gets the trial
    runner = TrialRunner(req, DATA, runs, SearchProgress(1, 0, space.metric, enabled=False),
                         should_stop)
    try:
        result = runner(trial)
    finally:
        frozen = study.trials[0]
    return result, frozen, runs.tracker.client.get_run(frozen.user_attrs["mlflow_run_id"])


def _written_as(outcome: outcomes.Outcome, trial, run) -> None:
    assert trial.user_attrs["outcome"] == outcome.name
    assert run.info.status == outcome.run_status
    assert run.data.tags["pipeline.state"] == outcome.name
    assert list(trial.user_attrs["seconds"]) == list(PHASES)


def test_a_trial_the_pruner_stops_is_pruned_on_its_trial_and_run(tmp_path, runs):
    always = optuna.pruners.ThresholdPruner(lower=2.0)  # no accuracy reaches 2
    result, trial, run = _run_one(tmp_path, runs, SPACE, pruner=always)
    assert result == dataclasses.replace(result, outcome=outcomes.PRUNED, value=None)
    _written_as(outcomes.PRUNED, trial, run)
    assert trial.user_attrs["pruned_epoch"] == 1 == trial.user_attrs["epochs_trained"]
    assert trial.user_attrs["reason"].startswith("pruned after epoch 1: val_accuracy ")
    assert run.data.tags["pipeline.pruned_epoch"] == "1"
    assert "model_uri" not in trial.user_attrs


def test_the_time_from_the_claim_to_the_runner_is_optunas_and_in_the_trials_breakdown(
        tmp_path, runs):
    """A trial's time in the study starts when it is claimed (created, named, its first
    heartbeat), before the runner has it: the phases count that time as Optuna's."""
    always = optuna.pruners.ThresholdPruner(lower=2.0)
    _, trial, _ = _run_one(tmp_path, runs, SPACE, pruner=always, claimed_before=0.3)
    seconds = trial.user_attrs["seconds"]
    assert seconds["optuna"] >= 0.3
    assert sum(seconds.values()) >= 0.3 + seconds["train"]


def test_the_batch_of_a_trials_phases_is_in_its_breakdown_as_mlflow_time(tmp_path, runs,
                                                                         monkeypatch):
    """The phases go to the run as one batch just before it closes; that write's time is the
    tracking store's, whatever a busy machine makes it take, and not time no phase measured."""
    from mlflow import MlflowClient

    write = MlflowClient.log_batch

    def slow_for_the_phases(self, run_id, metrics=(), **kwargs):
        if any(m.key == "overhead_seconds" for m in metrics):
            time.sleep(0.3)
        return write(self, run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", slow_for_the_phases)
    always = optuna.pruners.ThresholdPruner(lower=2.0)
    _, trial, _ = _run_one(tmp_path, runs, SPACE, pruner=always)
    seconds = trial.user_attrs["seconds"]
    assert seconds["mlflow_metrics"] >= 0.3
    assert seconds["other"] < 0.3, seconds


def test_a_trial_that_trains_to_the_end_records_its_value_and_model(tmp_path, runs):
    result, trial, run = _run_one(tmp_path, runs, SPACE)
    assert result.outcome is outcomes.COMPLETE
    _written_as(outcomes.COMPLETE, trial, run)
    assert result.value == trial.user_attrs["val_accuracy"] == run.data.metrics["val_accuracy"]
    assert trial.user_attrs["model_uri"].startswith("models:/m-")
    assert trial.user_attrs["epochs_trained"] == 2
    assert run.data.params["lr"] == f"{trial.params['lr']:.6g}"


def test_a_diverging_trial_is_recorded_diverged_not_failed(tmp_path, runs):
    result, trial, run = _run_one(tmp_path, runs, DIVERGING)
    assert result.outcome is outcomes.DIVERGED and result.value is None
    _written_as(outcomes.DIVERGED, trial, run)
    assert trial.user_attrs["reason"].startswith("diverged: loss became non-finite in epoch 1")
    assert trial.user_attrs["pruned_epoch"] == 1


def test_a_stop_request_interrupts_the_trial_records_it_and_raises(tmp_path, runs):
    with pytest.raises(KeyboardInterrupt):
        _run_one(tmp_path, runs, SPACE, should_stop=lambda: True)
    (run,) = runs.tracker.client.search_runs(
        [runs.experiment_id], "tags.`pipeline.state` = 'interrupted'")
    assert run.info.status == outcomes.INTERRUPTED.run_status
    assert run.data.tags["pipeline.reason"].startswith("interrupted (Ctrl-C or SIGTERM)")


def _constrained(params_max: int) -> str:
    return SPACE + f"constraints: {{params: {{max: {params_max}}}, latency_ms: {{max: 1000}}}}\n"


def test_a_network_over_the_spaces_constraints_is_pruned_before_it_trains(tmp_path, runs):
    result, trial, run = _run_one(tmp_path, runs, _constrained(1000))
    assert result.outcome is outcomes.PRUNED
    _written_as(outcomes.PRUNED, trial, run)
    params = trial.user_attrs["cost"]["params"]
    assert params > 1000
    assert trial.user_attrs["reason"] == (f"pruned before training: over the space's constraints "
                                          f"(params {params:,} > 1,000)")
    # Optuna's constraint API: positive is infeasible, as the sampler reads it.
    assert trial.constraints == {"params": params - 1000,
                                 "latency_ms": pytest.approx(
                                     trial.user_attrs["cost"]["latency_ms"] - 1000)}
    assert trial.user_attrs["seconds"]["train"] == 0 and "epoch" not in str(
        trial.intermediate_values)
    assert run.data.metrics["cost_params"] == params


def test_a_network_within_the_constraints_trains_and_records_them(tmp_path, runs):
    result, trial, _ = _run_one(tmp_path, runs, _constrained(10**6))
    assert result.outcome is outcomes.COMPLETE
    assert all(value <= 0 for value in trial.constraints.values())
    assert set(trial.constraints) == {"params", "latency_ms"}


@pytest.mark.parametrize("after_epoch", [1, 2], ids=["mid-training", "before-recording"])
def test_a_trial_failed_under_its_worker_is_discarded_not_recorded_twice(
        tmp_path, runs, after_epoch):
    """Another process judged the worker dead (a heartbeat that looked stale) and failed the
    trial while it trained: the worker writes nothing more to the finished trial, closes its run
    as the trial ended, and returns without asking for a second retry (the judge queued one)."""
    (tmp_path / "space.yaml").write_text(SPACE)
    space = load_space(tmp_path / "space.yaml")
    req = SearchRequest(space=space, trials=1, study_name="runner", storage_url="memory",
                        tracking_uri=runs.tracker.uri, seed=0, device="cpu")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    epochs = iter(range(1, 10))
    lines = []

    def judged_dead_elsewhere() -> bool:
        if next(epochs) == after_epoch:
            study._storage.set_trial_user_attr(trial._trial_id, "outcome", "dead-worker")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return False

    progress = SearchProgress(1, 0, space.metric, enabled=False, echo=lines.append)
    result = TrialRunner(req, DATA, runs, progress, judged_dead_elsewhere)(trial)
    assert result == TrialResult(outcomes.DEAD_WORKER, None, taken_over=True)
    (frozen,) = study.trials
    assert frozen.state == TrialState.FAIL and "model_uri" not in frozen.user_attrs
    run = runs.tracker.client.get_run(frozen.user_attrs["mlflow_run_id"])
    assert run.info.status == outcomes.DEAD_WORKER.run_status
    assert run.data.tags["pipeline.state"] == "dead-worker"
    assert run.data.tags["pipeline.reason"] == TAKEN_OVER
    assert lines == [f"trial 0: {TAKEN_OVER}"]


def test_ctrl_c_in_a_trial_failed_under_its_worker_still_stops_the_search(tmp_path, runs):
    (tmp_path / "space.yaml").write_text(SPACE)
    space = load_space(tmp_path / "space.yaml")
    req = SearchRequest(space=space, trials=1, study_name="runner", storage_url="memory",
                        tracking_uri=runs.tracker.uri, seed=0, device="cpu")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()

    def judged_dead_then_stopped() -> bool:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return True  # Ctrl-C, as a stop request

    progress = SearchProgress(1, 0, space.metric, enabled=False, echo=lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        TrialRunner(req, DATA, runs, progress, judged_dead_then_stopped)(trial)
    run = runs.tracker.client.get_run(study.trials[0].user_attrs["mlflow_run_id"])
    assert run.data.tags["pipeline.reason"] == TAKEN_OVER
