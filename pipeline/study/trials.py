"""A study's trials as the search counts them: where it stands against its target, retries of
interrupted or dead workers' trials, the best and the ranked complete trials."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from pipeline.core.keys import ATTR_EPOCHS, SYS_FAILED_TRIAL, SYS_RETRY_HISTORY


@dataclass(frozen=True)
class TrialCounts:
    """Where a study stands against its target number of trials.

    ``retried`` failed trials (interrupted, or their worker died) are run again with the same
    parameters as a new trial, so they do not count towards the target.
    """

    complete: int
    pruned: int
    failed: int
    retried: int
    running: int
    waiting: int

    @property
    def finished(self) -> int:
        """Trials that count towards the target: complete, pruned, failed for good."""
        return self.complete + self.pruned + self.failed

    def should_start(self, target: int) -> bool:
        """Whether one more trial may start: a queued retry, or room under the target."""
        return self.waiting > 0 or self.finished + self.running < target

    def line(self) -> str:
        return (f"{self.complete} complete, {self.pruned} pruned, {self.failed} failed"
                + (f", {self.running} running" if self.running else "")
                + (f", {self.retried} retried" if self.retried else ""))


def retried_numbers(trials) -> set[int]:
    """Numbers of trials that a later trial re-runs (its retry history names them)."""
    return {n for t in trials for n in t.system_attrs.get(SYS_RETRY_HISTORY, [])}


def count_trials(study: optuna.Study) -> TrialCounts:
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    by_state = {state: 0 for state in TrialState}
    failed_for_good = 0
    for t in trials:
        by_state[t.state] += 1
        if t.state == TrialState.FAIL and t.number not in retried:
            failed_for_good += 1
    return TrialCounts(
        complete=by_state[TrialState.COMPLETE], pruned=by_state[TrialState.PRUNED],
        failed=failed_for_good, retried=by_state[TrialState.FAIL] - failed_for_good,
        running=by_state[TrialState.RUNNING], waiting=by_state[TrialState.WAITING],
    )


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial to run again with the same parameters (lineage in system attrs).
    One stopped before it sampled any is queued too, with none fixed: it samples afresh, and
    the lost trial does not count towards the study's target.

    Same record as Optuna's RetryHeartbeatStaleTrialCallback, so both kinds of retry read alike.
    """
    history = [*trial.system_attrs.get(SYS_RETRY_HISTORY, []), trial.number]
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs={SYS_FAILED_TRIAL: trial.system_attrs.get(SYS_FAILED_TRIAL, trial.number),
                      SYS_RETRY_HISTORY: history},
    ))


def requeue_once(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """``requeue``, unless a trial already runs it again: a trial failed under its live worker
    by another process (its heartbeat looked stale) was queued by that process."""
    if trial.number not in retried_numbers(study.get_trials(deepcopy=False)):
        requeue(study, trial)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.value, reverse=maximize)


def epochs_trained(trial: optuna.trial.FrozenTrial) -> float:
    """Passes over the training images: recorded by the trial (fractions when a pruner stopped
    it part-way), else its reports, one per epoch, as before fractions existed."""
    return trial.user_attrs.get(ATTR_EPOCHS, len(trial.intermediate_values))
