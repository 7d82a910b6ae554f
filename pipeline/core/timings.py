"""Where a trial's time goes: seconds by phase, measured as the trial runs, recorded on its
MLflow run (``seconds_<phase>`` metrics) and on its Optuna trial (user attribute ``seconds``),
summed by `pipeline report` and bench/search_costs.py.

Phases: ``build`` (the seeded network and its execution plan), ``setup`` (model and optimizer on
the device, before the first step), ``train`` (training steps), ``evaluate`` (validation passes),
``cost`` (what the trained network costs to run, measured once it completes: train.cost),
``mlflow_params``/``mlflow_metrics``/``mlflow_artifacts``/``mlflow_model``/``mlflow_close`` (the
tracking store), ``optuna`` (sampling, reports and attributes in the study's storage) and
``other`` (the rest of the trial's wall time). Everything but ``train`` and ``evaluate`` is the
trial's overhead.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

PHASES = ("build", "setup", "train", "evaluate", "cost", "mlflow_params", "mlflow_metrics",
          "mlflow_artifacts", "mlflow_model", "mlflow_close", "optuna", "other")
WORK = ("train", "evaluate")  # what a trial is for; the other phases are its overhead


class Stopwatch:
    """Accumulates seconds by phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    def merge(self, other: dict[str, float]) -> None:
        for phase, seconds in other.items():
            self.seconds[phase] += seconds

    def breakdown(self, wall: float) -> dict[str, float]:
        """Every phase, in order, with ``other`` the part of ``wall`` no phase measured."""
        measured = {p: round(self.seconds.get(p, 0.0), 4) for p in PHASES if p != "other"}
        measured["other"] = round(max(0.0, wall - sum(measured.values())), 4)
        return measured


def overhead(breakdown: dict[str, float]) -> float:
    """Seconds of a trial spent outside training and evaluation."""
    return sum(s for phase, s in breakdown.items() if phase not in WORK)
