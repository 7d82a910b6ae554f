"""Training steps run eagerly, or as replays of one captured CUDA graph."""

from __future__ import annotations

from collections.abc import Callable

import torch


class StepRunner:
    """Runs training steps, eagerly or as replays of one captured CUDA graph.

    ``step(idx)`` is the whole step for the batch of training images ``idx``: gather, scale,
    augment, forward, loss, backward, optimiser update, and the epoch's device-side sums. In
    graph mode the first ``WARMUP`` steps run eagerly on a side stream (cuDNN picks its kernels,
    the optimiser makes its state), the next is captured once, and every step after is a copy of
    the batch's indices into the graph's input and one replay.
    """

    WARMUP = 3

    def __init__(self, step: Callable[[torch.Tensor], None], optimizer: torch.optim.Optimizer,
                 *, graph: bool, batch: int, device: torch.device,
                 generator: torch.Generator) -> None:
        self.step = step
        self.optimizer = optimizer
        self.use_graph = graph
        self.device = device
        self.generator = generator
        self.done = 0
        self.graph = None
        self.static_idx = torch.zeros(batch, dtype=torch.long, device=device) if graph else None
        self.side = torch.cuda.Stream(device) if graph else None

    def __call__(self, idx: torch.Tensor) -> None:
        if not self.use_graph:
            self.optimizer.zero_grad(set_to_none=True)
            self.step(idx)
        elif self.graph is not None:
            self.static_idx.copy_(idx)
            self.graph.replay()
        elif self.done < self.WARMUP:
            self.side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.side):
                self.optimizer.zero_grad(set_to_none=True)
                self.step(idx)
            torch.cuda.current_stream(self.device).wait_stream(self.side)
        else:
            self._capture()
            self.static_idx.copy_(idx)
            self.graph.replay()  # capturing records the step; the replay runs it
        self.done += 1

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        # Augmentation draws from the run's own generator: the graph must advance it on every
        # replay, as eager steps do (the default generator, used by dropout, is registered
        # automatically).
        graph.register_generator_state(self.generator)
        # Gradients set to None before capture are allocated inside the graph's memory pool,
        # and every replay overwrites them: no zeroing step is needed.
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            self.step(self.static_idx)
        self.graph = graph

    def close(self) -> None:
        self.graph = None
        self.optimizer.zero_grad(set_to_none=True)  # let go of the graph pool's gradients
