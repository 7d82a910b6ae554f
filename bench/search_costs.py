"""What a search spends: the median pruner's savings, and the cost of a trial outside training.

Runs the same search twice in one process, same space, seed and trial budget: once with the
space's median pruner, once with pruning off. Reports epochs trained, wall time and the best
validation accuracy each reached, and the ratio. Then, from the pruned search's complete trials,
the seconds each trial spent outside training and evaluation (building the model, MLflow runs,
params, metrics, confusion matrix, model logging) and how much of that was MLflow calls.

    python bench/search_costs.py                       # cpu.yaml on 12,000 images, 20 trials
    python bench/search_costs.py --trials 30 --train-subset 55000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def run(space, trials: int, folder: Path, study: str):
    from pipeline.search import SearchRequest, run_search

    os.chdir(folder)  # MLflow's and Optuna's default stores live in the working folder
    start = time.perf_counter()
    outcome = run_search(SearchRequest(space=space, trials=trials, study_name=study,
                                       storage_url="sqlite:///optuna.db", seed=0, report=False),
                         echo=lambda line: None)
    seconds = time.perf_counter() - start
    finished = [t for t in outcome.study.trials if t.state.is_finished()]
    epochs = sum(len(t.intermediate_values) for t in finished)
    best = max((t.value for t in finished if t.state.name == "COMPLETE"), default=float("nan"))
    return outcome.study, seconds, epochs, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="cpu")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--train-subset", type=int, default=12000)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for variable in ("MLFLOW_TRACKING_URI", "PIPELINE_STORAGE"):
        os.environ.pop(variable, None)

    from pipeline.settings import DataSettings
    from pipeline.space import load_space

    base = load_space(args.space)
    base = replace(base, data=DataSettings(val_size=base.data.val_size,
                                           split_seed=base.data.split_seed,
                                           train_subset=args.train_subset))
    unpruned = replace(base, pruner={**base.pruner, "type": "none"})
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, space in (("median pruner", base), ("no pruner", unpruned)):
            folder = Path(tmp) / label.replace(" ", "-")
            folder.mkdir()
            rows[label] = run(space, args.trials, folder, "bench")
            print(f"  {label}: {rows[label][1]:.0f}s", file=sys.stderr)

        print(f"\n{args.trials} trials of {base.path.name} on {args.train_subset:,} training "
              f"images, sampler seed 0, same machine, one process")
        print(f"{'search':<16}{'epochs':>8}{'wall s':>9}{'best val acc':>14}{'pruned':>8}")
        for label, (study, seconds, epochs, best) in rows.items():
            pruned = sum(t.state.name == "PRUNED" for t in study.trials)
            print(f"{label:<16}{epochs:>8}{seconds:>9.0f}{best:>14.2%}{pruned:>8}")
        (_, s_pruned, e_pruned, _), (_, s_full, e_full, _) = rows.values()
        print(f"pruning trained {e_pruned / e_full:.2f}x the epochs in {s_pruned / s_full:.2f}x "
              "the time")

        study = rows["median pruner"][0]
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        # The first trial of a process also pays one-time costs (export tracing, store set-up).
        steady = complete[1:] or complete
        from mlflow import MlflowClient

        from pipeline.keys import ATTR_OVERHEAD_SECONDS, ATTR_RUN_ID, ATTR_TRAIN_SECONDS

        overhead = [t.user_attrs[ATTR_OVERHEAD_SECONDS] for t in steady]
        train = [t.user_attrs[ATTR_TRAIN_SECONDS] for t in steady]

        client = MlflowClient(tracking_uri=f"sqlite:///{Path(tmp) / 'median-pruner'}/mlflow.db")
        logging = [client.get_run(t.user_attrs[ATTR_RUN_ID]).data.metrics["mlflow_seconds"]
                   for t in steady]
        first = complete[0].user_attrs[ATTR_OVERHEAD_SECONDS] if complete else float("nan")
        print(f"\nper complete trial, outside training and evaluation (median of {len(steady)}): "
              f"{statistics.median(overhead):.2f}s, of which MLflow calls "
              f"{statistics.median(logging):.2f}s; training+evaluation "
              f"{statistics.median(train):.1f}s; the process's first trial {first:.2f}s")


if __name__ == "__main__":
    main()
