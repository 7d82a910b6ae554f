"""Where and how a network trains, decided once per run: the device, the precision, the memory
layout, and whether the training step is captured as a CUDA graph. Logged with the run
(``ExecutionPlan.params``) and followed by the trainer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.core.errors import DeviceError
from pipeline.core.settings import GRAPH_OPTIMIZERS, TrainSettings


def choose_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for 'auto'; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} asked for, but CUDA is not available here; "
                              "use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} asked for, but only "
                              f"{torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise DeviceError(f"device {name!r} asked for, but MPS is not available here")
    return device


def cpu_has_fast_bf16() -> bool:
    """AMX tiles make bf16 convolutions several times faster than fp32 on a CPU (measured 2.5x)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def resolve_precision(setting: str, device: torch.device) -> str:
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def resolve_channels_last(setting: str, device: torch.device, first_width: int) -> bool:
    # Measured on a 2-core CPU: NHWC helps from 16 channels up and hurts at 8. GPUs' tensor cores
    # want NHWC for convolutions in reduced precision.
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return True
    return first_width >= 16


def resolve_cuda_graph(settings: TrainSettings, device: torch.device) -> bool:
    """Whether the training step is captured once and replayed as a CUDA graph.

    A small MNIST network's eager step is a few hundred kernel launches of microseconds each, so
    the GPU waits on Python; one graph replay launches them all at once. It needs CUDA, an
    optimiser that reads its learning rate on the device, and no torch.compile (which makes its
    own graphs).
    """
    if settings.cuda_graph == "off" or device.type != "cuda" or settings.compile:
        return False
    return settings.optimizer in GRAPH_OPTIMIZERS


@dataclass(frozen=True)
class ExecutionPlan:
    """Where and how a model trains: decided once, logged with the run, used by ``fit``."""

    device: torch.device
    precision: str  # "bf16" or "fp32"
    channels_last: bool
    cuda_graph: bool = False

    def params(self) -> dict[str, object]:
        """The plan as MLflow params."""
        return {"used_device": self.device, "used_precision": self.precision,
                "used_channels_last": self.channels_last, "used_cuda_graph": self.cuda_graph}


def plan_execution(model: nn.Module, settings: TrainSettings,
                   device: torch.device | None = None) -> ExecutionPlan:
    """The plan for ``model``; ``device`` skips the availability check (tests plan for CUDA)."""
    device = device if device is not None else choose_device(settings.device)
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return ExecutionPlan(
        device=device,
        precision=resolve_precision(settings.precision, device),
        channels_last=resolve_channels_last(
            settings.channels_last, device, first_conv.out_channels if first_conv else 0),
        cuda_graph=resolve_cuda_graph(settings, device),
    )


def configure_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick kernels once
        torch.set_float32_matmul_precision("high")  # TF32 for any fp32 matmul left
        torch.backends.cudnn.allow_tf32 = True
