"""The best single network of a study against ensembles of its best K, as `pipeline promote
ensemble --top K` would make them: validation and test accuracy, size, and one-image CPU latency.

Nothing is registered or logged: the members' models are read from the study's MLflow store (run
it where the study was searched, with the same MLFLOW_TRACKING_URI). An ensemble larger than the
study's complete trials with a model is reported as such, not made smaller.

    python bench/ensembles.py                           # the most recent study, K = 1, 3, 5
    python bench/ensembles.py --study mnist-cpu --sizes 1,2,3
"""

from __future__ import annotations

import argparse
import platform
import subprocess


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=None, help="study name (default: the most recent)")
    parser.add_argument("--storage", default=None, help="Optuna storage (default: the search's)")
    parser.add_argument("--sizes", default="1,3,5", help="ensemble sizes, comma-separated")
    args = parser.parse_args()

    import torch

    from pipeline.data import load_mnist
    from pipeline.ship.ensemble import networks_of, validation_split
    from pipeline.ship.registry import PromotionError
    from pipeline.study import default_storage, open_existing_study
    from pipeline.study.trials import ranked_trials
    from pipeline.train.cost import measure_cost
    from pipeline.train.model import Ensemble
    from pipeline.train.trainer import evaluate

    study = open_existing_study(args.storage or default_storage(), args.study)
    ranked = [t for t in ranked_trials(study) if "model_uri" in t.user_attrs]
    mnist = load_mnist(log=lambda line: None)
    val = validation_split(study, mnist)
    sizes = [int(k) for k in args.sizes.split(",")]
    print(f"study {study.study_name!r}: {len(study.trials)} trials, {len(ranked)} complete with "
          f"a model; CPU: {cpu_name()}, torch {torch.__version__}")
    print(f"{'K':>3}  {'members':<16} {'validation':>10} {'test':>8} {'params':>10} "
          f"{'cpu ms':>7}")
    for k in sizes:
        if k > len(ranked):
            print(f"{k:>3}  only {len(ranked)} complete trial(s) with a model")
            continue
        members = ranked[:k]
        try:
            networks, _ = networks_of(members)
        except PromotionError as e:
            print(f"{k:>3}  {e}")
            continue
        net = networks[0].eval() if k == 1 else Ensemble(networks).eval()
        cost = measure_cost(net)
        label = "+".join(str(t.number) for t in members)
        print(f"{k:>3}  {label:<16} {evaluate(net, val)[1]:>10.2%} "
              f"{evaluate(net, mnist.test)[1]:>8.2%} "
              f"{cost.params:>10,} {cost.latency_ms:>7.2f}")


if __name__ == "__main__":
    main()
