"""`pipeline train`: one configuration, trained and reported, top to bottom."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.data import load_mnist, split_train_val
from pipeline.hparams import RunConfig
from pipeline.model import build_model, describe, parameter_count
from pipeline.progress import TrainProgress
from pipeline.train import choose_device, evaluate, fit


def train_one(config: RunConfig, *, data_dir: Path | None = None, echo=print) -> dict:
    """Train ``config``; print progress, then validation and test accuracy. Returns the numbers."""
    mnist = load_mnist(data_dir, log=echo)
    data = split_train_val(mnist, val_size=config.data.val_size,
                           split_seed=config.data.split_seed,
                           train_subset=config.data.train_subset)
    model = build_model(config.model, seed=config.train.seed)
    device = choose_device(config.train.device)
    echo(f"model: {describe(config.model)} ({parameter_count(model):,} parameters)")
    echo(f"data: {len(data.train):,} training / {len(data.val):,} validation images "
         f"({data.checksum}); device: {device}")

    progress = TrainProgress(config.train.epochs, echo=echo)
    start = time.perf_counter()
    try:
        result = fit(model, data, config.train, progress.on_epoch_end, on_step=progress.on_step)
    finally:
        progress.close()
    seconds = time.perf_counter() - start
    _, test_accuracy, _ = evaluate(model, mnist.test, batch_size=config.train.eval_batch_size,
                                   device=result.device, precision=result.precision,
                                   channels_last=result.channels_last)
    final = result.final
    echo(f"validation accuracy {final.val_accuracy:.2%}   test accuracy {test_accuracy:.2%}   "
         f"({seconds:.0f}s on {result.device}, {result.precision})")
    return {"val_accuracy": final.val_accuracy, "test_accuracy": test_accuracy,
            "seconds": seconds}
