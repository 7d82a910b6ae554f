"""A study at a rung: what every trial that reached one of the pruner's steps measured there,
pruned or complete.

A study that prunes well keeps few complete trials, so what is drawn from complete trials alone
rests on a handful of points; at the pruner's first rung every trial stands, each measured at the
same point of its training. The importance of each parameter there (Optuna's own evaluator, on an
in-memory copy of the study in which each trial's value is its value at the rung) says which
settings mattered, on all the trials the search paid for.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from pipeline.core.errors import first_line
from pipeline.core.keys import ATTR_SPACE
from pipeline.study.studies import study_metric

# Fewer trials than this at a rung make an importance that says more about chance than about
# the parameters (and Optuna's evaluators need several trials to compare).
MIN_TRIALS_AT_RUNG = 8


@dataclass(frozen=True)
class Rung:
    """One step of the pruner and the value each trial that reached it measured there."""

    step: int  # the report's number: an epoch is ``reports_per_epoch`` steps
    epochs: float
    values: dict[int, float]  # trial number -> its value at the step
    states: dict[int, str]  # trial number -> how the trial ended (Optuna's state name)
    metric: str

    def label(self) -> str:
        """What a figure at this rung rests on: "validation accuracy at 0.25 epoch, 50 trials"."""
        what = {"val_accuracy": "validation accuracy", "val_loss": "validation loss"}.get(
            self.metric, self.metric)
        unit = "epoch" if self.epochs <= 1 else "epochs"
        return f"{what} at {self.epochs:g} {unit}, {len(self.values)} trials"


def _space(study: optuna.Study) -> dict:
    return json.loads(study.user_attrs.get(ATTR_SPACE, "{}"))


def pruner_steps(pruner: dict, last: int) -> list[int]:
    """The steps, up to ``last``, at which the study's pruner compares trials: the rungs of the
    multi-fidelity pruners, every step after the warm-up for the median pruner, and every step
    when nothing prunes (each is where trials could be compared)."""
    kind = pruner.get("type", "median")
    if kind in ("successive_halving", "hyperband"):
        factor = pruner.get("reduction_factor", 3)
        step = pruner.get("min_resource", 1) * factor ** pruner.get("min_early_stopping_rate", 0)
        steps = []
        while step <= last:
            steps.append(step)
            step *= factor
        return steps
    warmup = pruner.get("n_warmup_steps", 0) if kind == "median" else 0
    return [s for s in range(1, last + 1) if s > warmup]


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.intermediate_values]


def first_rung(study: optuna.Study) -> Rung | None:
    """The pruner's earliest step that at least MIN_TRIALS_AT_RUNG finished trials reached."""
    trials = finished_trials(study)
    if not trials:
        return None
    space = _space(study)
    per_epoch = int((space.get("pruner") or {}).get("reports_per_epoch", 1))
    last = max(max(t.intermediate_values) for t in trials)
    for step in pruner_steps(space.get("pruner") or {}, last):
        reached = [t for t in trials if step in t.intermediate_values]
        if len(reached) >= MIN_TRIALS_AT_RUNG:
            return Rung(step, step / per_epoch, {t.number: t.intermediate_values[step]
                                                 for t in reached},
                        {t.number: t.state.name for t in reached},
                        study_metric(study, default="value"))
    return None


def rung_study(study: optuna.Study, rung: Rung) -> optuna.Study:
    """An in-memory copy of ``study`` in which each trial that reached ``rung`` is complete with
    its value there: what Optuna's evaluators and figures read."""
    copy = optuna.create_study(direction=study.direction)
    for trial in study.get_trials(deepcopy=False):
        if trial.number in rung.values:
            copy.add_trial(optuna.trial.create_trial(
                state=TrialState.COMPLETE, value=rung.values[trial.number],
                params=trial.params, distributions=trial.distributions,
                user_attrs={"state": trial.state.name}))
    return copy


@dataclass(frozen=True)
class Importance:
    """Each searched parameter's share of the variation in the value, and what it rests on."""

    shares: dict[str, float]  # most important first
    rests_on: str

    def line(self, top: int = 3) -> str:
        best = ", ".join(f"{name} {share:.2f}" for name, share in
                         list(self.shares.items())[:top])
        return f"most important ({self.rests_on}): {best}"


def varying_params(study: optuna.Study) -> list[str]:
    """The parameters that took more than one value among the study's complete trials."""
    values: dict[str, set] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        for name, value in trial.params.items():
            values.setdefault(name, set()).add(repr(value))
    return [name for name, seen in values.items() if len(seen) > 1]


def importance(study: optuna.Study, rests_on: str) -> tuple[Importance | None, str]:
    """The parameters' importances on ``study``'s complete trials, or why there are none (one
    sentence). ``rests_on`` says what the values are."""
    params = varying_params(study)
    if len(params) < 2:
        return None, (f"parameter importance compares at least two parameters that vary; "
                      f"{rests_on} has {len(params)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shares = optuna.importance.get_param_importances(study, params=params)
    except Exception as e:  # noqa: BLE001 - an evaluator that cannot run is a sentence
        return None, f"parameter importance could not be computed ({rests_on}): {first_line(e)}"
    return Importance(dict(shares), rests_on), ""


def rung_importance(study: optuna.Study) -> tuple[Importance | None, str]:
    """Importance at the first rung, or the one sentence that says why there is none."""
    rung = first_rung(study)
    if rung is None:
        reached = len(finished_trials(study))
        return None, (f"parameter importance needs at least {MIN_TRIALS_AT_RUNG} trials at one "
                      f"of the pruner's steps; this study has {reached} finished trial(s)")
    return importance(rung_study(study, rung), rung.label())
