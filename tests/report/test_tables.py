"""The report's tables on an in-memory study whose trials are made by hand: the best trials with
the parameters that set them apart, and where the time went by phase."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from pipeline.core.timings import PHASES
from pipeline.report.tables import time_breakdown_table, top_trials_table

DISTRIBUTIONS = {"lr": FloatDistribution(1e-4, 1e-1, log=True),
                 "width": CategoricalDistribution([8, 16])}


def _seconds(train: float, overhead: float) -> dict[str, float]:
    return {phase: {"train": train, "optuna": overhead}.get(phase, 0.0) for phase in PHASES}


def _study(*trials: tuple) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="hand-made", direction="maximize")
    for state, value, lr, width, seconds, *cost in trials:
        study.add_trial(create_trial(
            state=state, value=value, params={"lr": lr, "width": width},
            distributions=DISTRIBUTIONS, intermediate_values={1: value or 0.1},
            user_attrs={"seconds": seconds, "epochs_trained": 2 if value else 0.25,
                        "mlflow_run_id": f"run{lr}", **(cost[0] if cost else {})}))
    return study


def test_the_top_trials_table_ranks_complete_trials_and_shows_what_differs():
    study = _study((TrialState.COMPLETE, 0.97, 1e-3, 8, _seconds(10, 1),
                    {"cost": {"params": 1_234_567, "latency_ms": 3.2}}),
                   (TrialState.COMPLETE, 0.99, 3e-3, 8, _seconds(10, 1),
                    {"cost": {"params": 421_738, "latency_ms": 1.0096}}),
                   (TrialState.PRUNED, None, 1e-4, 16, _seconds(2, 0.1)))
    lines = top_trials_table(study).splitlines()
    assert lines[0] == ("Top trials of 'hand-made' by value (2 complete, 1 pruned, 0 failed):")
    header = lines[1].split()
    assert header[:8] == ["rank", "trial", "value", "epochs", "time", "params", "cpu", "ms"]
    assert "lr" in header and "width" not in header  # the same for every ranked trial: no column
    # Size and one-image CPU latency beside the accuracy.
    assert lines[2].split()[:7] == ["1", "1", "0.9900", "2", "0s", "422k", "1.01"]
    assert lines[3].split()[:7] == ["2", "0", "0.9700", "2", "0s", "1.23M", "3.20"]
    assert lines[4] == "best trial #1 (0.9900): lr=0.003, width=8"
    assert lines[5].startswith("  MLflow run run0.003")


def test_the_time_table_sums_phases_and_splits_complete_from_pruned():
    study = _study((TrialState.COMPLETE, 0.97, 1e-3, 8, _seconds(10, 1)),
                   (TrialState.PRUNED, None, 1e-4, 16, _seconds(2, 0.5)))
    table = time_breakdown_table(study)
    assert table.splitlines()[0] == "Where the time went (2 finished trials, 14 s):"
    train = next(line for line in table.splitlines() if line.strip().startswith("train"))
    assert train.split() == ["train", "12.0", "88.9%", "10.000s", "2.000s"]
    assert table.splitlines()[-1] == ("  overhead (all but train and evaluate), mean (median): "
                                      "1.000 s (1.000 s) per complete trial, 0.500 s (0.500 s) "
                                      "per pruned trial")


def test_trials_without_a_measured_cost_show_dashes():
    study = _study((TrialState.COMPLETE, 0.97, 1e-3, 8, _seconds(10, 1)))
    assert top_trials_table(study).splitlines()[2].split()[5:7] == ["–", "–"]


def test_a_study_with_no_pruned_trial_shows_dashes_not_nan():
    study = _study((TrialState.COMPLETE, 0.97, 1e-3, 8, _seconds(10, 1)))
    table = time_breakdown_table(study)
    assert "nan" not in table
    train = next(line for line in table.splitlines() if line.strip().startswith("train"))
    assert train.split()[-1] == "–"
    assert table.endswith("per complete trial, no pruned trial")


def test_a_study_without_timed_trials_says_so():
    assert time_breakdown_table(_study()) == ("Where the time went: no trial recorded its time "
                                              "by phase")
