"""What a study optimises: a validation metric, the direction Optuna takes it in, how its values
read, and its value in one measurement. The search space names it; trials, the pruner's reports,
promotion, progress lines and the report all ask here."""

from __future__ import annotations

from typing import Protocol

ACCURACY = "val_accuracy"
LOSS = "val_loss"
DIRECTIONS = {ACCURACY: "maximize", LOSS: "minimize"}  # in Optuna's words
DEFAULT = ACCURACY


class Measured(Protocol):
    """A validation measurement: an epoch's statistics, or a report to the pruner."""

    val_accuracy: float
    val_loss: float


def value_of(metric: str, measured: Measured) -> float:
    """The metric's value in ``measured`` (its fields are named as the metrics are)."""
    return getattr(measured, metric) if metric in DIRECTIONS else measured.val_accuracy


def format_value(metric: str, value: float) -> str:
    """An accuracy as a percentage, a loss with four decimals."""
    return f"{value:.2%}" if metric.endswith("accuracy") else f"{value:.4f}"
