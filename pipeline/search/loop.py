"""`pipeline search`: an Optuna study over a search-space file, every trial tracked in MLflow.

The story of one search: open or resume the study (session), load the data once, then claim and
run trials until the study holds its target number of finished trials. A trial is claimed under
the study lock (claim) and run outside it (trial); its outcome goes to Optuna and MLflow through
one table (core.outcomes). Ctrl-C and SIGTERM stop cleanly; the next search resumes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import optuna
import torch
from optuna.trial import TrialState

from pipeline.core.errors import first_line
from pipeline.core.faults import DISK, TRACKING, fault_of
from pipeline.core.keys import ATTR_OUTCOME, ATTR_REASON
from pipeline.core.outcomes import DISK_FULL, INFRASTRUCTURE
from pipeline.core.progress import SearchProgress
from pipeline.core.signals import interrupt_on_signals
from pipeline.data.splits import DataSplits
from pipeline.search.claim import ClaimKind, claim_next_trial, run_claimed
from pipeline.search.orphans import reconcile
from pipeline.search.outage import (
    DiskFull,
    OutageTooLong,
    StoreFailing,
    require_room,
    stop_if_failing,
)
from pipeline.search.request import SearchRequest
from pipeline.search.session import (
    Session,
    close_search,
    interrupted,
    load_search_data,
    open_search,
    stop_now,
)
from pipeline.search.trial import StudyRuns, TrialRunner
from pipeline.study.liveness import worker_id
from pipeline.study.space import SearchSpace, load_space
from pipeline.study.trials import best_trial, count_trials
from pipeline.train.plan import choose_device


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


def run_trials(session: Session, data: DataSplits, progress: SearchProgress,
               should_stop: Callable[[], bool] | None = None) -> str:
    """Claim and run trials until the study holds its target; returns why it stopped.
    ``should_stop`` is polled between trials and after every epoch: True stops the search as
    Ctrl-C does (a Ray worker passes Ray's cancellation flag; a process gets signals)."""
    req, study, waiter = session.req, session.study, session.waiter
    runs = StudyRuns(session.tracker, session.experiment_id, session.parent.run_id, waiter)
    runner = TrialRunner(req, data, runs, progress, should_stop)
    waiter.retrying(show_best, progress, study)
    deadline = time.monotonic() + req.timeout if req.timeout else None
    poll = min(5.0, float(req.heartbeat_interval or 5))
    worker = worker_id()
    writes_to, faults = _local_folders(session), _FaultsInARow()
    while True:
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        waiter.check(TRACKING)  # no trial starts while the tracking server is down
        waiter.retrying(reconcile, study, session.tracker, session.experiment_id)
        claim = waiter.retrying(claim_next_trial, study, req.trials, session.lock, worker)
        if claim.kind is ClaimKind.WAIT:
            time.sleep(poll)
            continue
        if claim.kind is not ClaimKind.START:
            return claim.kind.value
        finished = run_claimed(study, claim.trial, runner, waiter)
        waiter.retrying(show_finished, progress, study, finished)
        faults.count(finished.user_attrs.get(ATTR_OUTCOME))
        if faults.disk_full:  # a disk that stays full stops the search
            require_room(writes_to, tries=faults.disk_full)
        if faults.infrastructure:  # so does a server that answers but refuses every trial
            names = ([waiter.refusing] if waiter.refusing
                     else [s.name for s in waiter.stores.values()])
            stop_if_failing(names, faults.infrastructure,
                            first_line(finished.user_attrs.get(ATTR_REASON, "")))


@dataclass
class _FaultsInARow:
    """How many trials in a row ended on a full disk, or on a store's error."""

    disk_full: int = 0
    infrastructure: int = 0

    def count(self, outcome: str | None) -> None:
        self.disk_full = self.disk_full + 1 if outcome == DISK_FULL.name else 0
        self.infrastructure = self.infrastructure + 1 if outcome == INFRASTRUCTURE.name else 0


def _local_folders(session: Session) -> list[Path]:
    """The folders of this machine a trial writes to: the working folder (stores in files,
    reports) and a local MLflow artifact root."""
    folders = [Path.cwd()]
    location = session.tracker.client.get_experiment(session.experiment_id).artifact_location
    if urlparse(location).scheme in ("", "file"):
        folder = Path(urlparse(location).path)
        while not folder.exists():  # made as the first run writes: its parent's disk, then
            folder = folder.parent
        folders.append(folder)
    return folders


def run_search(req: SearchRequest, *, echo=print,
               should_stop: Callable[[], bool] | None = None) -> SearchOutcome:
    """One worker, start to finish: open, load data, run trials, report (see run_trials for
    ``should_stop``)."""
    if req.threads:
        torch.set_num_threads(req.threads)
    say = (lambda line: None) if req.quiet else echo
    session = open_search(req, echo=say)
    data = session.waiter.retrying(load_search_data, session, echo=say)
    say(f"space {req.space.path} ({req.space.fingerprint}); {len(data.train):,} training / "
        f"{len(data.val):,} validation images; device {choose_device(req.device)}")
    progress = SearchProgress(req.trials, session.counts_at_start.finished, req.space.metric,
                              echo=say, enabled=not req.quiet)
    with interrupt_on_signals() as received:
        try:
            stopped_by = run_trials(session, data, progress, should_stop)
        except KeyboardInterrupt:
            raise interrupted(session, received.get("signal", signal.SIGINT)) from None
        except (OutageTooLong, StoreFailing, DiskFull):
            stop_now(session)
            raise
        except Exception as e:
            fault = fault_of(e)
            if fault is None or fault.kind != DISK:
                raise
            stop_now(session)
            raise DiskFull(f"no space left on device ({first_line(e)}); the search stopped: "
                           "free some space and run the same command, and it resumes") from None
        finally:
            progress.close()
    outcome = SearchOutcome(session.study, session.parent.run_id, session.experiment_id,
                            stopped_by=stopped_by)
    if not req.quiet:  # a worker of a coordinated search leaves the report to the coordinator
        outcome.report_files = session.waiter.retrying(close_search, session, echo=echo,
                                                       stopped_by=stopped_by)
    return outcome


