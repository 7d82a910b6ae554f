"""What a search spends: pruners compared at equal trials, and where a trial's time goes.

Runs the same search once per pruner and sampler seed, in one process: same space, trial budget
and training subset; only the pruner differs (the space's own, Hyperband and successive halving
with fractional-epoch reports, none). Prints epochs trained, wall time, best validation value
and trials pruned for each, the spread over seeds (what is noise), and, from the first
search's trials, the time by phase (pipeline/timings.py): building, set-up, training,
evaluation, each kind of MLflow call, Optuna, and the overhead outside training and evaluation.

    python bench/search_costs.py                    # cpu.yaml, 20 trials on 12,000 images
    python bench/search_costs.py --seeds 0,1,2 --pruners median,hyperband,none
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

# The pruners compared; each a study.pruner section as a space file writes it.
PRUNERS = {
    "space": None,  # the space file's own
    "median": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 0,
               "interval_steps": 1},
    "median/4": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 0,
                 "interval_steps": 1, "reports_per_epoch": 4},
    "hyperband/4": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3,
                    "reports_per_epoch": 4},
    "halving/4": {"type": "successive_halving", "min_resource": 1, "reduction_factor": 4,
                  "min_early_stopping_rate": 0, "reports_per_epoch": 4},
    "none": {"type": "none", "n_startup_trials": 5, "n_warmup_steps": 0, "interval_steps": 1},
}


def run(space, trials: int, seed: int, folder: Path):
    from pipeline.search import SearchRequest, run_search
    from pipeline.study.trials import epochs_trained

    folder.mkdir(parents=True)
    os.chdir(folder)  # MLflow's and Optuna's default stores live in the working folder
    start = time.perf_counter()
    outcome = run_search(SearchRequest(space=space, trials=trials, study_name="bench",
                                       storage_url="sqlite:///optuna.db",
                                       tracking_uri=f"sqlite:///{folder}/mlflow.db", seed=seed,
                                       report=False), echo=lambda line: None)
    seconds = time.perf_counter() - start
    finished = [t for t in outcome.study.trials if t.state.is_finished()]
    complete = [t.value for t in finished if t.state.name == "COMPLETE"]
    return {"study": outcome.study, "seconds": seconds,
            "epochs": sum(epochs_trained(t) for t in finished),
            "best": max(complete, default=float("nan")),
            "pruned": sum(t.state.name == "PRUNED" for t in finished)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="cpu")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--train-subset", type=int, default=12000)
    parser.add_argument("--seeds", default="0", help="sampler seeds, comma-separated")
    parser.add_argument("--pruners", default="space,none",
                        help=f"comma-separated, from {', '.join(PRUNERS)}")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for variable in ("MLFLOW_TRACKING_URI", "PIPELINE_STORAGE"):
        os.environ.pop(variable, None)

    from pipeline.core.settings import DataSettings
    from pipeline.report.tables import time_breakdown_table
    from pipeline.study.space import load_space

    base = load_space(args.space)
    base = replace(base, data=DataSettings(val_size=base.data.val_size,
                                           split_seed=base.data.split_seed,
                                           train_subset=args.train_subset))
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.pruners.split(",")
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            pruner = PRUNERS[name] or base.pruner
            space = replace(base, pruner=pruner)
            for seed in seeds:
                folder = Path(tmp) / f"{name}-{seed}".replace("/", "_")
                result = run(space, args.trials, seed, folder)
                results.setdefault(name, []).append(result)
                print(f"  {name} seed {seed}: {result['seconds']:.0f}s, best "
                      f"{result['best']:.2%}", file=sys.stderr)

        print(f"\n{args.trials} trials of {base.path.name} on {args.train_subset:,} training "
              f"images; sampler seeds {args.seeds}; one process; mean (min-max) over seeds")
        print(f"{'pruner':<13}{'epochs':>18}{'wall s':>18}{'best val':>24}{'pruned':>8}")

        def spread(values, fmt):
            return (f"{fmt(statistics.mean(values))} ({fmt(min(values))}-{fmt(max(values))})"
                    if len(values) > 1 else fmt(values[0]))

        for name, rows in results.items():
            print(f"{name:<13}"
                  f"{spread([r['epochs'] for r in rows], lambda v: f'{v:.1f}'):>18}"
                  f"{spread([r['seconds'] for r in rows], lambda v: f'{v:.0f}'):>18}"
                  f"{spread([r['best'] for r in rows], lambda v: f'{v:.2%}'):>24}"
                  f"{statistics.mean(r['pruned'] for r in rows):>8.1f}")
        if "none" in results:
            full = results["none"]
            for name, rows in results.items():
                if name == "none":
                    continue
                epochs = statistics.mean(r["epochs"] for r in rows) / statistics.mean(
                    r["epochs"] for r in full)
                wall = statistics.mean(r["seconds"] for r in rows) / statistics.mean(
                    r["seconds"] for r in full)
                print(f"{name}: {epochs:.2f}x the epochs of no pruning in {wall:.2f}x the time")
        first = results[names[0]][0]["study"]
        print(f"\n{names[0]}, seed {seeds[0]}: " + time_breakdown_table(first))


if __name__ == "__main__":
    main()
