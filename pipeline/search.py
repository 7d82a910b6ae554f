"""`pipeline search`: an Optuna study over a search-space file, every trial tracked in MLflow.

The story of one search: open or resume the study (refusing a changed space), close what dead
workers left behind, load the data once, then run trials until the study holds its target number
of finished trials. Each trial samples its hyperparameters, opens its MLflow run, trains with
per-epoch reports so the median pruner can stop it, and closes its run with a status that matches
the trial's. Ctrl-C and SIGTERM stop cleanly; the next search resumes.
"""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from pipeline.data import DataSplits, load_mnist, split_train_val
from pipeline.diagnostics import diagnose
from pipeline.errors import PipelineError, first_line
from pipeline.hparams import make_config
from pipeline.liveness import worker_id
from pipeline.locking import StudyLock, study_lock
from pipeline.model import build_model, parameter_count
from pipeline.progress import SearchProgress, format_value
from pipeline.reconcile import reconcile
from pipeline.space import SearchSpace, load_space
from pipeline.studies import (
    ATTR_DATA_CHECKSUM,
    ATTR_EXPERIMENT,
    ATTR_HEARTBEAT,
    ATTR_INTERRUPTED,
    ATTR_MODEL_URI,
    ATTR_OVERHEAD_SECONDS,
    ATTR_PARENT_RUN,
    ATTR_PRUNED_EPOCH,
    ATTR_REASON,
    ATTR_RUN_ID,
    ATTR_SAMPLER,
    ATTR_TARGET,
    ATTR_TRAIN_SECONDS,
    ATTR_VAL_ACCURACY,
    ATTR_WORKER,
    TrialCounts,
    best_trial,
    count_trials,
    create_or_resume,
    open_storage,
    redact,
    requeue,
    share_between_processes,
)
from pipeline.tracking import (
    TAG_PRUNED_EPOCH,
    TAG_REASON,
    TAG_RETRY_OF,
    TAG_ROLE,
    TAG_SAMPLED,
    TAG_STATE,
    TAG_STORAGE,
    TAG_STUDY,
    TAG_TRIAL,
    TAG_TRIAL_ID,
    TAG_WORKER,
    RunLog,
    Tracker,
    ensure_reachable,
    library_versions,
)
from pipeline.train import EpochStats, NonFiniteLossError, choose_device, fit, plan_execution


class TrialFailed(Exception):
    """A failure of one trial (out of memory) that must not stop the study."""


class SearchInterrupted(PipelineError):
    """Ctrl-C or SIGTERM: the running trial was failed and queued again; the search can resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class SearchRequest:
    space: SearchSpace
    trials: int  # the study's target number of finished trials
    study_name: str
    storage_url: str
    seed: int
    device: str = "auto"
    timeout: float | None = None  # seconds; no new trial starts after it
    force: bool = False
    data_dir: Path | None = None
    report_dir: Path = Path("reports")
    report: bool = True
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    workers: int = 1  # processes sharing this study (this one included)
    threads: int | None = None  # torch CPU threads for this process
    quiet: bool = False  # a worker of a coordinated search: errors only


@dataclass
class SearchOutcome:
    study: optuna.Study
    parent_run_id: str
    experiment_id: str
    report_files: list[Path] = field(default_factory=list)
    stopped_by: str = "target"  # "target", "timeout" or "grid"


def choose_space(space: SearchSpace, *, explicit: bool, device_name: str, echo) -> SearchSpace:
    """``space``, or its CPU fallback when it was not asked for by name and there is no GPU."""
    if space.cpu_fallback and choose_device(device_name).type == "cpu":
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


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text
                                                or "can't allocate memory" in text)


@contextmanager
def interrupt_on_signals() -> Iterator[dict]:
    """SIGTERM behaves like Ctrl-C (KeyboardInterrupt), so both take the same clean path."""
    received: dict = {}

    def handler(signum, frame):
        received["signal"] = signum
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class TrialObjective:
    """One trial: sample, open its run, train with pruning, log what it learned, close the run."""

    def __init__(self, *, space: SearchSpace, data: DataSplits, tracker: Tracker,
                 experiment_id: str, parent_run_id: str, study_name: str, device: str,
                 seed: int, progress: SearchProgress,
                 on_start: Callable[[], None] = lambda: None) -> None:
        self.space = space
        self.data = data  # on the CPU, for diagnostics and the model's input example
        # On the training device once for the whole search, not copied again for every trial.
        self.device_data = data.to(choose_device(device))
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self.device = device
        self.seed = seed
        self.progress = progress
        self.on_start = on_start
        self.versions = library_versions()

    def __call__(self, trial: optuna.Trial) -> float:
        self.on_start()  # the trial exists now: other workers may count it and go on
        start = time.perf_counter()
        worker = worker_id()
        trial.set_user_attr(ATTR_WORKER, worker)
        sampled = self.space.suggest(trial)
        config = make_config({**self.space.hyperparameters(sampled), "device": self.device,
                              "seed": self.seed + trial.number})
        tags = {TAG_ROLE: "trial", TAG_STUDY: self.study_name, TAG_TRIAL: trial.number,
                TAG_TRIAL_ID: trial._trial_id, TAG_SAMPLED: ",".join(sampled), TAG_WORKER: worker}
        retry_of = trial.study._storage.get_trial_system_attrs(trial._trial_id).get(
            "failed_trial")
        if retry_of is not None:
            tags[TAG_RETRY_OF] = retry_of
        run = self.tracker.start_run(self.experiment_id, f"trial-{trial.number:04d}",
                                     parent_run_id=self.parent_run_id, tags=tags)
        trial.set_user_attr(ATTR_RUN_ID, run.run_id)
        self.progress.trial_started(trial.number, config.train.epochs)
        try:
            run.log_params({**config.flat(), **sampled, "study": self.study_name,
                            "trial_number": trial.number,
                            "data_checksum": self.data.checksum,
                            "space_fingerprint": self.space.fingerprint,
                            "space_file": self.space.path.name, **self.versions})
            model = build_model(config.model, seed=config.train.seed)
            plan = plan_execution(model, config.train)
            run.log_params({"parameter_count": parameter_count(model), **plan.params()})
            result = fit(model, self.device_data, config.train,
                         on_epoch_end=self._epoch_hook(trial, run))
            value = self._metric(result.final)
            train_seconds = sum(s.seconds for s in result.history)
            diag = diagnose(self.data.val.labels, result.val_predictions)
            run.log_diagnostics(
                diag, self.data.val.images, self.data.val.labels, result.val_predictions,
                title=f"trial {trial.number}: validation accuracy {result.final.val_accuracy:.2%}")
            model_uri = run.log_model(model, config.model, self.data.val.images)
            trial.set_user_attr(ATTR_MODEL_URI, model_uri)
            trial.set_user_attr(ATTR_VAL_ACCURACY, result.final.val_accuracy)
            trial.set_user_attr(ATTR_TRAIN_SECONDS, round(train_seconds, 3))
            overhead = time.perf_counter() - start - train_seconds
            run.log_metrics({"train_seconds": train_seconds, "overhead_seconds": overhead,
                             "mlflow_seconds": run.seconds_logging})
            trial.set_user_attr(ATTR_OVERHEAD_SECONDS, round(overhead, 3))
            run.finish("FINISHED", {TAG_STATE: "complete"})
            return value
        except optuna.TrialPruned as e:
            trial.set_user_attr(ATTR_REASON, str(e))
            run.finish("KILLED", {TAG_STATE: "pruned", TAG_REASON: str(e),
                                  TAG_PRUNED_EPOCH: trial.user_attrs.get(ATTR_PRUNED_EPOCH, "")})
            raise
        except NonFiniteLossError as e:
            # A diverging trial is pruned, not failed: its hyperparameters were just bad.
            reason = f"diverged: {e}"
            trial.set_user_attr(ATTR_REASON, reason)
            trial.set_user_attr(ATTR_PRUNED_EPOCH, e.epoch)
            run.finish("KILLED", {TAG_STATE: "pruned", TAG_REASON: reason,
                                  TAG_PRUNED_EPOCH: e.epoch})
            raise optuna.TrialPruned(reason) from None
        except KeyboardInterrupt:
            reason = "interrupted (Ctrl-C or SIGTERM); queued to run again"
            trial.set_user_attr(ATTR_REASON, reason)
            trial.set_user_attr(ATTR_INTERRUPTED, True)
            run.finish("KILLED", {TAG_STATE: "interrupted", TAG_REASON: reason})
            requeue(trial.study, trial.study._storage.get_trial(trial._trial_id))
            raise
        except Exception as e:
            reason = type(e).__name__ + (f": {first_line(e, limit=500)}" if str(e).strip() else "")
            trial.set_user_attr(ATTR_REASON, reason)
            run.finish("FAILED", {TAG_STATE: "failed", TAG_REASON: reason})
            if is_out_of_memory(e):
                _release_memory()
                raise TrialFailed(f"out of memory: {reason}") from None
            raise

    def _metric(self, stats: EpochStats) -> float:
        return stats.val_accuracy if self.space.metric == "val_accuracy" else stats.val_loss

    def _epoch_hook(self, trial: optuna.Trial, run: RunLog) -> Callable[[EpochStats], None]:
        def on_epoch_end(stats: EpochStats) -> None:
            run.log_epoch(stats)
            value = self._metric(stats)
            trial.report(value, stats.epoch)
            self.progress.epoch_done(trial.number, stats)
            if trial.should_prune():
                trial.set_user_attr(ATTR_PRUNED_EPOCH, stats.epoch)
                raise optuna.TrialPruned(
                    f"pruned after epoch {stats.epoch}: {self.space.metric} "
                    f"{format_value(self.space.metric, value)} is below the median of earlier "
                    "trials at that epoch")
        return on_epoch_end


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
    ensure_reachable()  # before the study's storage is written to
    storage = open_storage(req.storage_url, heartbeat_interval=req.heartbeat_interval,
                           grace_period=req.grace_period)
    if req.workers > 1:
        share_between_processes(storage)
    lock = study_lock(storage, req.storage_url, req.study_name)
    # Two workers starting together must not make two parent runs, nor both set up a fresh
    # MLflow database (its client migrates the schema as soon as it is made).
    lock.acquire()
    try:
        tracker = Tracker()
        study, created = create_or_resume(storage, req.study_name, req.space, req.seed,
                                          force=req.force)
        study.set_user_attr(ATTR_TARGET, req.trials)
        if is_heartbeat_enabled(storage):
            study.set_user_attr(ATTR_HEARTBEAT, {
                "interval": storage.get_heartbeat_interval(),
                "grace": storage.grace_period})
        experiment_id = tracker.experiment(
            req.study_name,
            tags={TAG_STUDY: req.study_name, TAG_STORAGE: redact(req.storage_url)})
        study.set_user_attr(ATTR_EXPERIMENT, experiment_id)
        parent = _open_parent_run(study, tracker, experiment_id, req)
    finally:
        lock.release()
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
    data = split_train_val(mnist, val_size=space.data.val_size, split_seed=space.data.split_seed,
                           train_subset=space.data.train_subset)
    session.study.set_user_attr(ATTR_DATA_CHECKSUM, data.checksum)
    session.parent.log_params({"data_checksum": data.checksum, "train_size": len(data.train)})
    return data


def run_trials(session: Session, data: DataSplits, progress: SearchProgress) -> str:
    """Run trials until the study holds its target; returns why it stopped.

    Under the study lock a worker counts the trials and, if there is room, creates its next one;
    the objective lets go of the lock as soon as the trial exists. When the only trials left to
    finish belong to other workers, it waits and looks again: one of them may die, and its trial
    comes back as a retry that this worker must pick up.
    """
    req, study = session.req, session.study
    device = str(choose_device(req.device))
    objective = TrialObjective(space=req.space, data=data, tracker=session.tracker,
                               experiment_id=session.experiment_id,
                               parent_run_id=session.parent.run_id, study_name=req.study_name,
                               device=device, seed=req.seed, progress=progress,
                               on_start=session.lock.release)
    show_best(progress, study)
    deadline = time.monotonic() + req.timeout if req.timeout else None
    poll = min(5.0, float(req.heartbeat_interval or 5))

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        show_finished(progress, study, trial)

    while True:
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        reconcile(study, session.tracker, session.experiment_id)
        session.lock.acquire()
        start = False
        try:
            counts = count_trials(study)
            exhausted = getattr(study.sampler, "is_exhausted", None)
            if exhausted is not None and exhausted(study):
                return "grid"
            if counts.should_start(req.trials):
                start = True
            elif counts.finished >= req.trials or counts.running == 0:
                return "target"
        finally:
            if not start:
                session.lock.release()
        if not start:
            time.sleep(poll)  # other workers' trials are still running
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,),
                           callbacks=[after_trial], gc_after_trial=False)
        finally:
            session.lock.release()  # if the objective never ran


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
        session.parent.set_tags({"pipeline.best_trial": best.number,
                                 "pipeline.best_run_id": best.user_attrs.get(ATTR_RUN_ID, "")})
    session.parent.log_metrics(summary)
    if stopped_by == "timeout":
        echo(f"timeout: no new trial started after {req.timeout:g}s")
    if stopped_by == "grid":
        echo("the grid is complete: every combination has run")
    from pipeline.report import top_trials_table, write_report

    files: list[Path] = []
    if req.report:
        files = write_report(study, req.report_dir, tracker=session.tracker,
                             run_id=session.parent.run_id, echo=echo)
    else:
        echo("")
        echo(top_trials_table(study))
    if final.running == 0:
        session.parent.finish("FINISHED", {TAG_STATE: "finished"})
    # else other workers still run trials of this study; the last one to finish closes it.
    session.lock.close()
    return files


def interrupted(session: Session, signum: int) -> SearchInterrupted:
    session.parent.finish("KILLED", {TAG_STATE: "interrupted"})
    session.lock.close()
    name = signal.Signals(signum).name
    return SearchInterrupted(
        f"{name}: stopped; the running trial was marked failed and queued to run again; run "
        f"the same `pipeline search` to resume ({count_trials(session.study).line()})", signum)


def run_search(req: SearchRequest, *, echo=print) -> SearchOutcome:
    """One worker, start to finish: open, load data, run trials, report."""
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
            stopped_by = run_trials(session, data, progress)
        except KeyboardInterrupt:
            raise interrupted(session, received.get("signal", signal.SIGINT)) from None
        finally:
            progress.close()
    outcome = SearchOutcome(session.study, session.parent.run_id, session.experiment_id,
                            stopped_by=stopped_by)
    if req.quiet:
        session.lock.close()  # a worker of a coordinated search: the coordinator reports
        return outcome
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
