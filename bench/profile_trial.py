"""Where one trial's training time goes on a GPU, and what capturing the step in a CUDA graph buys.

For a few networks of the default space, trains the same configuration twice in this process:
eager (``cuda_graph off``) and captured (``cuda_graph on``), same data, seed and steps. Reports
steady-state training images/s (the second epoch; the first holds cuDNN's kernel search and, for
the graph, the warm-up and capture), what the first epoch cost on top of a steady one, the ratio,
and, from torch.profiler over one epoch, how busy the GPU was (kernel time over wall time).

    python bench/profile_trial.py                    # on the GPU of this machine
    python bench/profile_trial.py --images 55000 --table   # full epochs; top kernels of each
"""

from __future__ import annotations

import argparse
import time

# (label, model keys): small to large networks of search_spaces/default.yaml.
NETWORKS = [
    ("d2 w16 k3", dict(depth=2, width=16, fc_width=128)),
    ("d3 w32 k3 x2", dict(depth=3, width=32, convs_per_block=2, fc_width=256)),
    ("d3 w64 k5 x2", dict(depth=3, width=64, kernel_size=5, convs_per_block=2, fc_width=256,
                          fc_layers=2)),
    ("d2 w128 k3 x2", dict(depth=2, width=128, convs_per_block=2, fc_width=512)),
]


def train_once(data, model_keys: dict, graph: str, args, *, profile: bool = False):
    import torch

    from pipeline.core.settings import ModelSpec, TrainSettings
    from pipeline.train.model import build_model
    from pipeline.train.trainer import Hooks, fit

    settings = TrainSettings(epochs=2, batch_size=args.batch_size, optimizer="adamw", lr=3e-3,
                             rotation=10.0, translate=0.05, device=args.device, cuda_graph=graph)
    model = build_model(ModelSpec(**model_keys), seed=0)
    epoch_seconds: list[float] = []
    busy = None
    if not profile:
        result = fit(model, data, settings,
                     Hooks(on_epoch_end=lambda s: epoch_seconds.append(s.seconds)))
        return result, epoch_seconds, busy
    from torch.profiler import ProfilerActivity, schedule
    from torch.profiler import profile as torch_profile

    # Profile the second epoch only: steady state, after kernel selection and capture.
    steps_per_epoch = len(data.train) // args.batch_size
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                       schedule=schedule(wait=steps_per_epoch, warmup=0, active=steps_per_epoch,
                                         repeat=1)) as prof:
        wall = {}

        def on_step(step, steps):
            prof.step()

        def on_epoch(stats):
            epoch_seconds.append(stats.seconds)
            wall[stats.epoch] = stats.seconds

        result = fit(model, data, settings,
                     Hooks(on_epoch_end=on_epoch, on_step=on_step, step_every=1))
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    busy = kernel_us / 1e6 / wall[2]
    if args.table:
        print(events.table(sort_by="self_cuda_time_total", row_limit=10))
    return result, epoch_seconds, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--table", action="store_true", help="print the top kernels")
    parser.add_argument("--no-profile", action="store_true",
                        help="time only (the profiler adds its own overhead)")
    args = parser.parse_args()

    import torch

    from pipeline.core.settings import DataSettings
    from pipeline.data.splits import load_mnist, split_train_val

    data = split_train_val(load_mnist(), DataSettings(train_subset=args.images)).to(args.device)
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else args.device
    print(f"device {name}; {args.images:,} images/epoch, batch "
          f"{args.batch_size}, adamw, rotation 10, translate 0.05, bf16 autocast, NHWC")
    rows = []
    for label, keys in NETWORKS:
        for graph in ("off", "on"):
            start = time.perf_counter()
            result, seconds, busy = train_once(data, keys, graph, args,
                                               profile=not args.no_profile)
            total = time.perf_counter() - start
            steady = result.history[-1].images_per_second
            extra = seconds[0] - seconds[1]
            rows.append((label, graph, steady, extra, busy, result.final.val_accuracy, total))
            print(f"  {label} graph {graph}: {steady:,.0f} img/s", flush=True)
    print(f"\n{'network':<15}{'graph':>6}{'images/s':>11}{'ratio':>7}{'1st epoch +s':>13}"
          f"{'GPU busy':>10}{'val acc':>9}")
    eager = {}
    for label, graph, steady, extra, busy, acc, _ in rows:
        if graph == "off":
            eager[label] = steady
        ratio = steady / eager[label]
        shown = f"{busy:.0%}" if busy is not None else "–"
        print(f"{label:<15}{graph:>6}{steady:>11,.0f}{ratio:>7.2f}{extra:>13.2f}{shown:>10}"
              f"{acc:>9.2%}")


if __name__ == "__main__":
    main()
