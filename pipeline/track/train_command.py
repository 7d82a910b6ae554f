"""`pipeline train`: one configuration, trained, tracked in MLflow and reported, top to bottom."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.core.errors import NonFiniteLossError, PipelineError, first_line
from pipeline.core.hparams import RunConfig
from pipeline.core.keys import TAG_ROLE
from pipeline.core.outcomes import is_out_of_memory, outcome_of, reason_for
from pipeline.core.progress import TrainProgress
from pipeline.data.splits import load_mnist, split_train_val
from pipeline.track.tracked_training import TrainingJob, plan_for, tracked_fit
from pipeline.train.model import describe, parameter_count
from pipeline.train.trainer import Hooks, evaluate

DEFAULT_EXPERIMENT = "pipeline-train"


class TrainingFailed(PipelineError):
    """A configuration that trains badly (it diverged) or does not fit in memory."""


def train_one(config: RunConfig, *, data_dir: Path | None = None, experiment: str | None =
              DEFAULT_EXPERIMENT, echo=print) -> dict:
    """Train ``config``; print progress, then validation and test accuracy. Returns the numbers.

    With ``experiment`` (the default) the run is tracked in MLflow like a search trial: params,
    per-epoch metrics, confusion matrix, the model; ``None`` tracks nothing.
    """
    mnist = load_mnist(data_dir, log=echo)
    data = split_train_val(mnist, config.data)
    model, plan = plan_for(config)
    echo(f"model: {describe(config.model)} ({parameter_count(model):,} parameters)")
    echo(f"data: {len(data.train):,} training / {len(data.val):,} validation images "
         f"({data.checksum}); device: {plan.device}")

    run = None
    if experiment:
        from pipeline.track.runs import Tracker

        tracker = Tracker()
        run = tracker.start_run(tracker.experiment(experiment),
                                f"train-{time.strftime('%Y%m%d-%H%M%S')}",
                                tags={TAG_ROLE: "train"})
        echo(f"MLflow run {run.run_id} in experiment {experiment!r} ({tracker.uri})")

    progress = TrainProgress(config.train.epochs, echo=echo)
    error: BaseException | None = None
    try:
        fitted = tracked_fit(run, TrainingJob(config, data, model=model),
                             Hooks(on_epoch_end=progress.on_epoch_end, on_step=progress.on_step))
        _, test_accuracy, _ = evaluate(fitted.model, mnist.test,
                                       batch_size=config.train.eval_batch_size,
                                       device=plan.device, precision=plan.precision,
                                       channels_last=plan.channels_last)
        if run is not None:
            run.log_metrics({"test_accuracy": test_accuracy, "train_seconds": fitted.seconds})
    except NonFiniteLossError as e:
        error = e
        raise TrainingFailed(f"training diverged: {e}; lower --lr, or keep --batch-norm "
                             "on") from None
    except BaseException as e:
        error = e
        if is_out_of_memory(e):
            raise TrainingFailed(f"out of memory: {type(e).__name__}: {first_line(e)}; use a "
                                 "smaller network or --batch-size") from None
        raise
    finally:
        progress.close()
        if run is not None:  # complete, failed, out of memory or interrupted: core.outcomes
            outcome = outcome_of(error)
            run.close(outcome, reason_for(outcome, error))
    final = fitted.result.final
    echo(f"validation accuracy {final.val_accuracy:.2%}   test accuracy {test_accuracy:.2%}   "
         f"({fitted.seconds:.0f}s on {plan.device}, {plan.precision})")
    return {"val_accuracy": final.val_accuracy, "test_accuracy": test_accuracy,
            "seconds": fitted.seconds, "run_id": run.run_id if run else None}
