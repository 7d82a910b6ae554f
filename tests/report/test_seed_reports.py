"""A study of seeds.yaml sets each seed report's published number beside its best here."""

from __future__ import annotations

import json

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from pipeline.core.keys import ATTR_SPACE
from pipeline.report.page import page
from pipeline.report.seed_reports import REPORTED, seed_rows


def _study(trials) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(ATTR_SPACE, json.dumps({"metric": "val_accuracy"}))
    models = CategoricalDistribution(sorted(REPORTED) + ["mine"])
    rotations = CategoricalDistribution([0.0, 10.0])
    for model, rotation, value, state in trials:
        study.add_trial(create_trial(
            params={"model": model, "rotation": rotation},
            distributions={"model": models, "rotation": rotations},
            value=value if state == TrialState.COMPLETE else None, state=state,
            user_attrs={"epochs_trained": 3 if state == TrialState.COMPLETE else 1},
            intermediate_values={1: 0.9}))
    return study


def test_each_seed_network_gets_its_best_complete_trial_beside_its_reported_number():
    study = _study([("report_b", 0.0, 0.9850, TrialState.COMPLETE),
                    ("report_b", 10.0, 0.9871, TrialState.COMPLETE),
                    ("report_h", 0.0, 0.9790, TrialState.COMPLETE),
                    ("report_f", 0.0, None, TrialState.PRUNED),  # never completed: no row
                    ("mine", 0.0, 0.99, TrialState.COMPLETE)])  # not a report's network
    rows = seed_rows(study)
    assert [r.preset for r in rows] == ["report_b", "report_h"]
    b = rows[0]
    assert b.best == "98.71%" and b.trial == 1 and b.complete == 2 and "rotation 10.0" in b.how
    assert b.seed.reported.startswith("98.83%")
    html = page(study, {}, [], "", {})
    assert "The seed reports beside this study" in html
    assert "98.71%" in html and "95.5-95.6%" in html and "MLP 784-300-100-10" in html


def test_a_study_of_other_networks_has_no_seed_table():
    study = _study([("mine", 0.0, 0.99, TrialState.COMPLETE)])
    assert seed_rows(study) == []
    assert "seed reports" not in page(study, {}, [], "", {})
