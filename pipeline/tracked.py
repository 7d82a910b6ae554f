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

from pipeline.data import DataSplits
from pipeline.diagnostics import diagnose
from pipeline.hparams import RunConfig
from pipeline.model import build_model, parameter_count
from pipeline.tracking import RunLog, library_versions
from pipeline.train import EpochStats, ExecutionPlan, FitResult, fit, plan_execution


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
    title: str = "validation accuracy {accuracy:.2%}",
) -> TrackedFit:
    """Train ``config`` on ``data`` (``device_data``: the same splits already on the training
    device), recording into ``run``. ``model``: the configuration's model if already built
    (plan_for). ``params`` are logged beside the configuration's; ``title`` heads the confusion
    matrix (``{accuracy}`` is the final validation accuracy).

    Exceptions (a pruned or diverged trial, Ctrl-C, a failure) propagate: the caller decides the
    outcome and closes the run (outcomes.py).
    """
    if model is None:
        model, plan = plan_for(config)
    else:
        plan = plan_execution(model, config.train)
    if run is not None:
        run.log_params({**config.flat(), **(params or {}), "data_checksum": data.checksum,
                        "parameter_count": parameter_count(model), **plan.params(),
                        **library_versions()})

    def epoch_done(stats: EpochStats) -> None:
        if run is not None:
            run.log_epoch(stats)
        if on_epoch_end is not None:
            on_epoch_end(stats)

    start = time.perf_counter()
    result = fit(model, device_data or data, config.train, epoch_done, on_step=on_step)
    seconds = time.perf_counter() - start
    model_uri = None
    if run is not None:
        predictions = result.val_predictions
        run.log_diagnostics(diagnose(data.val.labels, predictions), data.val.images,
                            data.val.labels, predictions,
                            title=title.format(accuracy=result.final.val_accuracy))
        model_uri = run.log_model(model, config.model, data.val.images)
    return TrackedFit(result, model, model_uri, seconds)
