"""Training throughput: the seed reports' data path against `pipeline`'s trainer, same model.

(a) ``loader``: torchvision's ``MNIST`` dataset, per-image PIL ``RandomRotation(10)``,
    ``ToTensor``, ``Normalize``, a ``DataLoader``, and a loop that reads the loss every step
    (what the seed reports do).
(b) ``trainer``: ``pipeline.train.trainer.fit`` with rotation 10: data resident on the device, one
    batched rotation per step, no per-step syncs, precision and memory layout chosen by the
    trainer.
Ablations of (b): ``trainer-fp32`` (fp32, NCHW) and ``trainer-fp32-nhwc`` show what each of the
trainer's choices adds.

Every variant trains the same architecture on the same number of images with the same batch size
and Adam; each runs in its own process, so its peak memory is its own. Reported: steady-state
training images/s (the first 10 batches, or the first epoch, are warm-up and excluded), the ratio
against (a) measured in this same run, and peak memory.

    python bench/trainer_vs_loader.py                     # CPU or GPU, whatever is here
    python bench/trainer_vs_loader.py --images 51200 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = ("loader", "trainer-fp32", "trainer-fp32-nhwc", "trainer")
WARMUP_BATCHES = 10


def spec_from(args):
    from pipeline.core.settings import ModelSpec

    return ModelSpec(depth=2, width=args.width, kernel_size=3, batch_norm=True, fc_width=128,
                     fc_layers=1)


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_loader(args) -> dict:
    import torch
    import torch.nn.functional as F
    import torchvision
    from torch import nn
    from torchvision import transforms

    from pipeline.data.sources import ensure_mnist
    from pipeline.train.model import build_model
    from pipeline.train.plan import choose_device

    files = ensure_mnist(args.data_dir)
    device = choose_device(args.device)
    torch.manual_seed(0)
    transform = transforms.Compose([
        transforms.RandomRotation(10),
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,)),
    ])
    dataset = torchvision.datasets.MNIST(files.folder.parent.parent, train=True,
                                         transform=transform, download=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers, drop_last=True)
    model = build_model(spec_from(args), seed=0)
    model[0] = nn.Identity()  # the transform already normalises
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = args.images // args.batch_size
    seen, running_loss, start = 0, 0.0, None
    for i, (x, y) in enumerate(loader):
        if i == WARMUP_BATCHES:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        if i == WARMUP_BATCHES + batches:
            break
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()  # the reports print a running loss: one sync per step
        if i >= WARMUP_BATCHES:
            seen += len(y)
    seconds = time.perf_counter() - start
    return {"images": seen, "seconds": seconds, "images_per_second": seen / seconds,
            "peak_memory_mb": peak_memory_mb(device), "device": str(device),
            "precision": "fp32", "channels_last": False}


def run_trainer(args, precision: str, channels_last: str) -> dict:
    from pipeline.core.settings import DataSettings, TrainSettings
    from pipeline.data.splits import load_mnist, split_train_val
    from pipeline.train.model import build_model
    from pipeline.train.trainer import fit

    mnist = load_mnist(args.data_dir)
    # Two epochs over `images` images; the first is warm-up (allocations, kernel selection).
    data = split_train_val(mnist, DataSettings(val_size=1000, train_subset=args.images))
    settings = TrainSettings(epochs=2, batch_size=args.batch_size, optimizer="adam", lr=1e-3,
                             schedule="constant", weight_decay=0.0, rotation=10.0,
                             device=args.device, precision=precision,
                             channels_last=channels_last)
    model = build_model(spec_from(args), seed=0)
    result = fit(model, data, settings)
    steady = result.history[-1]
    images = (args.images // args.batch_size) * args.batch_size
    return {"images": images, "seconds": images / steady.images_per_second,
            "images_per_second": steady.images_per_second,
            "peak_memory_mb": peak_memory_mb(result.device), "device": str(result.device),
            "precision": result.precision, "channels_last": result.channels_last}


def run_variant(args) -> dict:
    if args.variant == "loader":
        return run_loader(args)
    precision, layout = {"trainer-fp32": ("fp32", "off"), "trainer-fp32-nhwc": ("fp32", "on"),
                         "trainer": ("auto", "auto")}[args.variant]
    return run_trainer(args, precision, layout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12800, help="timed training images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=32, help="first conv block's channels")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for (a)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one, print JSON
    args = parser.parse_args()

    if args.variant:
        print(json.dumps(run_variant(args)))
        return

    results = {}
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant] + [
            a for a in sys.argv[1:] if not a.startswith("--variants")]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        print(f"  measured {variant}: {results[variant]['images_per_second']:,.0f} img/s",
              file=sys.stderr)

    base = results.get("loader")
    device = next(iter(results.values()))["device"]
    print(f"\nmodel: 2 conv blocks, width {args.width}, batch norm, fc128; "
          f"batch {args.batch_size}; {args.images:,} timed images; device {device}")
    print(f"{'variant':<20}{'precision':>10}{'NHWC':>6}{'images/s':>12}{'ratio':>8}"
          f"{'peak MB':>10}")
    for variant, r in results.items():
        ratio = r["images_per_second"] / base["images_per_second"] if base else float("nan")
        print(f"{variant:<20}{r['precision']:>10}{'yes' if r['channels_last'] else 'no':>6}"
              f"{r['images_per_second']:>12,.0f}{ratio:>8.2f}{r['peak_memory_mb']:>10,.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
