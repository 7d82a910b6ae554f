"""The outcome table: every way a trial ends writes one Optuna state, one MLflow status, one tag.

Each row is exercised on a real SQLite study and a real MLflow store, both as the process that
ran the trial closes it and as reconcile closes a run its worker left RUNNING.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import optuna
import pytest
import requests
import sqlalchemy
import torch
from mlflow.exceptions import MlflowException
from optuna.trial import TrialState, create_trial

from pipeline.core import outcomes
from pipeline.core.errors import NonFiniteLossError
from pipeline.core.keys import (
    ATTR_OUTCOME,
    ATTR_REASON,
    ATTR_RUN_ID,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL,
)
from pipeline.core.outcomes import outcome_of, reason_for
from pipeline.search.orphans import reconcile
from pipeline.track.runs import Tracker


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


ROWS = {  # outcome: (Optuna state, MLflow status), as users are told (docs: how a trial ends)
    outcomes.COMPLETE: ("COMPLETE", "FINISHED"),
    outcomes.PRUNED: ("PRUNED", "KILLED"),
    outcomes.DIVERGED: ("PRUNED", "KILLED"),
    outcomes.FAILED: ("FAIL", "FAILED"),
    outcomes.OUT_OF_MEMORY: ("FAIL", "FAILED"),
    outcomes.INTERRUPTED: ("FAIL", "KILLED"),
    outcomes.DEAD_WORKER: ("FAIL", "KILLED"),
    outcomes.INFRASTRUCTURE: ("FAIL", "KILLED"),
    outcomes.DISK_FULL: ("FAIL", "FAILED"),
}


def test_the_table_has_every_trial_outcome_once():
    assert set(outcomes.TRIAL_OUTCOMES) == set(ROWS)
    assert len({o.name for o in outcomes.TRIAL_OUTCOMES}) == len(outcomes.TRIAL_OUTCOMES)
    for outcome, (state, status) in ROWS.items():
        assert (outcome.trial_state, outcome.run_status) == (state, status), outcome.name
    assert {o for o in ROWS if o.requeue} == {outcomes.INTERRUPTED, outcomes.DEAD_WORKER,
                                              outcomes.INFRASTRUCTURE, outcomes.DISK_FULL}


@pytest.mark.parametrize("error, outcome, reason", [
    (None, outcomes.COMPLETE, ""),
    (optuna.TrialPruned("pruned after epoch 2: ..."), outcomes.PRUNED, "pruned after epoch 2"),
    (NonFiniteLossError(1, 10.0), outcomes.DIVERGED, "diverged: loss became non-finite"),
    (KeyboardInterrupt(), outcomes.INTERRUPTED, "interrupted (Ctrl-C or SIGTERM)"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     outcomes.OUT_OF_MEMORY, "out of memory: OutOfMemoryError: CUDA out of memory"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory"), outcomes.OUT_OF_MEMORY,
     "out of memory: RuntimeError"),
    (MemoryError(), outcomes.OUT_OF_MEMORY, "out of memory: MemoryError"),
    (ValueError("bad shape"), outcomes.FAILED, "ValueError: bad shape"),
    (MlflowException("API request to http://mlflow:5000/api/2.0/mlflow/runs/log-batch failed "
                     "with exception HTTPConnectionPool(...): Max retries exceeded"),
     outcomes.INFRASTRUCTURE, "infrastructure fault: MlflowException: API request to"),
    (requests.ConnectionError("Connection refused"), outcomes.INFRASTRUCTURE,
     "infrastructure fault: ConnectionError"),
    (_raised_from(optuna.exceptions.StorageInternalError("An exception is raised during the "
                                                         "commit."),
                  sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionResetError())),
     outcomes.INFRASTRUCTURE, "infrastructure fault: StorageInternalError"),
    (OSError(errno.ENOSPC, "No space left on device"), outcomes.DISK_FULL,
     "disk full: OSError: [Errno 28] No space left on device"),
    (sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database is locked")),
     outcomes.FAILED, "OperationalError"),  # contention on a SQLite file, not an outage
    (MlflowException("RESOURCE_DOES_NOT_EXIST: Run 'x' not found"), outcomes.FAILED,
     "MlflowException"),
])
def test_how_a_run_ended_picks_its_outcome_and_reason(error, outcome, reason):
    assert outcome_of(error) is outcome
    assert reason_for(outcome, error).startswith(reason)


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    """One real MLflow store for the module (setting one up costs seconds)."""
    return Tracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")


@pytest.fixture
def store(tracker, request):
    """The store, with an experiment of this test's own."""
    return tracker, tracker.experiment(request.node.name)


@pytest.mark.parametrize("outcome", list(ROWS), ids=lambda o: o.name)
def test_closing_a_run_writes_the_rows_status_and_tags(store, outcome):
    tracker, experiment = store
    run = tracker.start_run(experiment, "trial-0000")
    run.close(outcome, reason_for(outcome, None) or "why", pruned_epoch=2)
    closed = tracker.client.get_run(run.run_id)
    assert closed.info.status == ROWS[outcome][1]
    assert closed.data.tags["pipeline.state"] == outcome.name
    assert closed.data.tags["pipeline.pruned_epoch"] == "2"


def test_reconcile_closes_each_orphaned_run_by_its_trials_outcome(tmp_path, store):
    """Runs left RUNNING (their worker died between closing the trial and its run, or before)
    are closed as the trial's recorded outcome says; a failed trial's run is FAILED, not KILLED,
    and a trial that recorded nothing was failed from outside: its worker died."""
    tracker, experiment = store
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db",
                                direction="maximize")
    distribution = optuna.distributions.FloatDistribution(0.0, 1.0)
    cases = {}  # trial number: expected outcome
    finished = [(o, o) for o in ROWS if o is not outcomes.DEAD_WORKER]
    finished.append((None, outcomes.DEAD_WORKER))  # failed without a recorded outcome
    for number, (recorded, expected) in enumerate(finished):
        state = TrialState[(recorded or outcomes.DEAD_WORKER).trial_state]
        run = tracker.start_run(experiment, f"trial-{number:04d}", tags={
            TAG_ROLE: "trial", TAG_STUDY: "s", TAG_TRIAL: number})
        attrs = {ATTR_RUN_ID: run.run_id, ATTR_REASON: f"reason {number}"}
        if recorded is not None:
            attrs[ATTR_OUTCOME] = recorded.name
        study.add_trial(create_trial(
            state=state, value=0.5 if state == TrialState.COMPLETE else None,
            intermediate_values={1: 0.5} if state == TrialState.PRUNED else None,
            params={"x": 0.5}, distributions={"x": distribution}, user_attrs=attrs))
        cases[run.run_id] = expected
    # A run of an earlier attempt at a number whose trial now names another run: orphaned.
    stale = tracker.start_run(experiment, "trial-0000",
                              tags={TAG_ROLE: "trial", TAG_STUDY: "s", TAG_TRIAL: 0})
    cases[stale.run_id] = outcomes.DEAD_WORKER

    result = reconcile(study, tracker, experiment)
    assert sorted(result.closed_runs) == sorted(cases)
    for run_id, expected in cases.items():
        run = tracker.client.get_run(run_id)
        assert run.info.status == expected.run_status, expected.name
        assert run.data.tags["pipeline.state"] == expected.name


PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"


def test_every_outcome_to_status_decision_is_in_the_outcome_table():
    """No module but outcomes.py spells a run status it writes, or the state tag."""
    for path in PIPELINE.rglob("*.py"):
        if path.name == "outcomes.py":
            continue
        text = path.read_text()
        assert not re.search(r'"(KILLED|FAILED)"', text), path.name
        if path.name != "registry.py":  # reads a run's status: only FINISHED runs are promoted
            assert '"FINISHED"' not in text, path.name
        assert "TAG_STATE" not in text or path.name == "keys.py", path.name
