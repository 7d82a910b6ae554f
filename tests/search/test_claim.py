"""Claiming the next trial under the study lock: the rule that keeps every worker of a study under
its target, on an in-memory study (no training, no MLflow)."""

from __future__ import annotations

import time
import warnings

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
    claim = claim_next_trial(study, 2, lock, "w")
    assert claim.kind is ClaimKind.START and claim.trial.number == 0
    assert study.trials[0].state == TrialState.RUNNING
    assert lock.trials_seen == [1] and not lock.held  # created before the lock was let go


def test_at_its_target_with_a_trial_still_running_a_worker_waits_for_it():
    """The running trial's worker may die, and its trial come back as a retry."""
    study, lock = _study(), StudyLock()
    first = claim_next_trial(study, 2, lock, "w").trial
    claim_next_trial(study, 2, lock, "w")
    study.tell(first, 0.9)
    assert claim_next_trial(study, 2, lock, "w").kind is ClaimKind.WAIT


def test_a_study_that_holds_its_target_is_done_whatever_the_outcomes():
    study, lock = _study(), StudyLock()
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        trial = claim_next_trial(study, 3, lock, "w").trial
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    assert claim_next_trial(study, 3, lock, "w").kind is ClaimKind.TARGET_REACHED
    assert len(study.trials) == 3


def test_a_queued_retry_runs_even_when_the_study_is_at_its_target():
    study, lock = _study(), StudyLock()
    trial = claim_next_trial(study, 1, lock, "w").trial
    trial.suggest_float("x", 0.0, 1.0)
    failed = study.tell(trial, state=TrialState.FAIL)
    requeue(study, failed)  # an interrupted trial: it does not count
    retry = claim_next_trial(study, 1, lock, "w")
    assert retry.kind is ClaimKind.START
    assert retry.trial.suggest_float("x", 0.0, 1.0) == failed.params["x"]


def test_a_grid_that_has_run_every_combination_is_done():
    study, lock = _study(sampler=GridSampler({"x": [1, 2]}, seed=0)), StudyLock()
    for _ in range(2):
        trial = claim_next_trial(study, 5, lock, "w").trial
        study.tell(trial, trial.suggest_categorical("x", [1, 2]))
    assert claim_next_trial(study, 5, lock, "w").kind is ClaimKind.GRID_EXHAUSTED


def test_a_claimed_trial_names_its_worker_and_has_beaten_once(tmp_path):
    """Recorded under the lock: a worker that dies right after claiming leaves a trial that the
    heartbeat check fails (Optuna skips a trial that never beat) and reconcile can judge."""
    from pipeline.study.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/beat.db", heartbeat_interval=1,
                           grace_period=1)
    study = optuna.create_study(storage=storage, direction="maximize")
    claim = claim_next_trial(study, 1, StudyLock(), "host:123:456")
    assert study.trials[0].user_attrs["worker"] == "host:123:456"
    time.sleep(2.2)  # no heartbeat thread runs: the one beat goes stale
    optuna.storages.fail_stale_trials(study)
    assert study.trials[claim.trial.number].state == TrialState.FAIL


def test_a_trial_whose_worker_died_as_it_claimed_it_is_reconciled(monkeypatch):
    from pipeline.search import orphans

    study = _study()
    trial = study.ask()  # created, and its claim never recorded a worker
    trial.suggest_float("x", 0.0, 1.0)
    assert orphans.reconcile(study, None, None).failed_trials == []  # too young to judge
    monkeypatch.setattr(orphans, "CLAIM_SECONDS", -1.0)
    assert orphans.reconcile(study, None, None).failed_trials == [0]
    assert study.trials[0].user_attrs["outcome"] == "dead-worker"
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.params for t in waiting] == [study.trials[0].params]


def test_a_trial_that_named_its_worker_but_never_beat_is_reconciled(tmp_path, monkeypatch):
    """A claim cut short on a storage with heartbeats: Optuna's stale-trial check would skip a
    trial that never beat, and its worker (on another machine) cannot be checked from here."""
    from pipeline.search import orphans
    from pipeline.study.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/cut.db", heartbeat_interval=60)
    study = optuna.create_study(storage=storage, direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats without study.optimize: the claim's way
        trial = study.ask()
    trial.set_user_attr("worker", "another-machine:123:456")
    monkeypatch.setattr(orphans, "CLAIM_SECONDS", -1.0)
    assert orphans.reconcile(study, None, None).failed_trials == [0]
    beating = claim_next_trial(study, 5, StudyLock(), "another-machine:789:1")
    assert orphans.reconcile(study, None, None).failed_trials == []  # it beat: Optuna's to judge
    assert study.trials[beating.trial.number].state == TrialState.RUNNING


def test_a_trial_stopped_before_it_sampled_anything_is_queued_afresh_and_not_counted():
    from pipeline.study.trials import count_trials

    study, lock = _study(), StudyLock()
    trial = claim_next_trial(study, 1, lock, "w").trial
    requeue(study, study.tell(trial, state=TrialState.FAIL))
    counts = count_trials(study)
    assert (counts.failed, counts.retried, counts.waiting) == (0, 1, 1)
    fresh = claim_next_trial(study, 1, lock, "w")
    assert fresh.kind is ClaimKind.START and 0.0 <= fresh.trial.suggest_float("x", 0, 1) <= 1


def test_right_after_a_storage_outage_old_heartbeats_do_not_make_a_live_trial_dead(tmp_path):
    """Nobody could beat while the storage was away: until a grace period has passed since this
    process last saw it fail, reconcile does not judge other trials by their heartbeats."""
    from pipeline.search import orphans
    from pipeline.study import heartbeats
    from pipeline.study.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/beats.db", heartbeat_interval=1,
                           grace_period=1)
    study = optuna.create_study(storage=storage, direction="maximize")
    live = claim_next_trial(study, 5, StudyLock(), "another-machine:1:2").trial
    time.sleep(1.5)  # its worker's beats failed all this while: the storage was away
    heartbeats.storage_failed()  # ...and this process saw it fail just now
    assert orphans.reconcile(study, None, None).failed_trials == []
    assert study.trials[live.number].state == TrialState.RUNNING
    time.sleep(1.2)  # a grace period after the outage, and still no beat: a suspect
    assert orphans.reconcile(study, None, None).suspects == [live.number]
    time.sleep(1.2)  # watched stale for a whole grace period while the storage answered: dead
    orphans.reconcile(study, None, None)
    assert study.trials[live.number].state == TrialState.FAIL


def test_a_suspect_that_beats_again_is_not_judged_dead(tmp_path):
    """A live worker on a busy machine can miss its grace period once (its heartbeat thread
    starved of CPU, or reconnecting after an outage): a stale heartbeat makes it a suspect, and
    a beat before a second grace period has passed clears it."""
    from pipeline.search import orphans
    from pipeline.study import optuna_private
    from pipeline.study.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/slow.db", heartbeat_interval=1,
                           grace_period=1)
    study = optuna.create_study(storage=storage, direction="maximize")
    # (SQLite keeps the heartbeats' times to the second: stale here means 2 s without one.)
    slow = claim_next_trial(study, 5, StudyLock(), "another-machine:1:2").trial
    time.sleep(2.1)
    assert orphans.reconcile(study, None, None).suspects == [slow.number]
    optuna_private.record_heartbeat(study, slow)  # late, but alive
    time.sleep(2.1)  # stale again, and a grace period since it was first seen: but it beat
    assert orphans.reconcile(study, None, None).failed_trials == []
    assert study.trials[slow.number].state == TrialState.RUNNING
    time.sleep(1.1)  # this time its heartbeat stood still while watched: dead
    assert orphans.reconcile(study, None, None).failed_trials == [slow.number]
    assert study.trials[slow.number].state == TrialState.FAIL


def test_pipeline_reconcile_watches_a_suspect_for_a_grace_period_before_failing_it(tmp_path):
    """`pipeline reconcile` looks once: a trial whose heartbeat is stale is named, watched a
    grace period, and failed (and queued again) only if it did not beat meanwhile."""
    from helpers import invoke

    from pipeline.study.storage import open_storage

    url = f"sqlite:///{tmp_path}/watch.db"
    study = optuna.create_study(storage=open_storage(url, heartbeat_interval=1, grace_period=1),
                                direction="maximize", study_name="watched")
    study.set_user_attr("heartbeat", {"interval": 1, "grace": 1})
    dead = claim_next_trial(study, 5, StudyLock(), "another-machine:1:2").trial
    dead.suggest_float("x", 0.0, 1.0)
    time.sleep(2.1)  # (SQLite keeps heartbeat times to the second)
    result = invoke("reconcile", "--storage", url, "--study", "watched", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"trial(s) #{dead.number}: no heartbeat for over 1 s; watching them 1 s more" in \
        result.stdout
    assert f"failed 1 trial(s) left running by a dead worker (#{dead.number}), queued again" in \
        result.stdout
    trials = optuna.load_study(study_name="watched", storage=url).trials
    assert trials[dead.number].state == TrialState.FAIL
    assert [t.params for t in trials if t.state == TrialState.WAITING] == [
        trials[dead.number].params]
