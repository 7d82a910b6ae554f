"""One configuration trained while an MLflow run records it: the path every search trial and
`pipeline train` take.

Params (hyperparameters, the execution plan, parameter count, data checksum, library versions),
per-epoch metrics, and after the last epoch the validation confusion matrix, per-class accuracy,
a picture of the mistakes and the model. With no run, it trains and records nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from pipeline.core.hparams import RunConfig
from pipeline.core.timings import Stopwatch
from pipeline.data.splits import DataSplits
from pipeline.track.artifacts import log_diagnostics, log_model
from pipeline.track.runs import RunLog, library_versions
from pipeline.train.diagnostics import diagnose
from pipeline.train.model import build_model, parameter_count
from pipeline.train.plan import ExecutionPlan, plan_execution
from pipeline.train.trainer import EpochStats, FitResult, Report, fit


@dataclass
class TrackedFit:
    result: FitResult
    model: nn.Module
    model_uri: str | None  # None when nothing was tracked
    seconds: float  # training and evaluation, all epochs


def plan_for(config: RunConfig) -> tuple[nn.Module, ExecutionPlan]:
    """The seeded model of ``config`` and where and how it will train."""
    model = build_model(config.model, seed=config.train.seed)
    return model, plan_execution(model, config.train)


def tracked_fit(
    run: RunLog | None,
    config: RunConfig,
    data: DataSplits,
    *,
    device_data: DataSplits | None = None,
    model: nn.Module | None = None,
    params: dict[str, Any] | None = None,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_report: Callable[[Report], None] | None = None,
    reports_per_epoch: int = 1,
    inside_val_size: int | None = None,
    title: str = "validation accuracy {accuracy:.2%}",
    watch: Stopwatch | None = None,
) -> TrackedFit:
    """Train ``config`` on ``data`` (``device_data``: the same splits already on the training
    device), recording into ``run``. ``model``: the configuration's model if already built
    (plan_for). ``params`` are logged beside the configuration's; ``title`` heads the confusion
    matrix (``{accuracy}`` is the final validation accuracy).

    Exceptions (a pruned or diverged trial, Ctrl-C, a failure) propagate: the caller decides the
    outcome and closes the run (outcomes.py). ``on_report``, ``reports_per_epoch`` and
    ``inside_val_size`` go to fit (the pruner's reports). ``watch`` gets the seconds of
    building, set-up, training and evaluation (timings.py); the run's own watch has its MLflow
    calls.
    """
    watch = watch if watch is not None else Stopwatch()
    with watch("build"):
        if model is None:
            model, plan = plan_for(config)
        else:
            plan = plan_execution(model, config.train)
    if run is not None:
        run.log_params({**config.flat(), **(params or {}), "data_checksum": data.checksum,
                        "parameter_count": parameter_count(model), **plan.params(),
                        **library_versions()})

    in_callbacks = 0.0  # timed by their owners; what fit spent outside steps is set-up

    def epoch_done(stats: EpochStats) -> None:
        nonlocal in_callbacks
        start = time.perf_counter()
        if run is not None:
            run.log_epoch(stats)
        try:
            if on_epoch_end is not None:
                on_epoch_end(stats)
        finally:
            in_callbacks += time.perf_counter() - start

    def reported(report: Report) -> None:
        nonlocal in_callbacks
        start = time.perf_counter()
        try:
            on_report(report)
        finally:
            in_callbacks += time.perf_counter() - start

    start = time.perf_counter()
    work_before = watch.seconds["train"] + watch.seconds["evaluate"]
    try:
        result = fit(model, device_data or data, config.train, epoch_done, on_step=on_step,
                     on_report=reported if on_report is not None else None,
                     reports_per_epoch=reports_per_epoch, inside_val_size=inside_val_size,
                     watch=watch)
    finally:  # a pruned trial's set-up counts too
        seconds = time.perf_counter() - start
        work = watch.seconds["train"] + watch.seconds["evaluate"] - work_before
        watch.add("setup", max(0.0, seconds - work - in_callbacks))
    model_uri = None
    if run is not None:
        predictions = result.val_predictions
        with run.watch("mlflow_artifacts"):  # what the artifacts show is part of their cost
            diagnosis = diagnose(data.val.labels, predictions)
        log_diagnostics(run, diagnosis, data.val.images,
                            data.val.labels, predictions,
                            title=title.format(accuracy=result.final.val_accuracy))
        model_uri = log_model(run, model, config.model, data.val.images)
    return TrackedFit(result, model, model_uri, seconds)
