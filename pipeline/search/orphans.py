"""Close what dead or interrupted workers left behind, so nothing stays RUNNING forever.

Runs at the start of every search (and as `pipeline reconcile`):

* a RUNNING trial whose worker process on this machine is gone is failed as a dead worker and
  queued to run again with the same parameters (on RDB storages, heartbeats do the same for
  other machines), and so is one whose worker died as it claimed it, before recording itself;
* an MLflow trial run still RUNNING whose trial is no longer running is closed with the status
  of the trial's outcome (core.outcomes): the one its worker recorded, or dead-worker when it
  recorded none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import optuna
from optuna.trial import TrialState

from pipeline.core.keys import (
    ATTR_OUTCOME,
    ATTR_REASON,
    ATTR_RUN_ID,
    ATTR_WORKER,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL,
)
from pipeline.core.outcomes import DEAD_WORKER, dead_worker_reason, for_finished_trial
from pipeline.study import heartbeats, optuna_private
from pipeline.study.liveness import is_dead_local_worker
from pipeline.study.trials import requeue_once
from pipeline.track.runs import RunLog, Tracker

# Far beyond the milliseconds between creating a trial and recording its worker.
CLAIM_SECONDS = 120


@dataclass
class Reconciled:
    failed_trials: list[int] = field(default_factory=list)
    closed_runs: list[str] = field(default_factory=list)
    # Trials whose heartbeat is stale but not yet watched standing still for a grace period.
    suspects: list[int] = field(default_factory=list)

    def line(self) -> str | None:
        parts = []
        if self.failed_trials:
            parts.append(f"failed {len(self.failed_trials)} trial(s) left running by a dead "
                         f"worker (#{', #'.join(map(str, self.failed_trials))}), queued again")
        if self.closed_runs:
            parts.append(f"closed {len(self.closed_runs)} MLflow run(s) left RUNNING")
        return "reconcile: " + "; ".join(parts) if parts else None


def reconcile(study: optuna.Study, tracker: Tracker | None,
              experiment_id: str | None) -> Reconciled:
    result = Reconciled()
    # Other machines' dead workers, by their stale heartbeats; but not while nobody could beat
    # (right after a storage outage every heartbeat is old), and only those whose heartbeat
    # this process has watched stand still for a grace period (study.heartbeats).
    storage = optuna_private.storage_of(study)
    if optuna_private.heartbeats_enabled(storage):
        grace = optuna_private.grace_period(study)
        if heartbeats.settled(grace):
            stale = optuna_private.stale_heartbeats(study)
            dead = heartbeats.dead_after_watching(storage, stale, grace)
            for trial_id in dead:
                if optuna_private.fail_stale_trial(study, trial_id):
                    result.failed_trials.append(storage.get_trial(trial_id).number)
            result.suspects = sorted(storage.get_trial(trial_id).number
                                     for trial_id in stale if trial_id not in dead)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _why_dead(study, trial)
        if reason is None:
            continue
        why = {ATTR_REASON: reason, ATTR_OUTCOME: DEAD_WORKER.name}
        if not optuna_private.fail_dead_trial(study, trial, why):
            continue  # another worker reconciled it first
        result.failed_trials.append(trial.number)
        requeue_once(study, trial)
    if tracker is not None and experiment_id is not None:
        result.closed_runs = _close_orphan_runs(study, tracker, experiment_id)
    return result


def _why_dead(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a RUNNING trial's worker is known dead, or None. A trial's claim records its first
    heartbeat and its worker within milliseconds of creating it (search.claim): one that has
    neither long after was claimed by a worker that died in between, on whatever machine."""
    worker = trial.user_attrs.get(ATTR_WORKER, "")
    started = trial.datetime_start or datetime.now()
    old = (datetime.now() - started).total_seconds() > CLAIM_SECONDS
    if old and (not worker or optuna_private.never_beat(study, trial)):
        return "its worker died as it claimed the trial; queued to run again"
    if worker and is_dead_local_worker(worker):
        return dead_worker_reason(worker)
    return None


def _close_orphan_runs(study: optuna.Study, tracker: Tracker, experiment_id: str) -> list[str]:
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    runs = tracker.client.search_runs(
        [experiment_id],
        filter_string=(f"attributes.status = 'RUNNING' and tags.`{TAG_ROLE}` = 'trial' "
                       f"and tags.`{TAG_STUDY}` = '{study.study_name}'"),
        max_results=10_000,
    )
    closed = []
    for run in runs:
        trial = trials.get(int(run.data.tags.get(TAG_TRIAL, -1)))
        if trial is not None and trial.user_attrs.get(ATTR_RUN_ID) not in (None, run.info.run_id):
            trial = None  # a run of an earlier attempt at this number: orphaned for sure
        if trial is not None and trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        if trial is None:
            outcome, reason = DEAD_WORKER, "its worker died before the trial was recorded"
        else:
            outcome = for_finished_trial(trial.state.name, trial.user_attrs.get(ATTR_OUTCOME))
            reason = trial.user_attrs.get(ATTR_REASON, "")
        RunLog(tracker.client, run.info.run_id, experiment_id).close(outcome, reason)
        closed.append(run.info.run_id)
    return closed
