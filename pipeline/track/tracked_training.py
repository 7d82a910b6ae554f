"""One configuration trained while an MLflow run records it: the path every search trial and
`pipeline train` take.

Params (hyperparameters, the execution plan, parameter count, data checksum, library versions),
what the network costs to run (train.cost, before it trains), per-epoch metrics, and after the
last epoch the validation confusion matrix, per-class accuracy, a picture of the mistakes and the
model. With no run, it trains and records nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from pipeline.core.hparams import RunConfig
from pipeline.core.timings import Stopwatch
from pipeline.data.splits import DataSplits
from pipeline.track.artifacts import log_diagnostics, log_model
from pipeline.track.runs import RunLog, library_versions
from pipeline.train.cost import Cost, measure_cost
from pipeline.train.diagnostics import diagnose
from pipeline.train.model import build_model, parameter_count
from pipeline.train.plan import ExecutionPlan, plan_execution
from pipeline.train.trainer import ONCE_AN_EPOCH, FitResult, Hooks, Reporting, fit


@dataclass
class TrainingJob:
    """One configuration to train and record."""

    config: RunConfig
    data: DataSplits  # on the CPU: the diagnostics and the model's input example read it
    # The same splits already on the training device (a search moves them there once).
    device_data: DataSplits | None = None
    model: nn.Module | None = None  # the configuration's model, if already built (plan_for)
    params: dict[str, Any] = field(default_factory=dict)  # logged beside the configuration's
    label: str = ""  # heads the confusion matrix before its accuracy, e.g. "trial 7: "
    # Told what the network costs to run (train.cost) once it is built, before it trains; may
    # raise to stop it there (a search stops a network over its space's constraints).
    on_cost: Callable[[Cost], None] | None = None


@dataclass
class TrackedFit:
    result: FitResult
    model: nn.Module
    model_uri: str | None  # None when nothing was tracked
    seconds: float  # training and evaluation, all epochs
    cost: Cost | None = None  # measured before it trained, when tracked


def plan_for(config: RunConfig) -> tuple[nn.Module, ExecutionPlan]:
    """The seeded model of ``config`` and where and how it will train."""
    model = build_model(config.model, seed=config.train.seed)
    return model, plan_execution(model, config.train)


def tracked_fit(run: RunLog | None, job: TrainingJob, hooks: Hooks | None = None, *,
                reporting: Reporting = ONCE_AN_EPOCH,
                watch: Stopwatch | None = None) -> TrackedFit:
    """Train ``job`` recording into ``run``: its params, an epoch's metrics as it ends, then
    what the trained network leaves (diagnostics, the model).

    Exceptions (a pruned or diverged trial, Ctrl-C, a failure) propagate: the caller decides the
    outcome and closes the run (core.outcomes). ``watch`` gets the seconds of building, set-up,
    training and evaluation (core.timings); the run's own watch has its MLflow calls.
    """
    watch = watch if watch is not None else Stopwatch()
    with watch("build"):
        config = job.config
        model = job.model or build_model(config.model, seed=config.train.seed)
        plan = plan_execution(model, config.train)
    cost = None
    if run is not None:
        run.log_params({**config.flat(), **job.params, "data_checksum": job.data.checksum,
                        "parameter_count": parameter_count(model), **plan.params(),
                        **library_versions()})
        # What it costs to run depends on the network, not on its training: measured first, so
        # that a network over a search's limits need not train at all.
        with watch("cost"):
            cost = measure_cost(model)
        run.log_metrics(cost.metrics())
        if job.on_cost is not None:
            job.on_cost(cost)
    result, seconds = _train(model, job, _TimedHooks(hooks or Hooks(), run), reporting, watch)
    model_uri = _record_the_trained_network(run, job, model, result) if run else None
    return TrackedFit(result, model, model_uri, seconds, cost)


class _TimedHooks:
    """The hooks fit calls, each epoch's metrics logged first, and the seconds they all take:
    their owners time what they do (MLflow, Optuna), so what fit spends outside its steps and
    these is set-up."""

    def __init__(self, hooks: Hooks, run: RunLog | None) -> None:
        self.inner, self.run, self.seconds = hooks, run, 0.0
        on_report = self._timed(hooks.on_report) if hooks.on_report is not None else None
        self.hooks = Hooks(on_epoch_end=self._timed(self._epoch_end), on_report=on_report,
                           on_step=hooks.on_step, step_every=hooks.step_every)

    def _epoch_end(self, stats) -> None:
        if self.run is not None:
            self.run.log_epoch(stats)
        if self.inner.on_epoch_end is not None:
            self.inner.on_epoch_end(stats)

    def _timed(self, hook: Callable) -> Callable:
        def call(argument) -> None:
            start = time.perf_counter()
            try:
                hook(argument)
            finally:
                self.seconds += time.perf_counter() - start
        return call


def _train(model: nn.Module, job: TrainingJob, timed: _TimedHooks, reporting: Reporting,
           watch: Stopwatch) -> tuple[FitResult, float]:
    """Fit, and count as set-up what was neither steps, validation nor hooks."""
    start = time.perf_counter()
    work_before = watch.seconds["train"] + watch.seconds["evaluate"]
    try:
        result = fit(model, job.device_data or job.data, job.config.train, timed.hooks,
                     reporting=reporting, watch=watch)
    finally:  # a pruned trial's set-up counts too
        seconds = time.perf_counter() - start
        work = watch.seconds["train"] + watch.seconds["evaluate"] - work_before
        watch.add("setup", max(0.0, seconds - work - timed.seconds))
    return result, seconds


def _record_the_trained_network(run: RunLog, job: TrainingJob, model: nn.Module,
                                result: FitResult) -> str:
    """The validation confusion matrix, per-digit accuracy and mistakes, then the model; in a
    search, once the tracking server answers (the trained network is not thrown away for a
    server that went away for a while)."""
    val, predictions = job.data.val, result.val_predictions
    with run.watch("mlflow_artifacts"):  # what the artifacts show is part of their cost
        diagnosis = diagnose(val.labels, predictions)
    title = f"{job.label}validation accuracy {result.final.val_accuracy:.2%}"

    def record() -> str:
        log_diagnostics(run, diagnosis, val.images, val.labels, predictions, title=title)
        return log_model(run, model, job.config.model, val.images)

    return record() if run.wait is None else run.retrying(record)
