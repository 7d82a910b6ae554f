"""Training and evaluation with the data resident on the training device.

The whole training set lives on the device as uint8; each epoch shuffles it by index there, and
each batch is gathered, scaled to [0, 1], augmented and fed to the network without touching the
host. Loss and accuracy accumulate in device tensors that are read once per epoch, so nothing
waits on the device between steps.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from pipeline.core.errors import NonFiniteLossError
from pipeline.core.settings import TrainSettings
from pipeline.core.timings import Stopwatch
from pipeline.data.augment import random_affine
from pipeline.data.splits import DataSplits, Split, to_unit_pixels
from pipeline.train.plan import ExecutionPlan, configure_backends, plan_execution
from pipeline.train.steps import StepRunner


@dataclass(frozen=True)
class EpochStats:
    """What one epoch measured; the per-epoch callback and MLflow get exactly this."""

    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float  # learning rate at the end of the epoch
    seconds: float  # training and evaluation wall time of the epoch
    images_per_second: float  # training images per second of training time


@dataclass(frozen=True)
class Report:
    """One validation measurement for the pruner: after each epoch, and ``reports_per_epoch - 1``
    more times inside every epoch when a space asks for fractions of an epoch."""

    step: int  # 1-based count of reports; an epoch is ``reports_per_epoch`` steps
    epochs: float  # passes over the training images so far, e.g. 0.25
    val_accuracy: float
    val_loss: float


@dataclass
class FitResult:
    history: list[EpochStats]
    val_predictions: torch.Tensor  # final model's predicted digit per validation image (CPU)
    plan: ExecutionPlan
    train_seconds: float = 0.0  # training steps (with the reads that end each epoch)
    eval_seconds: float = 0.0  # every validation pass, those inside epochs included

    @property
    def device(self) -> torch.device:
        return self.plan.device

    @property
    def precision(self) -> str:
        return self.plan.precision

    @property
    def channels_last(self) -> bool:
        return self.plan.channels_last

    @property
    def final(self) -> EpochStats:
        return self.history[-1]


def make_optimizer(model: nn.Module, s: TrainSettings, *,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """The optimiser; ``capturable`` keeps its step count and learning rate on the device, so a
    CUDA graph can replay its update while the schedule changes the rate (adam, adamw, rmsprop).
    """
    # Weight decay on weights only: decaying batch-norm scales and biases hurts small nets.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": s.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum,
                               nesterov=s.nesterov and s.momentum > 0)
    on_device = {}
    if capturable:
        device = next(model.parameters()).device
        on_device = {"capturable": True, "lr": torch.tensor(s.lr, device=device)}
    if s.optimizer == "adam":
        return torch.optim.Adam(groups, **{"lr": s.lr, **on_device})
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, **{"lr": s.lr, **on_device})
    return torch.optim.RMSprop(groups, **{"lr": s.lr, "momentum": s.momentum, **on_device})


def make_schedule(optimizer: torch.optim.Optimizer, s: TrainSettings, total_steps: int):
    """A per-step schedule. Stepped after every optimiser step, so epoch 1 runs at its own rate."""
    if s.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=s.lr, total_steps=total_steps, pct_start=s.warmup,
            cycle_momentum=s.optimizer == "sgd" and s.momentum > 0,
        )
    if s.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


class WeightAverage:
    """An exponential moving average of a network's weights and batch-norm statistics, updated
    after every step by torch.optim.swa_utils' EMA function. The decay warms up, min(decay,
    (1 + n) / (10 + n)) at the n-th update after the first (which copies): with a fixed 0.999 a
    short run's average would still hold much of its first, untrained steps.

    The copy is kept here rather than in swa_utils' AveragedModel: its update reads its counter
    on the host every step, a device sync per step on a GPU, which this trainer (and its CUDA
    graph) otherwise never makes."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(model).requires_grad_(False)
        # The same tensors every step (the trainer moves the model before, and loads into it
        # in place after): paired once, not on every step.
        pairs = list(zip(_state(self.module), _state(model), strict=True))
        self.floats = ([o for o, _ in pairs if o.is_floating_point()],
                       [t for o, t in pairs if o.is_floating_point()])
        self.counts = [(o, t) for o, t in pairs if not o.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the network's weights as they are after this step."""
        rate = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.updates else 0.0
        get_ema_multi_avg_fn(rate)(*self.floats, None)
        for ours, theirs in self.counts:  # batch norm's count of batches: the latest
            ours.copy_(theirs)
        self.updates += 1


def _state(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]


def weight_average(model: nn.Module, decay: float) -> WeightAverage | None:
    """The average ``ema_decay`` asks for, or None when it is 0."""
    return WeightAverage(model, decay) if decay else None


def _autocast(device: torch.device, precision: str, *, cache: bool = True):
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return nullcontext()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Split,
    *,
    batch_size: int = 2048,
    device: torch.device | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[float, float, torch.Tensor]:
    """Mean loss, accuracy and predicted digits of ``model`` on ``data``, in large batches.

    ``data`` may live on the CPU or already on ``device``; predictions come back on the CPU. The
    loss and the count of right answers stay on the device until one read at the end.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    images = data.images.to(device, non_blocking=True)
    labels = data.labels.to(device, non_blocking=True)
    loss_sum = torch.zeros((), device=device)
    predictions = torch.empty(len(labels), dtype=torch.long, device=device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for start in range(0, len(labels), batch_size):
        x = to_unit_pixels(images[start:start + batch_size]).unsqueeze(1)
        x = x.contiguous(memory_format=memory_format)
        with _autocast(device, precision):
            logits = model(x)
        y = labels[start:start + batch_size]
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        predictions[start:start + batch_size] = logits.argmax(dim=1)
    model.train(was_training)
    n = max(1, len(labels))
    correct = (predictions == labels).sum()
    loss, right = torch.stack([loss_sum, correct.float()]).tolist()  # the one read
    return loss / n, right / n, predictions.cpu()


@dataclass
class Hooks:
    """What ``fit`` tells its caller as it trains. Any of them may raise to stop training (a
    search's pruner raises TrialPruned, a stop request KeyboardInterrupt)."""

    on_epoch_end: Callable[[EpochStats], None] | None = None
    on_report: Callable[[Report], None] | None = None  # after each validation measurement
    # ``on_step(step, steps_per_epoch)`` every ``step_every`` steps, for progress bars; it reads
    # nothing from the device.
    on_step: Callable[[int, int], None] | None = None
    step_every: int = 25


@dataclass(frozen=True)
class Reporting:
    """How often the pruner is told: ``per_epoch`` reports an epoch, its end one of them. Those
    inside an epoch may measure only the first ``inside_val_size`` validation images (the split
    is shuffled, so they are a random sample): a pruner's decision part-way through an epoch
    needs a ranking, not the last decimal, and on a CPU 5,000 images measured four times an
    epoch cost a sixth of a trial. Every epoch's end measures them all."""

    per_epoch: int = 1
    inside_val_size: int | None = None


ONCE_AN_EPOCH = Reporting()


def fit(model: nn.Module, data: DataSplits, settings: TrainSettings, hooks: Hooks | None = None,
        *, reporting: Reporting = ONCE_AN_EPOCH, watch: Stopwatch | None = None) -> FitResult:
    """Train ``model`` on ``data.train``, evaluating on ``data.val`` after every epoch (and
    inside epochs, as ``reporting`` asks, when there is an ``on_report`` hook).

    Raises NonFiniteLossError when the loss diverges. The model is left on the training device,
    in eval mode. ``watch`` gets the seconds of training steps and validation passes as they
    happen, so a run stopped part-way has them too.
    """
    return _Training(model, data, settings, hooks or Hooks(), reporting,
                     watch if watch is not None else Stopwatch()).run()


class _Training:
    """One call of ``fit``: the model and its data on the device, the optimiser and schedule,
    the step runner, and the epoch's running sums, which stay on the device until the epoch's
    one read."""

    def __init__(self, model: nn.Module, data: DataSplits, settings: TrainSettings,
                 hooks: Hooks, reporting: Reporting, watch: Stopwatch) -> None:
        self.model, self.settings, self.hooks, self.watch = model, settings, hooks, watch
        self.plan = plan_execution(model, settings)
        device = self.plan.device
        configure_backends(device)
        self.memory_format = (torch.channels_last if self.plan.channels_last
                              else torch.contiguous_format)
        torch.manual_seed(settings.seed)
        self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        model.to(device=device, memory_format=self.memory_format).train()
        self.step_model = torch.compile(model) if settings.compile else model
        # Resident data: uint8 on the device costs 784 bytes per image (43 MB for all of
        # MNIST). A search moves it there once per process; then these are no-ops.
        self.train_x = data.train.images.to(device)
        self.train_y = data.train.labels.to(device)
        self.val = Split(data.val.images.to(device), data.val.labels.to(device))
        size = reporting.inside_val_size
        self.inside_val = Split(self.val.images[:size], self.val.labels[:size]) if size \
            else self.val
        # Drop the ragged last batch: a batch of one breaks batch norm, and the images it would
        # have held are in other batches next epoch, since every epoch reshuffles. Every step
        # then has the same shapes, which a CUDA graph needs.
        self.batch = min(settings.batch_size, len(self.train_y))
        self.steps = len(self.train_y) // self.batch
        # With ema_decay, what is evaluated (and kept at the end) is an average of the weights.
        self.averaged = weight_average(model, settings.ema_decay)
        self.optimizer = make_optimizer(model, settings, capturable=self.plan.cuda_graph)
        self.schedule = make_schedule(self.optimizer, settings, self.steps * settings.epochs)
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.run_step = StepRunner(self.step, self.optimizer, graph=self.plan.cuda_graph,
                                   batch=self.batch, device=device, generator=self.generator)
        # The steps after which a report falls inside an epoch (each epoch's end reports anyway),
        # and which report of the epoch each is.
        per_epoch = reporting.per_epoch if hooks.on_report is not None else 1
        self.per_epoch = reporting.per_epoch
        self.inside = {(j * self.steps) // per_epoch: j for j in range(1, per_epoch)}
        self.inside.pop(0, None)
        self.train_before = watch.seconds["train"]
        self.eval_before = watch.seconds["evaluate"]

    def run(self) -> FitResult:
        history: list[EpochStats] = []
        try:
            for epoch in range(1, self.settings.epochs + 1):
                history.append(self.epoch(epoch))
        finally:
            self.run_step.close()
        if self.averaged is not None:  # the averaged weights are the trained network
            self.model.load_state_dict(self.averaged.module.state_dict())
        self.model.eval()
        return FitResult(history, self.predictions, self.plan,
                         train_seconds=self.watch.seconds["train"] - self.train_before,
                         eval_seconds=self.watch.seconds["evaluate"] - self.eval_before)

    def step(self, idx: torch.Tensor) -> None:
        """The whole training step for the images ``idx``: gather, scale, augment, forward,
        loss, backward, update, and the epoch's sums (a NaN anywhere survives into them)."""
        s = self.settings
        x = to_unit_pixels(self.train_x[idx]).unsqueeze(1)
        x = random_affine(x, degrees=s.rotation, translate=s.translate, generator=self.generator)
        x = x.contiguous(memory_format=self.memory_format)
        y = self.train_y[idx]
        # A graph cannot cache autocast's weight casts across replays.
        with _autocast(self.plan.device, self.plan.precision, cache=not self.plan.cuda_graph):
            logits = self.step_model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=s.label_smoothing)
        loss.backward()
        self.optimizer.step()
        self.loss_sum.add_(loss.detach())
        self.correct.add_((logits.detach().argmax(dim=1) == y).sum())

    def epoch(self, epoch: int) -> EpochStats:
        """One pass over the shuffled training images, the reports inside it, then the
        validation that ends it."""
        start = self.segment_start = time.perf_counter()
        self.train_seconds = 0.0  # this epoch's steps, not what reports do between them
        self.loss_sum.zero_()
        self.correct.zero_()
        order = torch.randperm(len(self.train_y), device=self.plan.device,
                               generator=self.generator)
        for i in range(self.steps):
            self.run_step(order[i * self.batch:(i + 1) * self.batch])
            self.schedule.step()
            if self.averaged is not None:
                self.averaged.update()
            if self.hooks.on_step is not None and (i + 1) % self.hooks.step_every == 0:
                self.hooks.on_step(i + 1, self.steps)
            if i + 1 in self.inside:
                self.report_inside(epoch, self.inside[i + 1])
        train_loss, right = torch.stack([self.loss_sum, self.correct.float()]).tolist()
        train_loss /= self.steps
        self.end_segment()
        self.check_finite(train_loss, epoch)
        val_loss, val_accuracy, self.predictions = self.validate(self.val)
        self.check_finite(val_loss, epoch)
        stats = EpochStats(
            epoch=epoch, train_loss=train_loss, train_accuracy=right / (self.steps * self.batch),
            val_loss=val_loss, val_accuracy=val_accuracy, lr=self.lr(),
            seconds=time.perf_counter() - start,
            images_per_second=self.steps * self.batch / self.train_seconds)
        if self.hooks.on_epoch_end is not None:
            self.hooks.on_epoch_end(stats)
        if self.hooks.on_report is not None:
            self.hooks.on_report(Report(epoch * self.per_epoch, float(epoch), val_accuracy,
                                        val_loss))
        return stats

    def report_inside(self, epoch: int, j: int) -> None:
        """The j-th report of an epoch, on the sample of validation images."""
        self.end_segment()
        val_loss, val_accuracy, _ = self.validate(self.inside_val)
        self.check_finite(val_loss, epoch)
        self.hooks.on_report(Report((epoch - 1) * self.per_epoch + j,
                                    epoch - 1 + j / self.per_epoch, val_accuracy, val_loss))
        self.segment_start = time.perf_counter()  # the report's own time is not training

    def end_segment(self) -> None:
        """Count the training time since the last report (or the epoch's start)."""
        seconds = time.perf_counter() - self.segment_start
        self.train_seconds += seconds
        self.watch.add("train", seconds)

    def validate(self, split: Split) -> tuple[float, float, torch.Tensor]:
        net = self.model if self.averaged is None else self.averaged.module
        with self.watch("evaluate"):
            measured = evaluate(net, split, batch_size=self.settings.eval_batch_size,
                                device=self.plan.device, precision=self.plan.precision,
                                channels_last=self.plan.channels_last)
            self.model.train()
        return measured

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def check_finite(self, loss: float, epoch: int) -> None:
        """A NaN or infinite loss, in training or validation, ends the run as diverged."""
        if not math.isfinite(loss):
            raise NonFiniteLossError(epoch, self.lr())
