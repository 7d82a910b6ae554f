"""Close what dead or interrupted workers left behind, so nothing stays RUNNING forever.

Runs at the start of every search (and as `pipeline reconcile`):

* a RUNNING trial whose worker process on this machine is gone is failed and queued to run
  again with the same parameters (on RDB storages, heartbeats do the same for other machines);
* an MLflow trial run still RUNNING whose trial is no longer running is closed: KILLED for a
  failed or pruned trial, FINISHED for a complete one, with the trial's state tagged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from pipeline.liveness import is_dead_local_worker
from pipeline.studies import (
    ATTR_REASON,
    ATTR_RUN_ID,
    ATTR_WORKER,
    requeue,
    retried_numbers,
)
from pipeline.tracking import (
    TAG_REASON,
    TAG_ROLE,
    TAG_STATE,
    TAG_STUDY,
    TAG_TRIAL,
    RunLog,
    Tracker,
)

RUN_STATUS_FOR = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED",
                  TrialState.FAIL: "KILLED"}
STATE_NAMES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
               TrialState.FAIL: "failed"}


@dataclass
class Reconciled:
    failed_trials: list[int] = field(default_factory=list)
    closed_runs: list[str] = field(default_factory=list)

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
    storage = study._storage
    if is_heartbeat_enabled(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # other machines' dead workers
    retried = retried_numbers(study.get_trials(deepcopy=False))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(ATTR_WORKER, "")
        if worker and is_dead_local_worker(worker):
            storage.set_trial_user_attr(trial._trial_id, ATTR_REASON,
                                        f"worker {worker} died while running it")
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                result.failed_trials.append(trial.number)
                if trial.number not in retried:
                    requeue(study, trial)
    if tracker is not None and experiment_id is not None:
        result.closed_runs = _close_orphan_runs(study, tracker, experiment_id)
    return result


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
        number = int(run.data.tags.get(TAG_TRIAL, -1))
        trial = trials.get(number)
        if trial is not None and trial.user_attrs.get(ATTR_RUN_ID) not in (None, run.info.run_id):
            trial = None  # a run of an earlier attempt at this number: orphaned for sure
        if trial is not None and trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        state = trial.state if trial is not None else TrialState.FAIL
        tags = {TAG_STATE: STATE_NAMES.get(state, "failed")}
        if trial is not None and trial.user_attrs.get(ATTR_REASON):
            tags[TAG_REASON] = trial.user_attrs[ATTR_REASON]
        RunLog(tracker.client, run.info.run_id, experiment_id).finish(
            RUN_STATUS_FOR.get(state, "KILLED"), tags)
        closed.append(run.info.run_id)
    return closed
