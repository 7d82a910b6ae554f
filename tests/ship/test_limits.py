"""`promote best --max-params/--max-latency-ms`: the best trial by validation among those whose
measured cost is within the limits, on a real SQLite study of hand-made trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from pipeline.ship.registry import CostLimits, PromotionError, candidate_from_study

#  value, parameters, latency (ms): the best is the largest and the slowest.
TRIALS = [(0.995, 400_000, 1.0), (0.990, 90_000, 0.6), (0.985, 40_000, 0.3),
          (0.970, 20_000, 0.2)]


@pytest.fixture
def storage(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/optuna.db"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="costs", storage=url, direction="maximize")
    study.set_user_attr("metric", "val_accuracy")
    for number, (value, params, latency) in enumerate(TRIALS):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=value, params={"lr": 1e-3},
            distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
            user_attrs={"model_uri": f"models:/m-{number}", "mlflow_run_id": f"run{number}",
                        "cost": {"params": params, "latency_ms": latency}}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 1e-3},
                                 distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
                                 intermediate_values={1: 0.1}))
    return url


@pytest.mark.parametrize("limits, trial", [
    (CostLimits(), "0"),  # no limit: the best of all
    (CostLimits(max_params=100_000), "1"),
    (CostLimits(max_latency_ms=0.3), "2"),  # at the limit is within it
    (CostLimits(max_params=100_000, max_latency_ms=0.25), "3"),  # both limits hold
])
def test_the_best_trial_within_the_limits_is_the_candidate(storage, limits, trial):
    candidate = candidate_from_study(storage, "costs", limits)
    assert candidate.trial_number == trial and candidate.run_id == f"run{trial}"
    if limits:
        assert f"within {limits.describe()}" in candidate.describe()


def test_when_no_trial_is_within_the_limits_it_says_what_the_closest_costs(storage):
    with pytest.raises(PromotionError) as refused:
        candidate_from_study(storage, "costs", CostLimits(max_params=10_000,
                                                         max_latency_ms=0.1))
    assert str(refused.value) == (
        "no complete trial of study 'costs' has at most 10,000 parameters and a one-image CPU "
        "latency of at most 0.1 ms (the smallest has 20,000 parameters, the fastest 0.20 ms); "
        "raise the limits, or search a smaller space")


def test_trials_without_a_measured_cost_are_never_within_a_limit(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="old", storage=url, direction="maximize")
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=0.99, params={"lr": 1e-3},
        distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
        user_attrs={"model_uri": "models:/m-0", "mlflow_run_id": "run0"}))
    assert candidate_from_study(url, "old").trial_number == "0"
    with pytest.raises(PromotionError, match="has a measured cost"):
        candidate_from_study(url, "old", CostLimits(max_params=10**9))
