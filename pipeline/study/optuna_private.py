"""The few private Optuna names `pipeline` uses, each once, with why no public API does it.

Optuna is pinned below 6 (pyproject.toml); a minor release may still move these, so nothing else
in `pipeline` touches an Optuna name that starts with an underscore, and the tests exercise each
one (heartbeats, retries, reconcile).
"""

from __future__ import annotations

import copy

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    # The storage's own id of a trial. Storage methods (user and system attributes, state,
    # heartbeats) take it, while Trial and FrozenTrial expose only the study-scoped number.
    return trial._trial_id


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    # Study has no public accessor for the storage it was opened on; reconcile and the heartbeat
    # need the very object (with its heartbeat settings), not a second connection.
    return study._storage


def heartbeats_enabled(storage: optuna.storages.BaseStorage) -> bool:
    # Whether the storage records heartbeats (an RDBStorage opened with heartbeat_interval):
    # Optuna keeps this check in its private heartbeat module.
    return is_heartbeat_enabled(storage)


def record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    # One heartbeat of a running trial, on storages that keep them. Study.optimize beats them in
    # a thread of Optuna's that ends at its first failed beat; ask-and-tell, which the study
    # lock needs (a trial is created under the lock, run outside it), beats them itself
    # (study.heartbeats). Storage methods take the private id.
    if is_heartbeat_enabled(study._storage):
        study._storage.record_heartbeat(trial._trial_id)


def heartbeat_interval(study: optuna.Study) -> float | None:
    # Seconds between heartbeats, None where the storage keeps none.
    storage = study._storage
    return storage.get_heartbeat_interval() if is_heartbeat_enabled(storage) else None


def grace_period(study: optuna.Study) -> float:
    # Seconds without a heartbeat before a trial counts as stale: the RDB storage behind the
    # study's cache keeps it (Optuna's own default: two intervals).
    rdb = getattr(study._storage, "_backend", study._storage)
    return getattr(rdb, "grace_period", None) or 2 * (heartbeat_interval(study) or 0)


def stale_heartbeats(study: optuna.Study) -> dict[int, object]:
    # The study's running trials whose heartbeat is older than the grace period, by storage id,
    # each with its last heartbeat's time: what optuna.storages.fail_stale_trials would fail,
    # asked first so that reconcile can watch a suspect's heartbeat before judging it
    # (study.heartbeats). Only the RDB storage's private method and its heartbeat table say.
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    ids = study._storage._get_stale_trial_ids(study._study_id)
    if not ids:
        return {}
    rdb = getattr(study._storage, "_backend", study._storage)
    with _create_scoped_session(rdb.scoped_session) as session:
        beats = {trial_id: models.TrialHeartbeatModel.where_trial_id(trial_id, session)
                 for trial_id in ids}
        return {trial_id: beat.heartbeat for trial_id, beat in beats.items() if beat is not None}


def fail_stale_trial(study: optuna.Study, trial_id: int) -> bool:
    # Fail one trial whose worker stopped beating and run the storage's stale-trial callback
    # (the retry), as optuna.storages.fail_stale_trials does for every stale trial at once:
    # reconcile fails only those it has watched (study.heartbeats). False: another process
    # failed it first.
    storage = study._storage
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return True


def frozen_trial(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    # A running trial as the storage has it now: another process may have failed it (its
    # heartbeat looked stale). Trial has no public accessor for its own state; the storage reads
    # an unfinished trial from the database, not from its cache.
    return trial.study._storage.get_trial(trial._trial_id)


def never_beat(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    # Whether a trial of a storage with heartbeats has no heartbeat at all: a claim cut short
    # between creating the trial and its first beat. Optuna keeps the heartbeats in a table of
    # its RDB storage (behind the study's cache) with no public reader.
    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return False
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    rdb = getattr(storage, "_backend", storage)
    with _create_scoped_session(rdb.scoped_session) as session:
        return models.TrialHeartbeatModel.where_trial_id(trial._trial_id, session) is None


def system_attrs(trial: optuna.Trial) -> dict:
    # A running trial's system attributes (a retried trial's lineage, written by Optuna's retry
    # callback or by `pipeline`'s requeue): Trial has no public accessor for them.
    return trial.study._storage.get_trial_system_attrs(trial._trial_id)


def fail_dead_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    attrs: dict) -> bool:
    # Fail another process's trial (its worker died), recording why, and say whether this call
    # did it. Only the process running a trial holds a Trial with public setters, and
    # study.tell cannot tell the winner from the loser when two workers reconcile the same dead
    # trial at once: only the winner may queue it again, and the loser must not crash.
    storage = study._storage
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
        return storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
