"""Accuracy against cost: the Pareto front of hand-made points, and the figure of an in-memory
study whose trials carry a measured cost."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from pipeline.report.cost_figure import cost_figure, pareto_front

POINTS = [(100, 0.90, 0), (200, 0.95, 1), (150, 0.93, 2), (300, 0.94, 3), (200, 0.92, 4),
          (400, 0.99, 5)]


def test_the_front_is_every_trial_no_cheaper_one_beats():
    assert pareto_front(POINTS, maximize=True) == [0, 2, 1, 5]  # 3 and 4: a cheaper one is better


def test_for_a_loss_lower_is_better():
    losses = [(cost, 1 - value, n) for cost, value, n in POINTS]
    assert pareto_front(losses, maximize=False) == [0, 2, 1, 5]


def test_the_figure_marks_the_front_on_both_costs():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("space", '{"metric": "val_accuracy"}')
    for cost, value, number in POINTS:
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=value, params={"lr": 1e-3},
            distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
            user_attrs={"cost": {"params": cost, "latency_ms": cost / 100 if number != 5
                                 else 0.5}}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 1e-3},
                                 distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
                                 intermediate_values={1: 0.1}))
    figure = cost_figure(study)
    fronts = [t for t in figure.data if t.name == "Pareto front"]
    assert [list(t.x) for t in fronts] == [[100, 150, 200, 400], [0.5]]  # by size, by latency
    assert list(fronts[1].text) == ["trial #5: 99.00%"]  # the fastest is also the best
    others = [t for t in figure.data if t.name == "other trials"]
    assert sum(len(t.x) for t in others) == 2 + 5  # the pruned trial is in neither
    assert "6 complete trials" in figure.layout.title.text
    assert pytest.approx(min(fronts[0].y)) == 0.90
