"""A running trial's heartbeat that outlives a database outage, and what an outage means for
judging other workers' heartbeats.

Optuna's own heartbeat thread ends at its first failed beat, so after a 20-second database
restart a live trial would look dead to every other worker. Here a failed beat is noted and the
next one tried an interval later. And since nobody could beat during the outage, no process
judges other trials' heartbeats (reconcile) until a grace period has passed since the storage
last failed it: long enough for every live worker to have beaten again.

That alone is a race on a busy machine: a process that saw the storage fail only briefly (or not
at all) judges a live worker whose heartbeat thread, starved of CPU and reconnecting, has not
beaten yet since the storage came back. So a heartbeat older than the grace period only makes a
trial a suspect; it is judged dead when this process has watched that heartbeat stand still for
a further grace period, one in which the storage answered. A worker that beats even once in
between is alive, however late.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import optuna

from pipeline.core.faults import STORAGE, fault_of
from pipeline.study import optuna_private

_last_failure = 0.0  # time.monotonic() of the last storage call this process saw fail
# For each storage this process opened: trial id -> (since when this process has watched its
# heartbeat stand still, that heartbeat).
_suspects: weakref.WeakKeyDictionary[object, dict[int, tuple[float, object]]] = \
    weakref.WeakKeyDictionary()


def storage_failed() -> None:
    """Note that a call to the study's storage failed (an outage may be under way)."""
    global _last_failure
    _last_failure = time.monotonic()
    _suspects.clear()  # what was seen before the outage says nothing about after it


def settled(grace: float) -> bool:
    """Whether ``grace`` seconds have passed since this process last saw the storage fail: only
    then do other trials' heartbeats mean what they say."""
    return time.monotonic() - _last_failure > grace


def dead_after_watching(storage: object, stale: dict[int, object], grace: float) -> list[int]:
    """Which of the trials in ``stale`` (storage id -> last heartbeat, all older than the grace
    period now) this process has watched for ``grace`` seconds without their heartbeat moving:
    those workers are dead. A heartbeat that moved since it was last seen starts the watch
    again; a trial no longer stale is no longer a suspect. Call it only once settled: seeing a
    heartbeat stand still while the storage is away proves nothing."""
    now = time.monotonic()
    watched = _suspects.setdefault(storage, {})
    for trial_id in list(watched):
        if trial_id not in stale:
            del watched[trial_id]
    dead = []
    for trial_id, beat in stale.items():
        since, seen = watched.get(trial_id, (now, beat))
        if seen != beat:  # it beat since: alive, only late
            since = now
        watched[trial_id] = (since, beat)
        if now - since >= grace:
            dead.append(trial_id)
    return dead


@contextmanager
def beating(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Beat ``trial``'s heartbeat every interval while the block runs (database storages);
    a failed beat is noted and retried at the next interval."""
    interval = optuna_private.heartbeat_interval(study)
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            try:
                optuna_private.record_heartbeat(study, trial)
            except Exception as e:  # noqa: BLE001 - a storage outage must not end the beating
                fault = fault_of(e)
                if fault is None or fault.kind != STORAGE:
                    raise
                storage_failed()
            stop.wait(interval)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
