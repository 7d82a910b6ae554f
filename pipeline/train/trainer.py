"""Training and evaluation with the data resident on the training device.

The whole training set lives on the device as uint8; each epoch shuffles it by index there, and
each batch is gathered, scaled to [0, 1], augmented and fed to the network without touching the
host. Loss and accuracy accumulate in device tensors that are read once per epoch, so nothing
waits on the device between steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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


def fit(
    model: nn.Module,
    data: DataSplits,
    settings: TrainSettings,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    *,
    on_step: Callable[[int, int], None] | None = None,
    step_report_every: int = 25,
    on_report: Callable[[Report], None] | None = None,
    reports_per_epoch: int = 1,
    inside_val_size: int | None = None,
    watch: Stopwatch | None = None,
) -> FitResult:
    """Train ``model`` on ``data.train``, evaluating on ``data.val`` after every epoch.

    ``on_epoch_end(stats)`` runs after each epoch; ``on_report(report)`` after it, and also
    ``reports_per_epoch - 1`` times inside each epoch, at evenly spaced steps, each time after a
    validation pass; those inside an epoch measure only the first ``inside_val_size`` validation
    images when it is given (the split is shuffled, so they are a random sample), while every
    epoch's end measures all of them. Either may raise (a search raises TrialPruned) to stop
    training.
    ``on_step(step, steps_per_epoch)`` runs every ``step_report_every`` steps for progress bars
    and reads nothing from the device. Raises NonFiniteLossError when the loss diverges. The
    model is left on the training device, in eval mode. ``watch`` gets the seconds of training
    steps and validation passes as they happen, so a trial stopped part-way has them too.
    """
    watch = watch if watch is not None else Stopwatch()
    train_before, eval_before = watch.seconds["train"], watch.seconds["evaluate"]
    plan = plan_execution(model, settings)
    device, precision, channels_last = plan.device, plan.precision, plan.channels_last
    configure_backends(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    torch.manual_seed(settings.seed)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    model.to(device=device, memory_format=memory_format).train()
    step_model = torch.compile(model) if settings.compile else model

    # Resident data: uint8 on the device costs 784 bytes per image (43 MB for all of MNIST). A
    # search moves it there once per process; then these are no-ops.
    train_x = data.train.images.to(device)
    train_y = data.train.labels.to(device)
    val_split = Split(data.val.images.to(device), data.val.labels.to(device))
    # A pruner's decision part-way through an epoch needs a ranking, not the last decimal: on
    # a CPU, 5,000 images measured four times an epoch cost a sixth of a trial's time.
    inside_split = (Split(val_split.images[:inside_val_size], val_split.labels[:inside_val_size])
                    if inside_val_size else val_split)
    n = len(train_y)
    batch = min(settings.batch_size, n)
    # Drop the ragged last batch: a batch of one breaks batch norm, and the images it would
    # have held are in other batches next epoch, since every epoch reshuffles. Every step then
    # has the same shapes, which a CUDA graph needs.
    steps = n // batch
    optimizer = make_optimizer(model, settings, capturable=plan.cuda_graph)
    schedule = make_schedule(optimizer, settings, steps * settings.epochs)
    # The epoch's sums live on the device and are read once per epoch.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    # A graph cannot cache autocast's weight casts across replays.
    cache_casts = not plan.cuda_graph

    def step(idx: torch.Tensor) -> None:
        x = to_unit_pixels(train_x[idx]).unsqueeze(1)
        x = random_affine(x, degrees=settings.rotation, translate=settings.translate,
                          generator=generator)
        x = x.contiguous(memory_format=memory_format)
        y = train_y[idx]
        with _autocast(device, precision, cache=cache_casts):
            logits = step_model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=settings.label_smoothing)
        loss.backward()
        optimizer.step()
        # Accumulate on the device; a NaN anywhere in the epoch survives into the sum.
        loss_sum.add_(loss.detach())
        correct.add_((logits.detach().argmax(dim=1) == y).sum())

    run_step = StepRunner(step, optimizer, graph=plan.cuda_graph, batch=batch, device=device,
                      generator=generator)
    history: list[EpochStats] = []
    predictions = torch.empty(0, dtype=torch.long)
    # The steps after which a report falls inside an epoch (its end reports anyway).
    inside = {(j * steps) // reports_per_epoch: j for j in range(1, reports_per_epoch)} \
        if on_report is not None else {}
    inside.pop(0, None)

    def validate(split: Split) -> tuple[float, float, torch.Tensor]:
        with watch("evaluate"):
            measured = evaluate(model, split, batch_size=settings.eval_batch_size,
                                device=device, precision=precision, channels_last=channels_last)
            model.train()
        return measured

    try:
        for epoch in range(1, settings.epochs + 1):
            epoch_start = segment_start = time.perf_counter()
            train_seconds = 0.0  # of this epoch: its steps, not what reports do between them
            loss_sum.zero_()
            correct.zero_()
            order = torch.randperm(n, device=device, generator=generator)
            for i in range(steps):
                run_step(order[i * batch:(i + 1) * batch])
                schedule.step()
                if on_step is not None and (i + 1) % step_report_every == 0:
                    on_step(i + 1, steps)
                if i + 1 in inside:
                    segment = time.perf_counter() - segment_start
                    train_seconds += segment
                    watch.add("train", segment)
                    val_loss, val_accuracy, _ = validate(inside_split)
                    if not math.isfinite(val_loss):
                        raise NonFiniteLossError(epoch, float(optimizer.param_groups[0]["lr"]))
                    j = inside[i + 1]
                    on_report(Report((epoch - 1) * reports_per_epoch + j,
                                     epoch - 1 + j / reports_per_epoch, val_accuracy, val_loss))
                    segment_start = time.perf_counter()
            train_loss, right = torch.stack([loss_sum, correct.float()]).tolist()  # one read
            train_loss /= steps
            segment = time.perf_counter() - segment_start
            train_seconds += segment
            watch.add("train", segment)
            lr = float(optimizer.param_groups[0]["lr"])
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(epoch, lr)
            val_loss, val_accuracy, predictions = validate(val_split)
            stats = EpochStats(
                epoch=epoch,
                train_loss=train_loss,
                train_accuracy=right / (steps * batch),
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                lr=lr,
                seconds=time.perf_counter() - epoch_start,
                images_per_second=steps * batch / train_seconds,
            )
            if not math.isfinite(val_loss):
                raise NonFiniteLossError(epoch, lr)
            history.append(stats)
            if on_epoch_end is not None:
                on_epoch_end(stats)
            if on_report is not None:
                on_report(Report(epoch * reports_per_epoch, float(epoch), val_accuracy,
                                 val_loss))
    finally:
        run_step.close()
    model.eval()
    return FitResult(history, predictions, plan,
                     train_seconds=watch.seconds["train"] - train_before,
                     eval_seconds=watch.seconds["evaluate"] - eval_before)
