"""Trial throughput of `pipeline search --workers K` against one worker, on this machine.

Equal work for every K: the space's sampler is switched to random and pruning off, and since
parameters are seeded per trial number, trial n trains the same network whichever worker runs it.
Each K runs the real command (journal storage, MLflow's default store) in a fresh folder; the
figure is finished trials per minute of wall time, and the ratio against K=1 in the same run.

    python bench/workers.py                          # cpu.yaml, 12 trials, K = 1 and 2
    python bench/workers.py --workers 1,2,4 --device cuda --space default --trials 24
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="cpu")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--train-subset", type=int, default=12000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    space = yaml.safe_load((REPO / "search_spaces" / f"{args.space}.yaml").read_text())
    space.pop("cpu_fallback", None)
    space["study"]["sampler"] = {"type": "random", "seed": 0}
    space["study"]["pruner"] = {"type": "none"}
    space["data"]["train_subset"] = args.train_subset
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",
                                                           "PIPELINE_STORAGE")}
    results = {}
    for k in [int(w) for w in args.workers.split(",")]:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "bench.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
            command = [sys.executable, "-m", "pipeline", "search", "--space", "bench.yaml",
                       "--trials", str(args.trials), "--workers", str(k), "--device",
                       args.device, "--storage", f"journal:///{folder}/optuna.journal",
                       "--no-report"]
            start = time.perf_counter()
            subprocess.run(command, cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
            results[k] = time.perf_counter() - start
            print(f"  {k} worker(s): {results[k]:.0f}s", file=sys.stderr)

    base = results[min(results)]
    print(f"\n{args.trials} trials of {args.space}.yaml (random sampler, no pruning, "
          f"{args.train_subset:,} training images), device {args.device}, {os.cpu_count()} cores")
    print(f"{'workers':>8}{'wall s':>9}{'trials/min':>12}{'ratio':>8}")
    for k, seconds in results.items():
        print(f"{k:>8}{seconds:>9.0f}{args.trials / seconds * 60:>12.2f}{base / seconds:>8.2f}")


if __name__ == "__main__":
    main()
