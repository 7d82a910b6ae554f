"""One search trial: sample its hyperparameters, open its MLflow run, train with reports so the
pruner can stop it, and record how it ended (core.outcomes) on the trial and its run.

The search loop (search.loop) creates the trial under the study lock and tells Optuna the
outcome; this module runs what happens in between.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError

from pipeline.core.errors import NonFiniteLossError
from pipeline.core.faults import STORAGE, fault_of
from pipeline.core.hparams import make_config
from pipeline.core.keys import (
    ATTR_COST,
    ATTR_EPOCHS,
    ATTR_MODEL_URI,
    ATTR_OUTCOME,
    ATTR_OVERHEAD_SECONDS,
    ATTR_PRUNED_EPOCH,
    ATTR_REASON,
    ATTR_RUN_ID,
    ATTR_SECONDS,
    ATTR_TRAIN_SECONDS,
    ATTR_VAL_ACCURACY,
    SYS_FAILED_TRIAL,
    TAG_RETRY_OF,
    TAG_ROLE,
    TAG_SAMPLED,
    TAG_STUDY,
    TAG_TRIAL,
    TAG_TRIAL_ID,
    TAG_WORKER,
)
from pipeline.core.metric import format_value, value_of
from pipeline.core.outcomes import (
    COMPLETE,
    INFRASTRUCTURE,
    OUT_OF_MEMORY,
    Outcome,
    for_finished_trial,
    outcome_of,
    reason_for,
)
from pipeline.core.progress import SearchProgress
from pipeline.core.timings import Stopwatch, overhead
from pipeline.data.splits import DataSplits
from pipeline.search.outage import OutageTooLong, Waiter
from pipeline.search.request import SearchRequest
from pipeline.study import optuna_private
from pipeline.study.heartbeats import storage_failed
from pipeline.study.liveness import worker_id
from pipeline.study.space import CONSTRAINTS
from pipeline.track.runs import RunLog, Tracker
from pipeline.track.tracked_training import TrackedFit, TrainingJob, tracked_fit
from pipeline.train.cost import Cost
from pipeline.train.plan import choose_device
from pipeline.train.trainer import EpochStats, Hooks, Report, Reporting


@dataclass(frozen=True)
class TrialResult:
    outcome: Outcome
    value: float | None  # the study's metric, for a complete trial
    # Failed under this worker by another process, which judged its heartbeat stale and queued
    # it again (search.orphans): Optuna already has its outcome, and its retry its parameters.
    taken_over: bool = False


# Why a trial's run ends when its trial was failed under it (see TrialResult.taken_over).
TAKEN_OVER = ("failed while it ran by another process that took its worker for dead (no "
              "heartbeat within the grace period); this run of it is discarded, and its "
              "parameters run again as far as the study's retries allow")


@dataclass(frozen=True)
class StudyRuns:
    """Where a study's trials are recorded: its MLflow experiment, under its parent run."""

    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    # Rides out an outage of the tracking server or the study's storage (search.outage); None:
    # an unreachable store is the trial's end.
    waiter: Waiter | None = None

    def store(self, call: Callable, *args, **kwargs):
        """A call to a store, waiting out an outage when there is a waiter."""
        if self.waiter is None:
            return call(*args, **kwargs)
        return self.waiter.retrying(call, *args, **kwargs)


@dataclass
class _Attempt:
    """One call of the runner: the trial, where its time goes, and how far it got."""

    trial: optuna.Trial
    watch: Stopwatch = field(default_factory=Stopwatch)  # core.timings
    start: float = field(default_factory=time.perf_counter)
    epochs_done: float = 0  # as far as its last report
    sampled: dict = field(default_factory=dict)
    # Reports that met an unreachable storage: (value, step), sent once it answers. Meanwhile
    # the trial trains on, unpruned: a pruner that cannot be asked keeps it.
    held_reports: list[tuple[float, int]] = field(default_factory=list)


class TrialRunner:
    """Runs trials of one study in this process, against one MLflow experiment."""

    def __init__(self, req: SearchRequest, data: DataSplits, runs: StudyRuns,
                 progress: SearchProgress, should_stop: Callable[[], bool] | None = None) -> None:
        self.req, self.space, self.runs = req, req.space, runs
        self.device = str(choose_device(req.device))
        self.data = data  # on the CPU, for diagnostics and the model's input example
        # On the training device once for the whole search, not copied again for every trial.
        self.device_data = data.to(self.device)
        self.progress = progress
        self.should_stop = should_stop
        _import_what_trials_use()

    def __call__(self, trial: optuna.Trial) -> TrialResult:
        """Run ``trial`` to its outcome. Ctrl-C (KeyboardInterrupt) is recorded, then re-raised:
        the caller fails the trial and queues it again."""
        attempt = _Attempt(trial)  # claimed for this worker (search.claim)
        # The claim (created, first heartbeat, worker named, under the study lock) is part of the
        # trial's wall time in the study, and all of it is Optuna's.
        if trial.datetime_start is not None:
            claimed = max(0.0, (datetime.now() - trial.datetime_start).total_seconds())
            attempt.watch.add("optuna", claimed)
            attempt.start -= claimed
        with attempt.watch("optuna"):
            attempt.sampled = self.runs.store(self.space.suggest, trial)
        with attempt.watch("mlflow_params"):
            run = self._open_run(attempt, worker_id())
        fitted, error = self._train(attempt, run)
        outcome = outcome_of(error)
        if isinstance(error, OutageTooLong):  # the stores are down: record what can be, go
            _record_without_waiting(attempt, error)
            raise error
        if outcome is OUT_OF_MEMORY:
            _release_memory()
        try:
            if isinstance(error, UpdateFinishedTrialError) or self._taken_over(attempt):
                raise UpdateFinishedTrialError
            self._record(attempt, run, outcome, error, fitted)
        except UpdateFinishedTrialError:  # failed under it (TrialResult.taken_over)
            result = self._discard(attempt, run)
        else:
            value = (value_of(self.space.metric, fitted.result.final) if outcome is COMPLETE
                     else None)
            result = TrialResult(outcome, value)
        if isinstance(error, KeyboardInterrupt):  # Ctrl-C stops the search all the same
            raise error
        return result

    def _taken_over(self, attempt: _Attempt) -> bool:
        """Whether another process has failed this trial while it ran (TrialResult)."""
        with attempt.watch("optuna"):
            trial = self.runs.store(optuna_private.frozen_trial, attempt.trial)
        return trial.state.is_finished()

    def _discard(self, attempt: _Attempt, run: RunLog) -> TrialResult:
        """A trial failed under this worker: its run closes as its trial ended, the outcome the
        other process gave it, and nothing more is written to the trial (it has finished)."""
        trial = self.runs.store(optuna_private.frozen_trial, attempt.trial)
        outcome = for_finished_trial(trial.state.name, trial.user_attrs.get(ATTR_OUTCOME))
        run.close(outcome, TAKEN_OVER)
        self.progress.note(f"trial {trial.number}: {TAKEN_OVER}")
        return TrialResult(outcome, None, taken_over=True)

    def _open_run(self, attempt: _Attempt, worker: str) -> RunLog:
        trial = attempt.trial
        tags = {TAG_ROLE: "trial", TAG_STUDY: self.req.study_name, TAG_TRIAL: trial.number,
                TAG_TRIAL_ID: optuna_private.trial_id(trial),
                TAG_SAMPLED: ",".join(attempt.sampled), TAG_WORKER: worker}
        retry_of = optuna_private.system_attrs(trial).get(SYS_FAILED_TRIAL)
        if retry_of is not None:
            tags[TAG_RETRY_OF] = retry_of
        run = self.runs.store(self.runs.tracker.start_run, self.runs.experiment_id,
                              f"trial-{trial.number:04d}",
                              parent_run_id=self.runs.parent_run_id, tags=tags)
        self.runs.store(trial.set_user_attr, ATTR_RUN_ID, run.run_id)
        return run

    def _train(self, attempt: _Attempt, run: RunLog
               ) -> tuple[TrackedFit | None, BaseException | None]:
        """Train the sampled configuration; every way this can end is an outcome, so the
        exception that ended it is returned, not raised."""
        number = attempt.trial.number
        try:
            config = make_config({**self.space.hyperparameters(attempt.sampled),
                                  "device": self.device, "seed": self.req.seed + number})
            self.progress.trial_started(number, config.train.epochs)
            job = TrainingJob(config, self.data, device_data=self.device_data,
                              params={**attempt.sampled, "study": self.req.study_name,
                                      "trial_number": number,
                                      "space_fingerprint": self.space.fingerprint,
                                      "space_file": self.space.path.name},
                              label=f"trial {number}: ",
                              on_cost=lambda cost: self._cost_measured(attempt, cost))
            hooks = Hooks(on_epoch_end=lambda stats: self._epoch_done(attempt, stats),
                          on_report=lambda report: self._report(attempt, report))
            reporting = Reporting(self.space.reports_per_epoch, self.space.report_val_size)
            return tracked_fit(run, job, hooks, reporting=reporting, watch=attempt.watch), None
        except (Exception, KeyboardInterrupt) as e:  # every way a trial can end is an outcome
            return None, e

    def _cost_measured(self, attempt: _Attempt, cost: Cost) -> None:
        """What the network costs to run, on the trial; with the space's constraints, each
        recorded with Optuna's constraint API (the sampler learns where the feasible networks
        are), and a network over any of them is pruned before it trains."""
        trial, over = attempt.trial, []
        with attempt.watch("optuna"):
            self.runs.store(trial.set_user_attr, ATTR_COST, cost.attribute())
            for key, top in self.space.constraints.items():
                value = getattr(cost, CONSTRAINTS[key])
                self.runs.store(trial.set_constraint, key, value - top)  # <= 0: feasible
                if value > top:
                    over.append(f"{key} {_amount(key, value)} > {_amount(key, top)}")
        if over:
            raise optuna.TrialPruned(f"pruned before training: over the space's constraints "
                                     f"({', '.join(over)})")

    def _epoch_done(self, attempt: _Attempt, stats: EpochStats) -> None:
        self.progress.epoch_done(attempt.trial.number, stats)
        if self.should_stop is not None and self.should_stop():
            raise KeyboardInterrupt  # the same clean path as Ctrl-C

    def _report(self, attempt: _Attempt, report: Report) -> None:
        """Report a validation measurement to the pruner; stop the trial if it says so. With a
        waiter, a report that meets an unreachable storage is held and the trial goes on."""
        epochs = int(report.epochs) if report.epochs.is_integer() else report.epochs
        attempt.epochs_done = epochs
        metric, trial = self.space.metric, attempt.trial
        value = value_of(metric, report)
        attempt.held_reports.append((value, report.step))
        with attempt.watch("optuna"):
            try:
                _send_reports(attempt)
                prune = trial.should_prune()
                if prune:
                    trial.set_user_attr(ATTR_PRUNED_EPOCH, epochs)
            except Exception as e:
                fault = fault_of(e)
                if self.runs.waiter is None or fault is None or fault.kind != STORAGE:
                    raise
                storage_failed()
                return
        if prune:
            raise optuna.TrialPruned(pruned_message(self.space.pruner, metric, value,
                                                    report.epochs))

    def _record(self, attempt: _Attempt, run: RunLog, outcome: Outcome,
                error: BaseException | None, fitted: TrackedFit | None) -> None:
        """How the trial ended, on its run (status, tags, time by phase so far) and on the
        trial (its attributes, and the whole time, the run's close included)."""
        trial, watch = attempt.trial, attempt.watch
        attrs = _outcome_attributes(outcome, error, fitted)
        attrs[ATTR_EPOCHS] = attempt.epochs_done
        pruned_epoch = attrs.get(ATTR_PRUNED_EPOCH, trial.user_attrs.get(ATTR_PRUNED_EPOCH))
        # The trial first: should another process have failed it meanwhile, this raises before
        # the run is closed as something the trial is not.
        with watch("optuna"):
            self.runs.store(_send_reports, attempt)
            for key, attr in attrs.items():
                self.runs.store(trial.set_user_attr, key, attr)
        merged = dict(run.watch.seconds)
        watch.merge(merged)  # no close yet
        so_far = watch.breakdown(time.perf_counter() - attempt.start)
        run.log_metrics({f"seconds_{phase}": s for phase, s in so_far.items()}
                        | {"overhead_seconds": overhead(so_far)})
        run.close(outcome, attrs.get(ATTR_REASON, ""), pruned_epoch=pruned_epoch)
        # What the run's calls took since: the close, and the batch of the phases just sent (a
        # store write like any other, not time that no phase measured).
        watch.merge({phase: s - merged.get(phase, 0.0) for phase, s in run.watch.seconds.items()})
        breakdown = watch.breakdown(time.perf_counter() - attempt.start)
        self.runs.store(trial.set_user_attr, ATTR_SECONDS, breakdown)
        self.runs.store(trial.set_user_attr, ATTR_OVERHEAD_SECONDS,
                        round(overhead(breakdown), 3))


def _amount(key: str, value: float) -> str:
    return f"{value:.3g}" if key == "latency_ms" else f"{value:,.0f}"


def _send_reports(attempt: _Attempt) -> None:
    """Send the held reports in order, each removed once the storage has it."""
    while attempt.held_reports:
        value, step = attempt.held_reports[0]
        attempt.trial.report(value, step)
        attempt.held_reports.pop(0)


def _record_without_waiting(attempt: _Attempt, error: BaseException) -> None:
    """A trial cut short by a store that stayed down: its outcome, where the storage takes it
    now (the tracking server may be the one that is down); the next search closes the rest."""
    attrs = {ATTR_OUTCOME: INFRASTRUCTURE.name, ATTR_REASON: reason_for(INFRASTRUCTURE, error)}
    with contextlib.suppress(Exception):
        for key, attr in attrs.items():
            attempt.trial.set_user_attr(key, attr)


def _outcome_attributes(outcome: Outcome, error: BaseException | None,
                        fitted: TrackedFit | None) -> dict:
    """The trial's attributes for how it ended (core.outcomes)."""
    attrs: dict = {ATTR_OUTCOME: outcome.name}
    if fitted is not None:
        final = fitted.result.final
        attrs.update({ATTR_MODEL_URI: fitted.model_uri, ATTR_VAL_ACCURACY: final.val_accuracy,
                      ATTR_TRAIN_SECONDS: round(fitted.seconds, 3)})
    reason = reason_for(outcome, error)
    if reason:
        attrs[ATTR_REASON] = reason
    if isinstance(error, NonFiniteLossError):
        attrs[ATTR_PRUNED_EPOCH] = error.epoch
    return attrs


def pruned_message(pruner: dict, metric: str, value: float, epochs: float) -> str:
    """Why the pruner stopped a trial, in its own terms."""
    at = (f"after epoch {int(epochs)}" if epochs.is_integer()
          else f"after {epochs:g} epochs")
    measured = f"{metric} {format_value(metric, value)}"
    if pruner["type"] == "median":
        return f"pruned {at}: {measured} is below the median of earlier trials at that point"
    share = f"1/{pruner['reduction_factor']}"
    return (f"pruned {at}: {measured} is not in the top {share} of the trials that reached "
            f"this rung ({pruner['type'].replace('_', ' ')})")


def _import_what_trials_use() -> None:
    """Import now what every trial uses but torch and MLflow load lazily: the first optimiser
    imports torch._dynamo, the first cost measured torch's FLOP counter, and the first model
    logged imports mlflow.pytorch (1.5-4 s together here). Paid once as the worker starts
    rather than inside its first trial, whose time by phase then reads like every other's."""
    import mlflow.pytorch  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch.utils.flop_counter  # noqa: F401 - a complete trial's cost (train.cost)


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
