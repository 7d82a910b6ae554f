"""The bridge between training and MLflow: experiments, runs, their params, metrics and tags, and
closing them with the status of how they ended.

The project owns this bridge (``optuna_integration.MLflowCallback`` is deprecated and gets trial and
run lifecycles wrong): one experiment per study, one parent run per study, one nested child run
per trial opened when the trial starts and closed with a status that matches the trial's outcome
(core.outcomes). Tag names are in core.keys. Every call names its run id through an
``MlflowClient``, so nothing depends on MLflow's per-thread "active run". What a trained network
leaves in its run (pictures, the model) is in track.artifacts.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib.metadata import version
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

import pipeline
from pipeline.core.errors import PipelineError, first_line
from pipeline.core.faults import TRACKING, fault_of
from pipeline.core.outcomes import Outcome
from pipeline.core.stores import tracking_store_exists
from pipeline.core.timings import Stopwatch

if TYPE_CHECKING:
    from pipeline.train.trainer import EpochStats

# MLflow 3's UI opens an experiment in its GenAI view unless told this kind; ours train models.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


class TrackingError(PipelineError):
    """The MLflow tracking store cannot be reached or used."""


def library_versions() -> dict[str, str]:
    # Optuna's version as installed: this stage records which Optuna ran, and never imports it.
    return {"pipeline_version": pipeline.__version__, "torch_version": torch.__version__,
            "optuna_version": version("optuna"), "mlflow_version": mlflow.__version__,
            "python_version": platform.python_version()}


def ensure_reachable(tracking_uri: str | None = None, timeout: float = 5.0) -> None:
    """Fail at once, in one line, when a tracking server does not answer: MLflow's own client
    retries with back-off for minutes before it gives up."""
    uri = tracking_uri or mlflow.get_tracking_uri()
    if urlparse(uri).scheme not in ("http", "https"):
        return  # a local store: nothing to reach
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except requests.RequestException as e:
        raise TrackingError(f"the MLflow tracking server at {uri} is unreachable "
                            f"({type(e).__name__}); start the server or fix "
                            "MLFLOW_TRACKING_URI") from None


class Tracker:
    """One tracking store (``MLFLOW_TRACKING_URI``, else MLflow's default in the working folder)."""

    def __init__(self, tracking_uri: str | None = None, *,
                 wait: Callable[[BaseException], bool] | None = None) -> None:
        self.uri = tracking_uri or mlflow.get_tracking_uri()
        ensure_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        # Rides out an outage of the server (a search's waiter): True when it is back and the
        # call can be tried again. Without one, an unreachable server is an error at once.
        self.wait = wait

    def experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        """The id of experiment ``name``, created (or restored from the bin) if needed."""
        tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **(tags or {})}
        try:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                return self.client.create_experiment(name, tags=tags)
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            if EXPERIMENT_KIND_TAG not in found.tags:
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                               EXPERIMENT_KIND)
            return found.experiment_id
        except Exception as e:  # noqa: BLE001 - connection errors come in many types
            raise TrackingError(f"cannot use the MLflow tracking store at {self.uri}: "
                                f"{first_line(e)}; check MLFLOW_TRACKING_URI") from None

    def start_run(self, experiment_id: str, name: str, *, parent_run_id: str | None = None,
                  tags: dict[str, str] | None = None) -> RunLog:
        # A tracking server takes strings only (a database store would convert).
        all_tags = {MLFLOW_RUN_NAME: name, **{k: str(v) for k, v in (tags or {}).items()}}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(experiment_id, run_name=name, tags=all_tags)
        return RunLog(self.client, run.info.run_id, experiment_id, wait=self.wait)

    def resume_run(self, run_id: str) -> RunLog | None:
        """Reopen a run (a resumed study's parent); None if it no longer exists."""
        try:
            run = self.client.get_run(run_id)
        except Exception:  # noqa: BLE001 - a missing run raises MlflowException
            return None
        if run.info.lifecycle_stage == "deleted":
            return None
        self.client.update_run(run_id, status="RUNNING")
        return RunLog(self.client, run_id, run.info.experiment_id, wait=self.wait)


def existing_tracker() -> Tracker | None:
    """The configured tracking store for a command that only reads; None where it is a SQLite
    file that is not there (opening it would create an empty one)."""
    uri = mlflow.get_tracking_uri()
    return Tracker(uri) if tracking_store_exists(uri) else None


class RunLog:
    """Everything logged to one run, one batch per call.

    Per-epoch metrics are sent synchronously: one batch costs ~10 ms on SQLite, while MLflow's
    asynchronous queue made closing the run wait 0.13-0.64 s for the last batch (measured here,
    bench/search_costs.py), more than all of a trial's batches cost sent one by one.

    With a ``wait`` (a search), a batch that meets an unreachable tracking server is held, the
    training goes on, and the held batches are sent in order once the server answers; what
    cannot wait (the trained network's pictures and model, closing the run) first waits for the
    server and sends them (settle)."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str, *,
                 wait: Callable[[BaseException], bool] | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.watch = Stopwatch()  # seconds in MLflow calls, by phase (core.timings)
        self.wait = wait
        self.held: list[tuple[Callable, tuple, dict]] = []  # calls that met an outage, in order
        self._next_try = 0.0
        self._last_fault: BaseException | None = None

    def _timed(self, phase: str, fn, *args, **kwargs) -> None:
        with self.watch(phase):
            if self.held:  # the server was down: keep the order
                self.held.append((fn, args, kwargs))
                self._send_held()
                return
            try:
                fn(*args, **kwargs)
            except Exception as e:
                if not self._hold(e):
                    raise
                self.held.append((fn, args, kwargs))

    def _hold(self, error: BaseException) -> bool:
        """Whether a failed call can wait: the server is unreachable and a search waits for
        it."""
        fault = fault_of(error)
        if self.wait is None or fault is None or fault.kind != TRACKING:
            return False
        self._last_fault = error
        self._next_try = time.monotonic() + HELD_RETRY_SECONDS
        return True

    def _send_held(self, *, now: bool = False) -> bool:
        """Send the held calls in order (at most every HELD_RETRY_SECONDS unless ``now``);
        whether none is left."""
        if not now and time.monotonic() < self._next_try:
            return not self.held
        while self.held:
            fn, args, kwargs = self.held[0]
            try:
                fn(*args, **kwargs)
            except Exception as e:
                if not self._hold(e):
                    raise
                return False
            self.held.pop(0)
        return True

    def settle(self) -> None:
        """Before what cannot wait: until the server answers (the search says it waits, and
        stops past its --outage-timeout), then every held call sent."""
        while not self._send_held(now=True):
            if not self.wait(self._last_fault):
                raise self._last_fault

    def retrying(self, call: Callable[[], Any]) -> Any:
        """``call()`` after settling, again each time the server comes back from an outage that
        cut it short: a trained network's pictures and model are not thrown away for a server
        that went away for a while."""
        while True:
            self.settle()
            try:
                return call()
            except Exception as e:
                if not self._hold(e) or not self.wait(e):
                    raise

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._timed("mlflow_params", self.client.log_batch, self.run_id,
                        params=items[start:start + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._timed("mlflow_params", self.client.log_batch, self.run_id,
                    tags=_run_tags(tags))

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._timed("mlflow_metrics", self.client.log_batch, self.run_id, metrics=batch)

    def log_epoch(self, stats: EpochStats) -> None:
        """One batch per epoch."""
        values = asdict(stats)
        epoch = values.pop("epoch")
        values["epoch_seconds"] = values.pop("seconds")
        self.log_metrics(values, step=epoch)

    def close(self, outcome: Outcome, reason: str = "",
              pruned_epoch: int | None = None) -> None:
        """Close the run with the status and tags of ``outcome`` (core.outcomes)."""
        self.finish(outcome.run_status, outcome.tags(reason, pruned_epoch))

    def finish(self, status: str, tags: dict[str, Any] | None = None) -> None:
        """Tag the outcome and close the run."""
        def close() -> None:
            if tags:
                self.client.log_batch(self.run_id, tags=_run_tags(tags))
            self.client.set_terminated(self.run_id, status)

        with self.watch("mlflow_close"):
            if self.wait is None:
                close()
            else:
                self.retrying(close)


def _param_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# While the server is down, held calls are tried again at most this often.
HELD_RETRY_SECONDS = 10.0
# MLflow stores a tag value of at most 5,000 characters (a reason can be a long error message).
TAG_VALUE_LIMIT = 5000


def _run_tags(tags: dict[str, Any]) -> list[RunTag]:
    return [RunTag(k, str(v)[:TAG_VALUE_LIMIT]) for k, v in tags.items()]
