"""Claiming the next trial under the study lock: the rule that keeps every worker of a study under
its target, on an in-memory study (no training, no MLflow)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from pipeline.search.claim import ClaimKind, claim_next_trial
from pipeline.study.locking import StudyLock
from pipeline.study.samplers import GridSampler
from pipeline.study.trials import requeue


class RecordingLock(StudyLock):
    def __init__(self, study: optuna.Study) -> None:
        self.study, self.held, self.trials_seen = study, False, []

    def acquire(self) -> None:
        self.held = True

    def release(self) -> None:
        self.trials_seen.append(len(self.study.trials))
        self.held = False


def _study(**kwargs) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(direction="maximize", **kwargs)


def test_a_study_under_its_target_starts_a_trial_inside_the_lock():
    study = _study()
    lock = RecordingLock(study)
    claim = claim_next_trial(study, 2, lock)
    assert claim.kind is ClaimKind.START and claim.trial.number == 0
    assert study.trials[0].state == TrialState.RUNNING
    assert lock.trials_seen == [1] and not lock.held  # created before the lock was let go


def test_at_its_target_with_a_trial_still_running_a_worker_waits_for_it():
    """The running trial's worker may die, and its trial come back as a retry."""
    study, lock = _study(), StudyLock()
    first = claim_next_trial(study, 2, lock).trial
    claim_next_trial(study, 2, lock)
    study.tell(first, 0.9)
    assert claim_next_trial(study, 2, lock).kind is ClaimKind.WAIT


def test_a_study_that_holds_its_target_is_done_whatever_the_outcomes():
    study, lock = _study(), StudyLock()
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        trial = claim_next_trial(study, 3, lock).trial
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    assert claim_next_trial(study, 3, lock).kind is ClaimKind.TARGET_REACHED
    assert len(study.trials) == 3


def test_a_queued_retry_runs_even_when_the_study_is_at_its_target():
    study, lock = _study(), StudyLock()
    trial = claim_next_trial(study, 1, lock).trial
    trial.suggest_float("x", 0.0, 1.0)
    failed = study.tell(trial, state=TrialState.FAIL)
    requeue(study, failed)  # an interrupted trial: it does not count
    retry = claim_next_trial(study, 1, lock)
    assert retry.kind is ClaimKind.START
    assert retry.trial.suggest_float("x", 0.0, 1.0) == failed.params["x"]


def test_a_grid_that_has_run_every_combination_is_done():
    study, lock = _study(sampler=GridSampler({"x": [1, 2]}, seed=0)), StudyLock()
    for _ in range(2):
        trial = claim_next_trial(study, 5, lock).trial
        study.tell(trial, trial.suggest_categorical("x", [1, 2]))
    assert claim_next_trial(study, 5, lock).kind is ClaimKind.GRID_EXHAUSTED
