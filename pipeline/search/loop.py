"""`pipeline search`: an Optuna study over a search-space file, every trial tracked in MLflow.

The story of one search: open or resume the study (refusing a changed space), close what dead
workers left behind, load the data once, then claim and run trials until the study holds its
target number of finished trials. A trial is claimed under the study lock (claim_next_trial) and
run outside it (trial.py); its outcome goes to Optuna and MLflow through one table
(outcomes.py). Ctrl-C and SIGTERM stop cleanly; the next search resumes.
"""

from __future__ import annotations

import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from pipeline.core.errors import PipelineError
from pipeline.core.keys import (
    ATTR_DATA_CHECKSUM,
    ATTR_EXPERIMENT,
    ATTR_HEARTBEAT,
    ATTR_PARENT_RUN,
    ATTR_REASON,
    ATTR_RUN_ID,
    ATTR_SAMPLER,
    ATTR_TARGET,
    TAG_BEST_RUN,
    TAG_BEST_TRIAL,
    TAG_ROLE,
    TAG_STORAGE,
    TAG_STUDY,
)
from pipeline.core.outcomes import COMPLETE, STUDY_FINISHED, STUDY_INTERRUPTED
from pipeline.core.progress import SearchProgress
from pipeline.core.signals import interrupt_on_signals
from pipeline.data.splits import DataSplits, load_mnist, split_train_val
from pipeline.search.orphans import reconcile
from pipeline.search.request import SearchRequest
from pipeline.search.trial import TrialRunner
from pipeline.study import optuna_private
from pipeline.study.locking import StudyLock, study_lock
from pipeline.study.space import SearchSpace, load_space
from pipeline.study.storage import open_storage, redact, tune_sqlite_for_search
from pipeline.study.studies import create_or_resume
from pipeline.study.trials import TrialCounts, best_trial, count_trials, requeue
from pipeline.track.runs import RunLog, Tracker, ensure_reachable, library_versions
from pipeline.train.plan import choose_device


class SearchInterrupted(PipelineError):
    """Ctrl-C or SIGTERM: the running trial was failed and queued again; the search can resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class SearchOutcome:
    study: optuna.Study
    parent_run_id: str
    experiment_id: str
    report_files: list[Path] = field(default_factory=list)
    stopped_by: str = "target"  # "target", "timeout" or "grid"


def choose_space(space: SearchSpace, *, explicit: bool, device_name: str, echo) -> SearchSpace:
    """``space``, or its CPU fallback when it was not asked for by name and there is no GPU."""
    return space_for(space, explicit=explicit, has_gpu=choose_device(device_name).type != "cpu",
                     echo=echo)


def space_for(space: SearchSpace, *, explicit: bool, has_gpu: bool, echo) -> SearchSpace:
    """``space``, or its CPU fallback when it was not asked for by name and there is no GPU
    where the trials run."""
    if space.cpu_fallback and not has_gpu:
        fallback = load_space(space.path.parent / space.cpu_fallback)
        if not explicit:
            echo(f"No GPU found: searching the CPU-sized space {fallback.path} instead of "
                 f"{space.path}.")
            echo(f"  ({fallback.description}) Pass --space {space.name} to search the full "
                 "space on this CPU anyway; it is sized for a GPU and will be slow.")
            return fallback
        echo(f"Note: {space.path} is sized for a GPU and this search runs on the CPU; "
             f"expect it to be slow ({fallback.path} is the CPU-sized space).")
    return space


def show_best(progress: SearchProgress, study: optuna.Study) -> None:
    best = best_trial(study)
    if best is not None:
        progress.set_best(best.value, best.number)


def show_finished(progress: SearchProgress, study: optuna.Study,
                  trial: optuna.trial.FrozenTrial) -> None:
    """A finished trial on the progress view: its state, value, reason, and the best so far."""
    show_best(progress, study)
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    note = trial.user_attrs.get(ATTR_REASON, "") if trial.state != TrialState.COMPLETE else ""
    progress.trial_finished(trial.number, trial.state.name.lower(), trial.value,
                            count_trials(study), seconds, note=note)


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


def open_search(req: SearchRequest, *, echo=print) -> Session:
    """Create or resume the study, its experiment and parent run; close what dead workers left."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what happened
    ensure_reachable(req.tracking_uri)  # before the study's storage is written to
    storage = open_storage(req.storage_url, heartbeat_interval=req.heartbeat_interval,
                           grace_period=req.grace_period)
    tune_sqlite_for_search(storage)
    lock = study_lock(storage, req.storage_url, req.study_name)
    # Two workers starting together must not make two parent runs, nor both set up a fresh
    # MLflow database (its client migrates the schema as soon as it is made).
    with lock:
        tracker = Tracker(req.tracking_uri)
        study, created = create_or_resume(storage, req.study_name, req.space, req.seed,
                                          force=req.force)
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
    return Session(req, study, tracker, experiment_id, parent, lock, counts)


def load_search_data(session: Session, *, echo=print) -> DataSplits:
    space = session.req.space
    mnist = load_mnist(session.req.data_dir, log=echo)
    data = split_train_val(mnist, space.data)
    session.study.set_user_attr(ATTR_DATA_CHECKSUM, data.checksum)
    session.parent.log_params({"data_checksum": data.checksum, "train_size": len(data.train)})
    return data


class ClaimKind(Enum):
    START = "start"  # a trial was created (or a queued retry taken) for this worker to run
    WAIT = "wait"  # no room, but other workers' trials still run: one may die and come back
    GRID_EXHAUSTED = "grid"  # a grid sampler has run every combination
    TARGET_REACHED = "target"  # the study holds its target number of finished trials


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    trial: optuna.Trial | None = None  # for START


def claim_next_trial(session: Session) -> Claim:
    """Count the study's trials and, if there is room under its target, create the next one.

    The study lock is held for this block and nowhere else: every worker of a study (on this
    machine or another) counts and creates under it, so none creates a trial beyond the target.
    The trial exists (RUNNING, or a queued retry taken) when the lock is let go; its
    hyperparameters are sampled afterwards, outside the lock.
    """
    study, target = session.study, session.req.trials
    with session.lock:
        counts = count_trials(study)
        exhausted = getattr(study.sampler, "is_exhausted", None)
        if exhausted is not None and exhausted(study):
            return Claim(ClaimKind.GRID_EXHAUSTED)
        if counts.should_start(target):
            with warnings.catch_warnings():
                # Optuna warns that heartbeats go with study.optimize; run_claimed beats them.
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                return Claim(ClaimKind.START, study.ask())
        if counts.finished >= target or counts.running == 0:
            return Claim(ClaimKind.TARGET_REACHED)
    return Claim(ClaimKind.WAIT)


def run_claimed(study: optuna.Study, trial: optuna.Trial,
                runner: TrialRunner) -> optuna.trial.FrozenTrial:
    """Run a claimed trial, beating its heartbeat (database storages), and tell Optuna how it
    ended. Ctrl-C fails the trial and queues its parameters to run again."""
    with optuna_private.heartbeat(study, trial):
        try:
            result = runner(trial)
        except KeyboardInterrupt:
            failed = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            requeue(study, failed)
            raise
    return study.tell(trial, result.value if result.outcome is COMPLETE else None,
                      state=TrialState[result.outcome.trial_state])


def run_trials(session: Session, data: DataSplits, progress: SearchProgress,
               should_stop: Callable[[], bool] | None = None) -> str:
    """Claim and run trials until the study holds its target; returns why it stopped.
    ``should_stop`` is polled between trials and after every epoch: True stops the search as
    Ctrl-C does (a Ray worker passes Ray's cancellation flag; a process gets signals)."""
    req, study = session.req, session.study
    runner = TrialRunner(space=req.space, data=data, tracker=session.tracker,
                         experiment_id=session.experiment_id,
                         parent_run_id=session.parent.run_id, study_name=req.study_name,
                         device=str(choose_device(req.device)), seed=req.seed,
                         progress=progress, should_stop=should_stop)
    show_best(progress, study)
    deadline = time.monotonic() + req.timeout if req.timeout else None
    poll = min(5.0, float(req.heartbeat_interval or 5))
    while True:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        reconcile(study, session.tracker, session.experiment_id)
        claim = claim_next_trial(session)
        if claim.kind is ClaimKind.WAIT:
            time.sleep(poll)
            continue
        if claim.kind is not ClaimKind.START:
            return claim.kind.value
        show_finished(progress, study, run_claimed(study, claim.trial, runner))


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
        files = write_report(study, req.report_dir, tracker=session.tracker,
                             run_id=session.parent.run_id, echo=echo)
    else:
        echo("")
        echo(top_trials_table(study))
    if final.running == 0:
        session.parent.close(STUDY_FINISHED)
    # else other workers still run trials of this study; the last one to finish closes it.
    return files


def interrupted(session: Session, signum: int) -> SearchInterrupted:
    session.parent.close(STUDY_INTERRUPTED)
    name = signal.Signals(signum).name
    return SearchInterrupted(
        f"{name}: stopped; the running trial was marked failed and queued to run again; run "
        f"the same `pipeline search` to resume ({count_trials(session.study).line()})", signum)


def run_search(req: SearchRequest, *, echo=print,
               should_stop: Callable[[], bool] | None = None) -> SearchOutcome:
    """One worker, start to finish: open, load data, run trials, report (see run_trials for
    ``should_stop``)."""
    if req.threads:
        torch.set_num_threads(req.threads)
    say = (lambda line: None) if req.quiet else echo
    session = open_search(req, echo=say)
    data = load_search_data(session, echo=say)
    say(f"space {req.space.path} ({req.space.fingerprint}); {len(data.train):,} training / "
        f"{len(data.val):,} validation images; device {choose_device(req.device)}")
    progress = SearchProgress(req.trials, session.counts_at_start.finished, req.space.metric,
                              echo=say, enabled=not req.quiet)
    with interrupt_on_signals() as received:
        try:
            stopped_by = run_trials(session, data, progress, should_stop)
        except KeyboardInterrupt:
            raise interrupted(session, received.get("signal", signal.SIGINT)) from None
        finally:
            progress.close()
    outcome = SearchOutcome(session.study, session.parent.run_id, session.experiment_id,
                            stopped_by=stopped_by)
    if not req.quiet:  # a worker of a coordinated search leaves the report to the coordinator
        outcome.report_files = close_search(session, echo=echo, stopped_by=stopped_by)
    return outcome


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
