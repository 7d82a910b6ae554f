"""`pipeline train`: one configuration, trained, tracked in MLflow and reported, top to bottom."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.data import load_mnist, split_train_val
from pipeline.diagnostics import diagnose
from pipeline.hparams import RunConfig
from pipeline.model import build_model, describe, parameter_count
from pipeline.progress import TrainProgress
from pipeline.train import evaluate, fit, plan_execution

DEFAULT_EXPERIMENT = "pipeline-train"


def train_one(config: RunConfig, *, data_dir: Path | None = None, experiment: str | None =
              DEFAULT_EXPERIMENT, echo=print) -> dict:
    """Train ``config``; print progress, then validation and test accuracy. Returns the numbers.

    With ``experiment`` (the default) the run is tracked in MLflow like a search trial: params,
    per-epoch metrics, confusion matrix, the model; ``None`` tracks nothing.
    """
    mnist = load_mnist(data_dir, log=echo)
    data = split_train_val(mnist, val_size=config.data.val_size,
                           split_seed=config.data.split_seed,
                           train_subset=config.data.train_subset)
    model = build_model(config.model, seed=config.train.seed)
    plan = plan_execution(model, config.train)
    echo(f"model: {describe(config.model)} ({parameter_count(model):,} parameters)")
    echo(f"data: {len(data.train):,} training / {len(data.val):,} validation images "
         f"({data.checksum}); device: {plan.device}")

    run = None
    if experiment:
        from pipeline.tracking import TAG_ROLE, TAG_STATE, Tracker, library_versions

        tracker = Tracker()
        run = tracker.start_run(tracker.experiment(experiment),
                                f"train-{time.strftime('%Y%m%d-%H%M%S')}",
                                tags={TAG_ROLE: "train"})
        run.log_params({**config.flat(), "data_checksum": data.checksum,
                        "parameter_count": parameter_count(model), **plan.params(),
                        **library_versions()})
        echo(f"MLflow run {run.run_id} in experiment {experiment!r} ({tracker.uri})")

    progress = TrainProgress(config.train.epochs, echo=echo)

    def on_epoch_end(stats):
        progress.on_epoch_end(stats)
        if run is not None:
            run.log_epoch(stats)

    start = time.perf_counter()
    try:
        result = fit(model, data, config.train, on_epoch_end, on_step=progress.on_step)
        seconds = time.perf_counter() - start
        _, test_accuracy, _ = evaluate(model, mnist.test, batch_size=config.train.eval_batch_size,
                                       device=plan.device, precision=plan.precision,
                                       channels_last=plan.channels_last)
        if run is not None:
            run.log_metrics({"test_accuracy": test_accuracy, "train_seconds": seconds})
            run.log_diagnostics(diagnose(data.val.labels, result.val_predictions),
                                data.val.images, data.val.labels, result.val_predictions,
                                title=f"validation accuracy {result.final.val_accuracy:.2%}")
            run.log_model(model, config.model, data.val.images)
            run.finish("FINISHED", {TAG_STATE: "complete"})
    except KeyboardInterrupt:
        if run is not None:
            run.finish("KILLED", {TAG_STATE: "interrupted"})
        raise
    except BaseException as e:
        if run is not None:
            run.finish("FAILED", {TAG_STATE: "failed", "pipeline.reason": f"{type(e).__name__}: "
                                                                          f"{str(e)[:500]}"})
        raise
    finally:
        progress.close()
    final = result.final
    echo(f"validation accuracy {final.val_accuracy:.2%}   test accuracy {test_accuracy:.2%}   "
         f"({seconds:.0f}s on {plan.device}, {plan.precision})")
    return {"val_accuracy": final.val_accuracy, "test_accuracy": test_accuracy,
            "seconds": seconds, "run_id": run.run_id if run else None}
