"""A heavily pruned study explained at its first rung, on an in-memory study made by hand: every
trial measured at a quarter epoch, a few trained on; which parameter mattered, and what it rests
on."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from pipeline.report import rung_figures
from pipeline.report.rungs import first_rung, pruner_steps, rung_importance

HALVING = {"type": "successive_halving", "min_resource": 1, "reduction_factor": 4,
           "min_early_stopping_rate": 0, "reports_per_epoch": 4}
DISTRIBUTIONS = {"lr": FloatDistribution(1e-4, 1e-1, log=True),
                 "width": CategoricalDistribution([8, 16, 32])}


def _study(trials: int, *, complete: int = 2, params=("lr", "width")) -> optuna.Study:
    """``trials`` trials, all measured at a quarter epoch (their accuracy there follows the
    learning rate), the last ``complete`` of them trained to two epochs."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("space", json.dumps({"metric": "val_accuracy", "pruner": HALVING}))
    for i in range(trials):
        lr = 1e-4 * 10 ** (3 * i / max(1, trials - 1))
        chosen = {"lr": lr, "width": [8, 16, 32][i % 3]}
        at_quarter = 0.1 + 0.8 * (math.log10(lr) + 4) / 3
        done = i >= trials - complete
        steps = range(1, 9) if done else range(1, 2)
        study.add_trial(create_trial(
            state=TrialState.COMPLETE if done else TrialState.PRUNED,
            value=at_quarter + 0.05 if done else None,
            params={k: chosen[k] for k in params},
            distributions={k: DISTRIBUTIONS[k] for k in params},
            intermediate_values={s: at_quarter + 0.005 * (s - 1) for s in steps}))
    return study


def test_the_pruners_rungs_are_its_comparison_steps():
    assert pruner_steps(HALVING, 40) == [1, 4, 16]
    assert pruner_steps({"type": "median", "n_warmup_steps": 2}, 5) == [3, 4, 5]
    assert pruner_steps({"type": "none"}, 3) == [1, 2, 3]


def test_the_first_rung_holds_every_trial_measured_at_a_quarter_epoch():
    rung = first_rung(_study(12))
    assert (rung.step, rung.epochs, len(rung.values)) == (1, 0.25, 12)
    assert sorted(rung.states.values()).count("PRUNED") == 10
    assert rung.label() == "validation accuracy at 0.25 epoch, 12 trials"


def test_importance_at_the_first_rung_finds_the_parameter_that_mattered():
    at_rung, why = rung_importance(_study(12))
    assert why == "" and set(at_rung.shares) == {"lr", "width"}
    assert next(iter(at_rung.shares)) == "lr"  # most important first
    assert at_rung.line().startswith("most important (validation accuracy at 0.25 epoch, 12 "
                                     "trials): lr ")


@pytest.mark.parametrize("study, sentence", [
    (lambda: _study(5), "needs at least 8 trials at one of the pruner's steps; this study has "
                        "5 finished trial(s)"),
    (lambda: _study(12, params=("lr",)), "compares at least two parameters that vary; "
                                         "validation accuracy at 0.25 epoch, 12 trials has 1"),
])
def test_where_importance_cannot_be_computed_one_sentence_says_why(study, sentence):
    at_rung, why = rung_importance(study())
    assert at_rung is None and sentence in why


def test_the_rung_figures_draw_every_trial_in_its_outcomes_colour():
    study = _study(12)
    rung = first_rung(study)
    importance = rung_figures.importance_figure(study, rung, ["lr", "width"])
    assert importance.layout.title.text == ("Parameter importance: validation accuracy at 0.25 "
                                            "epoch, 12 trials")
    assert set(importance.data[0].y) == {"lr", "width"}
    history = rung_figures.history_figure(study, rung)
    points = {t.name: len(t.x) for t in history.data if t.mode == "markers"}
    assert points == {"pruned": 10, "complete": 2}
    slices = rung_figures.slice_figure(study, rung, ["lr", "width"])
    assert sum(len(t.x) for t in slices.data) == 2 * 12  # each trial in both panels
    parallel = rung_figures.parallel_figure(study, rung, ["lr", "width"])
    assert [d.label for d in parallel.data[0].dimensions] == ["log10 lr", "width",
                                                              "val_accuracy"]
    assert sorted(parallel.data[0].line.color) == [0] * 10 + [1] * 2
