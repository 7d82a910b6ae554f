"""The search's waiting on its stores, without a server: a store that is down is waited for and
said once; a store that answers while a request keeps failing is not waited for without end."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from pipeline.core.faults import TRACKING
from pipeline.search import outage
from pipeline.search.outage import Store, StoreFailing, Waiter, stop_if_failing


def _failed(path: str) -> MlflowException:
    return MlflowException(f"API request to http://tracking:5000{path} failed with exception "
                           "ConnectionResetError(104, 'Connection reset by peer')")


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    monkeypatch.setattr(outage, "FIRST_PAUSE", 0.0)


def test_a_request_that_fails_while_the_store_answers_is_tried_a_few_times_then_let_fail():
    said = []
    waiter = Waiter([Store(TRACKING, "MLflow tracking server", lambda: None)], echo=said.append)
    upload = _failed("/api/2.0/mlflow-artifacts/artifacts/1/run/model.pt2")
    assert [waiter.ride_out(upload) for _ in range(4)] == [True, True, True, False]
    assert waiter.refusing == "MLflow tracking server"  # what the search names when it stops
    assert waiter.ride_out(_failed("/api/2.0/mlflow/runs/log-batch"))  # another request: its own
    assert said == []  # nothing was down: nothing to say


def test_a_store_that_is_down_is_said_once_waited_for_and_said_back():
    said, answers = [], iter([False, False, True])

    def probe() -> None:
        if not next(answers):
            raise ConnectionRefusedError("connection refused")

    waiter = Waiter([Store(TRACKING, "MLflow tracking server http://t", probe)],
                    echo=said.append)
    assert waiter.ride_out(_failed("/api/2.0/mlflow/runs/log-batch"))
    assert len(said) == 2
    assert said[0].startswith("MLflow tracking server http://t unreachable since ")
    assert said[1].startswith("MLflow tracking server http://t is back after ")


def test_an_error_no_store_explains_is_not_waited_for():
    waiter = Waiter([Store(TRACKING, "MLflow tracking server", lambda: None)])
    assert not waiter.ride_out(ValueError("bad hyperparameters"))


def test_trials_failing_on_an_answering_store_stop_the_search_at_the_third_in_a_row():
    stop_if_failing(["MLflow tracking server http://t"], 2, "reset")
    with pytest.raises(StoreFailing, match="3 trials in a row failed on MLflow tracking server "
                                           "http://t, which answers but refuses") as stopped:
        stop_if_failing(["MLflow tracking server http://t"], 3, "reset")
    assert stopped.value.exit_code == 75
