"""What a network costs to run, beside how well it reads: its size, its arithmetic and its speed
on one CPU thread, measured for every trial once its network is built, before it trains (the
cost is the network's, not its training's).

The latency is what a demo, a phone or an ONNX runtime sees for one digit; images per second at
a batch is what a server sees. Both on one CPU thread, so that trials of one machine compare
whatever the search's device and thread settings were; numbers from different machines do not
compare. The measurement is kept short, as every trial pays it (0.041 s a trial in a 16-trial
search of small networks on a 2-core AMD EPYC: docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from pipeline.train.model import parameter_count

LATENCY_RUNS = 11  # one image at a time, after WARM_UP runs; the median is kept
WARM_UP = 2
BATCH = 32  # images per call for the throughput, timed over BATCH_RUNS calls after one more
BATCH_RUNS = 2


@dataclass(frozen=True)
class Cost:
    params: int  # trainable and not: everything the model file holds
    flops_per_image: int  # as torch.utils.flop_counter counts a forward pass
    latency_ms: float  # one image, one CPU thread, median
    images_per_second: float  # batches of BATCH, one CPU thread

    def metrics(self) -> dict[str, float]:
        """As the MLflow run logs them: cost_params, cost_latency_ms, ..."""
        return {f"cost_{name}": float(value) for name, value in asdict(self).items()}

    def attribute(self) -> dict[str, float]:
        """As the Optuna trial keeps them, in one attribute: params, latency_ms, ..."""
        return asdict(self)


def measure_cost(model: nn.Module, image_shape: tuple[int, ...] = (1, 28, 28)) -> Cost:
    """Measure a copy of ``model`` on the CPU, in eval mode; the model itself is untouched."""
    from torch.utils.flop_counter import FlopCounterMode

    net = copy.deepcopy(model).float().cpu().eval()
    one = torch.zeros((1, *image_shape))
    batch = torch.zeros((BATCH, *image_shape))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            counter = FlopCounterMode(display=False)
            with counter:
                net(one)
            for _ in range(WARM_UP):
                net(one)
            latencies = []
            for _ in range(LATENCY_RUNS):
                start = time.perf_counter()
                net(one)
                latencies.append(time.perf_counter() - start)
            net(batch)  # warm-up at the batch size
            start = time.perf_counter()
            for _ in range(BATCH_RUNS):
                net(batch)
            batch_seconds = (time.perf_counter() - start) / BATCH_RUNS
    finally:
        torch.set_num_threads(threads)
    return Cost(params=parameter_count(net), flops_per_image=int(counter.get_total_flops()),
                latency_ms=round(1000 * statistics.median(latencies), 4),
                images_per_second=round(BATCH / batch_seconds, 1))
