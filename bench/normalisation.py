"""What the network's own input standardisation changes, for the seed reports' networks without
batch norm (and one with it, for contrast), over several seeds.

`pipeline`'s networks start with ``model.Standardize`` (MNIST's mean 0.1307 and std 0.3081), so
every model takes plain [0, 1] pixels, the reports' ``Normalize`` included. This trains each
network with that first layer as it is and with it replaced by the identity (the reports'
``ToTensor``-only runs, C against D), same seeds otherwise, and prints the validation accuracy
after each epoch: mean and spread over seeds. Selection is on the validation split; the test set
is not touched.

    python bench/normalisation.py                     # report B's network and settings, 3 seeds
    python bench/normalisation.py --nets b,c,e --seeds 0,1,2,3,4 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

# The seed reports' networks with their own settings (search_spaces/seeds.yaml's presets).
NETS = {
    "b": {"depth": 2, "width": 16, "kernel_size": 5, "batch_norm": False, "fc_layers": 0,
          "optimizer": "adam", "lr": 1e-3},
    "c": {"depth": 2, "width": 10, "kernel_size": 5, "padding": "valid", "batch_norm": False,
          "conv_dropout": 0.5, "fc_width": 50, "fc_layers": 1, "dropout": 0.5,
          "optimizer": "sgd", "lr": 0.01, "momentum": 0.5, "nesterov": False},
    "a": {"depth": 3, "width": 32, "kernel_size": 3, "batch_norm": False, "fc_width": 128,
          "fc_layers": 2, "optimizer": "adam", "lr": 3e-4},
    "e": {"depth": 2, "width": 64, "convs_per_block": 2, "batch_norm": True, "fc_width": 256,
          "fc_layers": 2, "dropout": 0.5, "optimizer": "adam", "lr": 3e-4},
}
COMMON = {"epochs": 3, "batch_size": 64, "schedule": "constant", "weight_decay": 0.0,
          "rotation": 10.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default="b", help=f"comma-separated, from {','.join(NETS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=COMMON["epochs"])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch
    from torch import nn

    from pipeline.core.hparams import make_config
    from pipeline.data.splits import load_mnist, split_train_val
    from pipeline.train.model import Standardize, build_model
    from pipeline.train.plan import choose_device
    from pipeline.train.trainer import fit

    mnist = load_mnist()
    seeds = [int(s) for s in args.seeds.split(",")]
    device = choose_device(args.device)
    rows = []
    for net in args.nets.split(","):
        for standardised in (True, False):
            curves = []
            for seed in seeds:
                config = make_config({**COMMON, **NETS[net], "epochs": args.epochs,
                                      "seed": seed, "device": str(device),
                                      "precision": "fp32"})
                splits = split_train_val(mnist, config.data)
                model = build_model(config.model, seed=seed)
                assert isinstance(model[0], Standardize)
                if not standardised:
                    model[0] = nn.Identity()  # what the network sees: [0, 1] pixels
                start = time.perf_counter()
                result = fit(model, splits, config.train)
                curves.append([s.val_accuracy for s in result.history])
                print(f"  report {net.upper()} {'standardised' if standardised else 'raw [0, 1]'}"
                      f" seed {seed}: {curves[-1][-1]:.2%} ({time.perf_counter() - start:.0f}s)",
                      flush=True)
            rows.append((net, standardised, curves))

    print(f"\nvalidation accuracy after each epoch, mean (min-max) over seeds {args.seeds}; "
          f"{device} ({torch.get_num_threads()} threads), fp32")
    epochs = len(rows[0][2][0])
    print(f"{'network':<10}{'input':<14}" + "".join(f"{f'epoch {e + 1}':>24}"
                                                 for e in range(epochs)))
    for net, standardised, curves in rows:
        cells = []
        for e in range(epochs):
            values = [c[e] for c in curves]
            cells.append(f"{statistics.mean(values):.2%} ({min(values):.2%}-{max(values):.2%})")
        print(f"{'report ' + net.upper():<10}{'standardised' if standardised else 'raw [0, 1]':<14}"
              + "".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
