"""What an average of the weights (``ema_decay``) changes, over several seeds, before it may
become a default.

One configuration of the CPU space (search_spaces/cpu.yaml's network, mid-range values of what it
searches) is trained with each decay and each seed, all else equal: the same seed gives the same
initial weights, batches and augmentation, so only what is kept at the end differs. Printed:
validation and test accuracy per decay, mean and standard deviation over the seeds, and the
paired difference against no average (same seed).

    python bench/ema.py                                    # 5 seeds, 2 epochs on 20,000 images
    python bench/ema.py --seeds 0,1,2 --decays 0,0.999 --epochs 4 --train-subset 55000
    python bench/ema.py --schedule constant        # where the last steps still move the weights
"""

from __future__ import annotations

import argparse
import statistics
import time

CONFIG = {"depth": 3, "width": 16, "batch_norm": True, "kernel_size": 5, "fc_width": 128,
          "dropout": 0.15, "batch_size": 128, "optimizer": "adamw", "lr": 2e-3,
          "weight_decay": 3e-5, "rotation": 5.0, "schedule": "onecycle", "eval_batch_size": 2500}


def _spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2%} ± {sd:.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--decays", default="0,0.99,0.999")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-subset", type=int, default=20000)
    parser.add_argument("--schedule", default=CONFIG["schedule"],
                        help="onecycle (the spaces' own), cosine or constant")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from pipeline.core.hparams import make_config
    from pipeline.core.settings import DataSettings
    from pipeline.data.splits import load_mnist, split_train_val
    from pipeline.train.model import build_model
    from pipeline.train.trainer import evaluate, fit

    mnist = load_mnist(log=lambda line: None)
    data = split_train_val(mnist, DataSettings(val_size=5000, train_subset=args.train_subset))
    seeds = [int(s) for s in args.seeds.split(",")]
    decays = [float(d) for d in args.decays.split(",")]
    results: dict[float, list[tuple[float, float]]] = {d: [] for d in decays}
    start = time.perf_counter()
    for seed in seeds:
        for decay in decays:
            config = make_config({**CONFIG, "epochs": args.epochs, "seed": seed,
                                  "schedule": args.schedule,
                                  "ema_decay": decay, "device": args.device})
            model = build_model(config.model, seed=seed)
            result = fit(model, data, config.train)
            _, test, _ = evaluate(model, mnist.test, device=result.device,
                                  precision=result.precision,
                                  channels_last=result.channels_last)
            results[decay].append((result.final.val_accuracy, test))
            print(f"seed {seed} ema_decay {decay:g}: validation "
                  f"{result.final.val_accuracy:.2%}, test {test:.2%} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    base = results[decays[0]]
    print(f"\n{len(seeds)} seeds, {args.epochs} epochs on {len(data.train):,} images, "
          f"{args.schedule} schedule; test on 10,000")
    print(f"{'ema_decay':>9}  {'validation':>16}  {'test':>16}  test − no average (paired)")
    for decay in decays:
        val = [v for v, _ in results[decay]]
        test = [t for _, t in results[decay]]
        paired = [t - b for (_, t), (_, b) in zip(results[decay], base, strict=True)]
        print(f"{decay:>9g}  {_spread(val):>16}  {_spread(test):>16}  "
              f"{statistics.mean(paired):+.3%} (from {min(paired):+.2%} to {max(paired):+.2%})")


if __name__ == "__main__":
    main()
