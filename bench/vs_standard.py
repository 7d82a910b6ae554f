"""`pipeline search` against the standard Optuna + MLflow way, same search, one process.

(a) The standard way, as optuna-examples' PyTorch example and `optuna_integration`'s
    `MLflowCallback` write it: torchvision's `MNIST` dataset with a per-image PIL
    `RandomRotation` transform, a `DataLoader`, the loss read every step (`loss.item()`), a
    validation pass through a `DataLoader` every epoch reported to the pruner, and MLflow
    logging (params and the value) by the callback when the trial ends.
(b) `pipeline search` (run_search, in this process): data resident as tensors, batched
    rotation on the training device, per-epoch metrics, a confusion matrix and the model logged
    to MLflow for every complete trial.

Both sides search the same space file with the same trials, training subset, validation images
(the same seeded split), sampler (the pipeline's seeded TPE, so both ask the same first
configurations), pruner and networks (the same model builder, optimiser and schedule): what
differs is the data path, the training loop and the tracking. Printed for each: wall time,
trials per minute, best validation value, the time the study first reached --target, and the
ratios (b)/(a).

    python bench/vs_standard.py                          # cpu.yaml, 12 trials on 12,000 images
    python bench/vs_standard.py --trials 50 --subset 55000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path


def standard_objective(space, splits_idx, root: Path, device: str):
    """The objective an Optuna + MLflow user writes, on torchvision's MNIST files."""
    import optuna
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    from pipeline.core.hparams import make_config
    from pipeline.train.model import build_model
    from pipeline.train.trainer import make_optimizer, make_schedule

    train_idx, val_idx = splits_idx
    plain = transforms.ToTensor()

    def objective(trial: optuna.Trial) -> float:
        sampled = space.suggest(trial)
        config = make_config({**space.hyperparameters(sampled), "device": device,
                              "seed": trial.number})
        s = config.train
        torch.manual_seed(s.seed)
        augment = transforms.Compose([transforms.RandomRotation(s.rotation), plain]) \
            if s.rotation else plain
        train_set = Subset(datasets.MNIST(root, train=True, transform=augment), train_idx)
        val_set = Subset(datasets.MNIST(root, train=True, transform=plain), val_idx)
        train_loader = DataLoader(train_set, batch_size=s.batch_size, shuffle=True,
                                  drop_last=True)
        val_loader = DataLoader(val_set, batch_size=s.eval_batch_size)
        model = build_model(config.model, seed=s.seed).to(device)
        optimizer = make_optimizer(model, s)
        schedule = make_schedule(optimizer, s, len(train_loader) * s.epochs)
        accuracy = 0.0
        for epoch in range(s.epochs):
            model.train()
            for images, labels in train_loader:
                images, labels = images.to(device), labels.to(device)
                optimizer.zero_grad()
                loss = F.cross_entropy(model(images), labels,
                                       label_smoothing=s.label_smoothing)
                loss.backward()
                optimizer.step()
                schedule.step()
                if not torch.isfinite(torch.tensor(loss.item())):  # read every step
                    raise optuna.TrialPruned("diverged")
            model.eval()
            correct = 0
            with torch.no_grad():
                for images, labels in val_loader:
                    predicted = model(images.to(device)).argmax(dim=1)
                    correct += (predicted == labels.to(device)).sum().item()
            accuracy = correct / len(val_set)
            # Once per epoch, as the example does; numbered in the space's report steps so that
            # the pruner's rungs mean the same epochs on both sides.
            trial.report(accuracy, (epoch + 1) * space.reports_per_epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    return objective


def run_standard(space, trials: int, seed: int, splits_idx, folder: Path, device: str):
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    from pipeline.data.sources import default_data_dir
    from pipeline.study.samplers import make_pruner, seeded_sampler

    # Deprecated since optuna-integration 4.9 (to go in 6.0), yet still what its docs and
    # optuna-examples show: it is the standard way this compares with.
    warnings.filterwarnings("ignore", category=FutureWarning, message="MLflowCallback")
    callback = MLflowCallback(tracking_uri=f"sqlite:///{folder}/mlflow.db",
                              metric_name="val_accuracy",
                              create_experiment=True, mlflow_kwargs={"nested": False})
    study = optuna.create_study(study_name="standard", direction=space.direction,
                                storage=f"sqlite:///{folder}/optuna.db",
                                sampler=seeded_sampler(space, seed), pruner=make_pruner(space))
    objective = standard_objective(space, splits_idx, default_data_dir(), device)
    start = time.time()
    study.optimize(objective, n_trials=trials, callbacks=[callback])
    return study, time.time() - start, start


def run_pipeline(space, trials: int, seed: int, folder: Path, device: str):
    from pipeline.search import SearchRequest, run_search

    os.chdir(folder)  # MLflow's and Optuna's default stores live in the working folder
    start = time.time()
    outcome = run_search(SearchRequest(space=space, trials=trials, study_name="pipeline",
                                       storage_url="sqlite:///optuna.db",
                                       tracking_uri=f"sqlite:///{folder}/mlflow.db", seed=seed,
                                       device=device, report=False), echo=lambda line: None)
    return outcome.study, time.time() - start, start


def summary(study, seconds: float, start: float, target: float) -> dict:
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE"),
                      key=lambda t: t.datetime_complete)
    reached = next((t.datetime_complete.timestamp() - start for t in complete
                    if t.value >= target), None)
    return {"seconds": seconds, "per_minute": len(study.trials) / seconds * 60,
            "best": max((t.value for t in complete), default=float("nan")),
            "reached": reached, "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
            "trials": len(study.trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="cpu")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--subset", type=int, default=12000,
                        help="training images (55000: all that the validation split leaves)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.99,
                        help="validation accuracy whose first arrival is timed")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for variable in ("MLFLOW_TRACKING_URI", "PIPELINE_STORAGE"):
        os.environ.pop(variable, None)

    import optuna
    import torch

    from pipeline.core.settings import DataSettings
    from pipeline.data.splits import load_mnist
    from pipeline.study.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    space = replace(space, data=DataSettings(val_size=space.data.val_size,
                                             split_seed=space.data.split_seed,
                                             train_subset=args.subset))
    load_mnist()  # verified IDX files in torchvision's layout, for both sides
    # The pipeline's seeded split (data.split_train_val), as indices for torchvision's dataset.
    d = space.data
    order = torch.randperm(60000, generator=torch.Generator().manual_seed(d.split_seed))
    splits_idx = (order[d.val_size:d.val_size + args.subset].tolist(),
                  order[:d.val_size].tolist())
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, runner in (("standard", run_standard), ("pipeline", run_pipeline)):
            folder = Path(tmp) / label
            folder.mkdir()
            print(f"  {label}: searching ...", file=sys.stderr, flush=True)
            if label == "standard":
                study, seconds, start = runner(space, args.trials, args.seed, splits_idx,
                                               folder, args.device)
            else:
                study, seconds, start = runner(space, args.trials, args.seed, folder,
                                               args.device)
            rows[label] = summary(study, seconds, start, args.target)
            print(f"  {label}: {seconds:.0f}s", file=sys.stderr, flush=True)

    cpu = _cpu_name()
    print(f"\n{args.trials} trials of {space.path.name} on {args.subset:,} training images, "
          f"{space.data.val_size:,} validation; sampler seed {args.seed}; {args.device} "
          f"({cpu}, {torch.get_num_threads()} threads)")
    print(f"{'':<10}{'wall s':>8}{'trials/min':>12}{'best val':>10}{'pruned':>8}"
          f"{f'first >= {args.target:.1%}':>18}")
    for label, r in rows.items():
        reached = f"{r['reached']:.0f}s" if r["reached"] is not None else "never"
        print(f"{label:<10}{r['seconds']:>8.0f}{r['per_minute']:>12.2f}{r['best']:>10.2%}"
              f"{r['pruned']:>8}{reached:>18}")
    a, b = rows["standard"], rows["pipeline"]
    print(f"pipeline / standard: {a['seconds'] / b['seconds']:.2f}x faster, best value "
          f"{(b['best'] - a['best']) * 100:+.2f} points")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
