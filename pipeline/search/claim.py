"""Claiming the next trial under the study lock, and telling Optuna how a claimed trial ended.

Every worker of a study (on this machine or another) counts and creates trials under one lock,
so none starts a trial beyond the study's target; a trial is created under the lock and run
outside it.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from enum import Enum

import optuna
from optuna.trial import TrialState

from pipeline.core.keys import ATTR_WORKER
from pipeline.core.outcomes import COMPLETE
from pipeline.search.outage import OutageTooLong, Waiter
from pipeline.search.trial import TrialRunner
from pipeline.study import heartbeats, optuna_private
from pipeline.study.locking import StudyLock
from pipeline.study.trials import count_trials, requeue_once


class ClaimKind(Enum):
    START = "start"  # a trial was created (or a queued retry taken) for this worker to run
    WAIT = "wait"  # no room, but other workers' trials still run: one may die and come back
    GRID_EXHAUSTED = "grid"  # a grid sampler has run every combination
    TARGET_REACHED = "target"  # the study holds its target number of finished trials


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    trial: optuna.Trial | None = None  # for START


def claim_next_trial(study: optuna.Study, target: int, lock: StudyLock, worker: str) -> Claim:
    """Count the study's trials and, if there is room under its ``target``, create the next one.

    The study ``lock`` is held for this block and nowhere else: every worker of a study (on this
    machine or another) counts and creates under it, so none creates a trial beyond the target.
    The trial exists (RUNNING, or a queued retry taken) when the lock is let go, with its first
    heartbeat and then the ``worker`` that runs it recorded: a worker that dies from here on
    leaves a trial that any machine's heartbeat check, or this machine's reconcile, fails and
    queues again; one that dies inside the claim leaves a trial that never beat or named its
    worker, which reconcile fails later (search.orphans). Its hyperparameters are sampled
    afterwards, outside the lock.
    """
    with lock:
        counts = count_trials(study)
        exhausted = getattr(study.sampler, "is_exhausted", None)
        if exhausted is not None and exhausted(study):
            return Claim(ClaimKind.GRID_EXHAUSTED)
        if counts.should_start(target):
            with warnings.catch_warnings():
                # Optuna warns that heartbeats go with study.optimize; run_claimed beats them.
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = study.ask()
            optuna_private.record_heartbeat(study, trial)
            trial.set_user_attr(ATTR_WORKER, worker)
            return Claim(ClaimKind.START, trial)
        if counts.finished >= target or counts.running == 0:
            return Claim(ClaimKind.TARGET_REACHED)
    return Claim(ClaimKind.WAIT)


def run_claimed(study: optuna.Study, trial: optuna.Trial, runner: TrialRunner,
                waiter: Waiter | None = None) -> optuna.trial.FrozenTrial:
    """Run a claimed trial, beating its heartbeat (database storages), and tell Optuna how it
    ended (riding out a storage outage with ``waiter``); an outcome that runs again (core.
    outcomes) queues its parameters. Ctrl-C, or a store down past the outage timeout, fails the
    trial and queues it, as far as the storage answers, and stops."""
    with heartbeats.beating(study, trial):
        try:
            result = runner(trial)
        except (KeyboardInterrupt, OutageTooLong):
            with contextlib.suppress(Exception):  # a storage that is down: the next search
                requeue_once(study, study.tell(trial, state=TrialState.FAIL,
                                               skip_if_finished=True))
            raise
    if result.taken_over:  # failed under this worker, and queued again, by another process
        return _store(waiter, optuna_private.frozen_trial, trial)
    told = _store(waiter, study.tell, trial,
                  result.value if result.outcome is COMPLETE else None,
                  state=TrialState[result.outcome.trial_state], skip_if_finished=True)
    if result.outcome.requeue:
        _store(waiter, requeue_once, study, told)
    return told


def _store(waiter: Waiter | None, call, *args, **kwargs):
    return call(*args, **kwargs) if waiter is None else waiter.retrying(call, *args, **kwargs)


