"""One search trial: sample its hyperparameters, open its MLflow run, train with per-epoch reports
so the pruner can stop it, and record how it ended (outcomes.py) on the trial and its run.

The search loop (search.py) creates the trial under the study lock and tells Optuna the outcome;
this module runs what happens in between.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch

from pipeline.core.errors import NonFiniteLossError
from pipeline.core.hparams import make_config
from pipeline.core.keys import (
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
    ATTR_WORKER,
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
from pipeline.core.outcomes import COMPLETE, OUT_OF_MEMORY, Outcome, outcome_of, reason_for
from pipeline.core.progress import SearchProgress
from pipeline.core.timings import Stopwatch, overhead
from pipeline.data.splits import DataSplits
from pipeline.study import optuna_private
from pipeline.study.liveness import worker_id
from pipeline.study.space import SearchSpace
from pipeline.track.runs import RunLog, Tracker, library_versions
from pipeline.track.tracked_training import tracked_fit
from pipeline.train.plan import choose_device
from pipeline.train.trainer import EpochStats, Report


@dataclass(frozen=True)
class TrialResult:
    outcome: Outcome
    value: float | None  # the study's metric, for a complete trial


class TrialRunner:
    """Runs trials of one study in this process, against one MLflow experiment."""

    def __init__(self, *, space: SearchSpace, data: DataSplits, tracker: Tracker,
                 experiment_id: str, parent_run_id: str, study_name: str, device: str,
                 seed: int, progress: SearchProgress,
                 should_stop: Callable[[], bool] | None = None) -> None:
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
        self.should_stop = should_stop
        self.versions = library_versions()
        _import_what_trials_use()

    def __call__(self, trial: optuna.Trial) -> TrialResult:
        """Run ``trial`` to its outcome. Ctrl-C (KeyboardInterrupt) is recorded, then re-raised:
        the caller fails the trial and queues it again."""
        start = time.perf_counter()
        watch = Stopwatch()  # where this trial's time goes (timings.py)
        worker = worker_id()
        with watch("optuna"):
            trial.set_user_attr(ATTR_WORKER, worker)
            sampled = self.space.suggest(trial)
        with watch("mlflow_params"):
            run = self._open_run(trial, sampled, worker)
        value, error, attrs = None, None, {}
        self.epochs_done: float = 0  # as far as the last report
        try:
            config = make_config({**self.space.hyperparameters(sampled), "device": self.device,
                                  "seed": self.seed + trial.number})
            self.progress.trial_started(trial.number, config.train.epochs)
            fitted = tracked_fit(
                run, config, self.data, device_data=self.device_data,
                params={**sampled, "study": self.study_name, "trial_number": trial.number,
                        "space_fingerprint": self.space.fingerprint,
                        "space_file": self.space.path.name},
                on_epoch_end=self._epoch_hook(trial),
                on_report=self._report_hook(trial, watch),
                reports_per_epoch=self.space.reports_per_epoch,
                inside_val_size=self.space.report_val_size, watch=watch,
                title=f"trial {trial.number}: validation accuracy {{accuracy:.2%}}")
            final = fitted.result.final
            value = value_of(self.space.metric, final)
            attrs = {ATTR_MODEL_URI: fitted.model_uri, ATTR_VAL_ACCURACY: final.val_accuracy,
                     ATTR_TRAIN_SECONDS: round(fitted.seconds, 3)}
        except (Exception, KeyboardInterrupt) as e:  # every way a trial can end is an outcome
            error = e
        outcome = outcome_of(error)
        reason = reason_for(outcome, error)
        attrs[ATTR_OUTCOME] = outcome.name
        if reason:
            attrs[ATTR_REASON] = reason
        if isinstance(error, NonFiniteLossError):
            attrs[ATTR_PRUNED_EPOCH] = error.epoch
        attrs[ATTR_EPOCHS] = self.epochs_done
        pruned_epoch = attrs.get(ATTR_PRUNED_EPOCH, trial.user_attrs.get(ATTR_PRUNED_EPOCH))
        # The breakdown so far goes on the run; the whole, its close included, on the trial.
        watch.merge(run.watch.seconds)  # no close yet
        so_far = watch.breakdown(time.perf_counter() - start)
        run.log_metrics({f"seconds_{phase}": s for phase, s in so_far.items()}
                        | {"overhead_seconds": overhead(so_far)})
        run.close(outcome, reason, pruned_epoch=pruned_epoch)
        watch.add("mlflow_close", run.watch.seconds["mlflow_close"])
        with watch("optuna"):
            for key, attr in attrs.items():
                trial.set_user_attr(key, attr)
        breakdown = watch.breakdown(time.perf_counter() - start)
        trial.set_user_attr(ATTR_SECONDS, breakdown)
        trial.set_user_attr(ATTR_OVERHEAD_SECONDS, round(overhead(breakdown), 3))
        if outcome is OUT_OF_MEMORY:
            _release_memory()
        if isinstance(error, KeyboardInterrupt):
            raise error
        return TrialResult(outcome, value if outcome is COMPLETE else None)

    def _open_run(self, trial: optuna.Trial, sampled: dict, worker: str) -> RunLog:
        tags = {TAG_ROLE: "trial", TAG_STUDY: self.study_name, TAG_TRIAL: trial.number,
                TAG_TRIAL_ID: optuna_private.trial_id(trial), TAG_SAMPLED: ",".join(sampled),
                TAG_WORKER: worker}
        retry_of = optuna_private.system_attrs(trial).get(SYS_FAILED_TRIAL)
        if retry_of is not None:
            tags[TAG_RETRY_OF] = retry_of
        run = self.tracker.start_run(self.experiment_id, f"trial-{trial.number:04d}",
                                     parent_run_id=self.parent_run_id, tags=tags)
        trial.set_user_attr(ATTR_RUN_ID, run.run_id)
        return run

    def _epoch_hook(self, trial: optuna.Trial) -> Callable[[EpochStats], None]:
        def on_epoch_end(stats: EpochStats) -> None:
            self.progress.epoch_done(trial.number, stats)
            if self.should_stop is not None and self.should_stop():
                raise KeyboardInterrupt  # the same clean path as Ctrl-C
        return on_epoch_end

    def _report_hook(self, trial: optuna.Trial, watch: Stopwatch) -> Callable[[Report], None]:
        """Report each validation measurement to the pruner, and stop the trial if it says so."""
        metric, pruner = self.space.metric, self.space.pruner

        def on_report(report: Report) -> None:
            self.epochs_done = (int(report.epochs) if report.epochs.is_integer()
                                else report.epochs)
            value = value_of(metric, report)
            with watch("optuna"):
                trial.report(value, report.step)
                prune = trial.should_prune()
                if prune:
                    trial.set_user_attr(ATTR_PRUNED_EPOCH, self.epochs_done)
            if prune:
                raise optuna.TrialPruned(pruned_message(pruner, metric, value, report.epochs))
        return on_report


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
    imports torch._dynamo, and the first model logged imports mlflow.pytorch (1.5-4 s together
    here). Paid once as the worker starts rather than inside its first trial, whose time by
    phase then reads like every other's."""
    import mlflow.pytorch  # noqa: F401
    import torch._dynamo  # noqa: F401


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
