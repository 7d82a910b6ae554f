"""Trial throughput of `pipeline search --ray` (workers as Ray actors on a local Ray instance)
against `pipeline search --workers K` (worker processes), at the same K, in one run.

Equal work for both: the space's sampler is switched to random and pruning off, and parameters
are seeded per trial number, so trial n trains the same network on either side. Both use the same
kind of stores (a journal file study and MLflow's local store, each in a fresh folder). Reported:
wall time (start-up included), trials per minute, the steady-state seconds per trial (first
trial's start to last trial's end, over the trials: start-up excluded), and what Ray adds per
trial on each measure.

    python bench/ray_vs_workers.py                        # cpu.yaml, 12 trials, K = 2
    python bench/ray_vs_workers.py --workers 4 --trials 24 --device cuda --space default
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def run(folder: Path, extra: list[str], args) -> tuple[float, float]:
    """Wall seconds of one search, and its steady seconds per trial from the study's clock."""
    command = [sys.executable, "-m", "pipeline", "search", "--space", "bench.yaml",
               "--trials", str(args.trials), "--workers", str(args.workers),
               "--storage", f"journal:///{folder}/optuna.journal", "--no-report", *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",
                                                           "PIPELINE_STORAGE")}
    start = time.perf_counter()
    subprocess.run(command, cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    import optuna

    from pipeline.study.storage import open_storage

    study = optuna.load_study(study_name="mnist-bench",
                              storage=open_storage(f"journal:///{folder}/optuna.journal"))
    trials = [t for t in study.trials if t.state.is_finished()]
    span = (max(t.datetime_complete for t in trials)
            - min(t.datetime_start for t in trials)).total_seconds()
    return wall, span / len(trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="cpu")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--train-subset", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    space = yaml.safe_load((REPO / "search_spaces" / f"{args.space}.yaml").read_text())
    space.pop("cpu_fallback", None)
    space["study"]["sampler"] = {"type": "random", "seed": 0}
    space["study"]["pruner"] = {"type": "none"}
    space["data"]["train_subset"] = args.train_subset
    sides = {"--workers": ["--device", args.device],
             "--ray": ["--ray"] + (["--gpus-per-worker", "0.25"] if args.device == "cuda"
                                   else [])}
    results = {}
    for label, extra in sides.items():
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "bench.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
            results[label] = run(Path(folder), extra, args)
            print(f"  {label}: {results[label][0]:.0f}s", file=sys.stderr)

    print(f"\n{args.trials} trials of {args.space}.yaml (random sampler, no pruning, "
          f"{args.train_subset:,} training images), {args.workers} workers, device "
          f"{args.device}, {os.cpu_count()} cores")
    print(f"{'engine':<10}{'wall s':>8}{'trials/min':>12}{'ratio':>7}{'s/trial steady':>16}")
    base_wall, base_steady = results["--workers"]
    for label, (wall, steady) in results.items():
        print(f"{label:<10}{wall:>8.0f}{args.trials / wall * 60:>12.2f}"
              f"{base_wall / wall:>7.2f}{steady:>16.2f}")
    ray_wall, ray_steady = results["--ray"]
    print(f"Ray adds {(ray_wall - base_wall) / args.trials:+.2f}s per trial over the whole run "
          f"(start-up included), {ray_steady - base_steady:+.2f}s per trial in steady state")


if __name__ == "__main__":
    main()
