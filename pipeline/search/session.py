"""Opening and closing a search: the study created or resumed (a changed space refused), its
MLflow experiment and parent run, what dead workers left closed; at the end, the study summed up
on its parent run, reported, and the run closed when no worker is left."""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path

import optuna

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.faults import STORAGE, TRACKING, fault_of
from pipeline.core.keys import (
    ATTR_DATA_CHECKSUM,
    ATTR_EXPERIMENT,
    ATTR_HEARTBEAT,
    ATTR_PARENT_RUN,
    ATTR_RUN_ID,
    ATTR_SAMPLER,
    ATTR_TARGET,
    TAG_BEST_RUN,
    TAG_BEST_TRIAL,
    TAG_ROLE,
    TAG_STORAGE,
    TAG_STUDY,
)
from pipeline.core.outcomes import STUDY_FINISHED, STUDY_INTERRUPTED
from pipeline.data.splits import DataSplits, load_mnist, split_train_val
from pipeline.search import warm_start
from pipeline.search.orphans import reconcile
from pipeline.search.outage import Waiter, storage_store, tracking_store
from pipeline.search.request import SearchRequest
from pipeline.study import optuna_private
from pipeline.study.locking import StudyLock, study_lock
from pipeline.study.storage import open_storage, redact, tune_sqlite_for_search
from pipeline.study.studies import create_or_resume
from pipeline.study.trials import TrialCounts, best_trial, count_trials
from pipeline.track.runs import RunLog, Tracker, ensure_reachable, library_versions


class SearchInterrupted(PipelineError):
    """Ctrl-C or SIGTERM: the running trial was failed and queued again; the search can resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class Session:
    """An open search: the study, its MLflow experiment and parent run, the study lock."""

    req: SearchRequest
    study: optuna.Study
    tracker: Tracker
    experiment_id: str
    parent: RunLog
    lock: StudyLock
    counts_at_start: TrialCounts
    waiter: Waiter  # rides out an outage of the tracking server or the storage


def open_search(req: SearchRequest, *, echo=print) -> Session:
    """Create or resume the study, its experiment and parent run; close what dead workers left."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what happened
    stores = [tracking_store(req.tracking_uri),
              storage_store(req.storage_url, redact(req.storage_url))]
    waiter = Waiter([s for s in stores if s is not None], timeout=req.outage_timeout, echo=echo)
    if req.quiet:  # a worker joins a search under way: a store away for a while is waited out
        waiter.check(TRACKING)
        waiter.check(STORAGE)
    else:  # a search that starts on a store that does not answer: one line, nothing written
        ensure_reachable(req.tracking_uri)
    storage = open_storage(req.storage_url, heartbeat_interval=req.heartbeat_interval,
                           grace_period=req.grace_period)
    tune_sqlite_for_search(storage)
    # Read before anything is created: a warm-start source that is not there is one line.
    found = (warm_start.configurations(req.warm_start, storage, req.study_name,
                                       req.tracking_uri) if req.warm_start else [])
    lock = study_lock(storage, req.storage_url, req.study_name)
    # Two workers starting together must not make two parent runs, nor both set up a fresh
    # MLflow database (its client migrates the schema as soon as it is made).
    with lock:
        tracker = Tracker(req.tracking_uri, wait=waiter.ride_out)
        study, created = create_or_resume(storage, req.study_name, req.space, req.seed,
                                          force=req.force)
        if req.warm_start:  # once per study: a resumed study or another worker adds nothing
            counts = count_trials(study)
            warm_start.enqueue(study, req.space, req.warm_start, found,
                               top=req.warm_start_top,
                               room=max(0, req.trials - counts.finished - counts.running
                                        - counts.waiting), echo=echo)
        study.set_user_attr(ATTR_TARGET, req.trials)
        if optuna_private.heartbeats_enabled(storage):
            study.set_user_attr(ATTR_HEARTBEAT, {
                "interval": storage.get_heartbeat_interval(),
                "grace": storage.grace_period})
        experiment_id = tracker.experiment(
            req.study_name,
            tags={TAG_STUDY: req.study_name, TAG_STORAGE: redact(req.storage_url)})
        study.set_user_attr(ATTR_EXPERIMENT, experiment_id)
        parent = _open_parent_run(study, tracker, experiment_id, req)
    cleaned = reconcile(study, tracker, experiment_id)
    if cleaned.line():
        echo(cleaned.line())
    counts = count_trials(study)
    verb = "created" if created else "resumed"
    echo(f"study {req.study_name!r} {verb} in {redact(req.storage_url)}: "
         f"{counts.finished} of {req.trials} trials done ({counts.line()})")
    echo(f"MLflow experiment {req.study_name!r} in {tracker.uri}")
    return Session(req, study, tracker, experiment_id, parent, lock, counts, waiter)


def load_search_data(session: Session, *, echo=print) -> DataSplits:
    space = session.req.space
    mnist = load_mnist(session.req.data_dir, log=echo)
    data = split_train_val(mnist, space.data)
    session.study.set_user_attr(ATTR_DATA_CHECKSUM, data.checksum)
    session.parent.log_params({"data_checksum": data.checksum, "train_size": len(data.train)})
    return data


def close_search(session: Session, *, echo=print, stopped_by: str = "target") -> list[Path]:
    """Summarise the study on its parent run, write the report, close the run if all is done."""
    req, study = session.req, session.study
    reconcile(study, session.tracker, session.experiment_id)
    final = count_trials(study)
    best = best_trial(study)
    summary = {"trials_complete": final.complete, "trials_pruned": final.pruned,
               "trials_failed": final.failed}
    if best is not None:
        summary[f"best_{req.space.metric}"] = best.value
        session.parent.set_tags({TAG_BEST_TRIAL: best.number,
                                 TAG_BEST_RUN: best.user_attrs.get(ATTR_RUN_ID, "")})
    session.parent.log_metrics(summary)
    if stopped_by == "timeout":
        echo(f"timeout: no new trial started after {req.timeout:g}s")
    if stopped_by == "grid":
        echo("the grid is complete: every combination has run")
    from pipeline.report.study_report import write_report
    from pipeline.report.tables import top_trials_table

    files: list[Path] = []
    if req.report:
        try:
            files = write_report(study, req.report_dir, tracker=session.tracker,
                                 run_id=session.parent.run_id, echo=echo)
        except OSError as e:
            if fault_of(e) is None:
                raise
            echo(f"note: the report could not be written ({first_line(e)}); `pipeline report` "
                 "writes it once there is room")
    else:
        echo("")
        echo(top_trials_table(study))
    if final.running == 0:
        session.parent.close(STUDY_FINISHED)
    # else other workers still run trials of this study; the last one to finish closes it.
    return files


def interrupted(session: Session, signum: int) -> SearchInterrupted:
    """Ctrl-C or SIGTERM: the parent run closed, as far as the stores answer now (a stop asked
    for during an outage does not wait for it)."""
    counts = stop_now(session)
    name = signal.Signals(signum).name
    return SearchInterrupted(
        f"{name}: stopped; the running trial was marked failed and queued to run again; run "
        f"the same `pipeline search` to resume{counts}", signum)


def stop_now(session: Session) -> str:
    """Close the parent run as interrupted without waiting on a store that is down; the study's
    counts as " (…)" when the storage answers."""
    session.parent.wait = None
    with contextlib.suppress(Exception):
        session.parent.close(STUDY_INTERRUPTED)
    try:
        return f" ({count_trials(session.study).line()})"
    except Exception:  # noqa: BLE001 - the storage is down: the next search counts
        return ""


def _open_parent_run(study: optuna.Study, tracker: Tracker, experiment_id: str,
                     req: SearchRequest) -> RunLog:
    """The study's run: made on the first search, reopened by every later one."""
    existing = study.user_attrs.get(ATTR_PARENT_RUN)
    if existing:
        parent = tracker.resume_run(existing)
        if parent is not None:
            return parent
    parent = tracker.start_run(experiment_id, req.study_name,
                               tags={TAG_ROLE: "study", TAG_STUDY: req.study_name,
                                     TAG_STORAGE: redact(req.storage_url)})
    sampler = {f"sampler.{k}": v for k, v in study.user_attrs.get(ATTR_SAMPLER, {}).items()}
    pruner = {f"pruner.{k}": v for k, v in req.space.pruner.items()}
    parent.log_params({"space_file": str(req.space.path), "space_name": req.space.name,
                       "space_fingerprint": req.space.fingerprint, "metric": req.space.metric,
                       "direction": req.space.direction, "val_size": req.space.data.val_size,
                       "split_seed": req.space.data.split_seed,
                       "train_subset": req.space.data.train_subset, **sampler, **pruner,
                       **library_versions()})
    study.set_user_attr(ATTR_PARENT_RUN, parent.run_id)
    return parent
