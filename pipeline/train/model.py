"""A family of CNNs for 28x28 digits, built from hyperparameters.

One spec, one builder. The seed reports' models are points of this space, for example:

* 2-conv 16/32 (report B): depth 2, width 16, kernel 5, no batch norm, fc_layers 0;
* LeNet-5-like (report G): depth 2, width 6, kernel 5, padding valid, fc_width 120, fc_layers 2;
* VGG-style 64/128 with batch norm (report E): depth 2, width 64, convs_per_block 2, batch norm,
  fc_width 256, fc_layers 2, dropout 0.5;
* residual (report F): depth 2, width 16, kernel 5, padding valid, no batch norm, residual,
  fc_layers 0;
* MLP 784-300-100-10 with batch norm (report H): depth 0, fc_width 300, fc_layers 2, fc_shrink 3,
  fc_batch_norm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.settings import (
    NUM_CLASSES,
    ModelSpec,
    block_widths,
    check_spec,
    fc_widths,
    spatial_sizes,
)

# MNIST's pixel mean and std; the network standardises its own input so that exported models
# take plain [0, 1] images.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class Standardize(nn.Module):
    """Maps [0, 1] pixels to MNIST's zero-mean, unit-variance scale inside the network."""

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions that keep the size, added back onto their input (report F's block):
    out = relu(x + conv(relu(conv(x))))."""

    def __init__(self, channels: int, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            if i == 0:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def build_model(spec: ModelSpec, *, seed: int | None = None) -> nn.Module:
    """The CNN described by ``spec``: (N, 1, 28, 28) pixels in [0, 1] -> (N, 10) logits.

    With ``seed`` the initial weights are reproducible and the global random state is untouched.
    """
    check_spec(spec)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(spec)
    convs, channels = _conv_blocks(spec)
    side = spatial_sizes(spec)[-1]
    model = nn.Sequential(Standardize(), *convs, nn.Flatten(),
                          *_dense_head(spec, channels * side * side))
    _init_weights(model)
    return model


def _conv_blocks(spec: ModelSpec) -> tuple[list[nn.Module], int]:
    """Each block's convolutions (with batch norm and ReLU), its pooling, and after it the
    residual block and channel dropout when asked; and the channels that come out."""
    layers: list[nn.Module] = []
    in_ch = 1
    padding = spec.kernel_size // 2 if spec.padding == "same" else 0
    for out_ch in block_widths(spec):
        for _ in range(spec.convs_per_block):
            # A conv followed by batch norm needs no bias: BN's shift replaces it.
            layers.append(nn.Conv2d(in_ch, out_ch, spec.kernel_size, padding=padding,
                                    bias=not spec.batch_norm))
            if spec.batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=True))
            in_ch = out_ch
        layers.append(nn.MaxPool2d(2) if spec.pool == "max" else nn.AvgPool2d(2))
        if spec.residual:
            layers.append(ResidualBlock(out_ch, spec.batch_norm))
        if spec.conv_dropout:
            layers.append(nn.Dropout2d(spec.conv_dropout))
    return layers, in_ch


def _dense_head(spec: ModelSpec, features: int) -> list[nn.Module]:
    """The hidden dense layers (dropout before each), then the 10 logits."""
    layers: list[nn.Module] = []
    for units in fc_widths(spec):
        if spec.dropout:
            layers.append(nn.Dropout(spec.dropout))
        # As with convolutions, batch norm's shift makes the layer's bias redundant.
        layers.append(nn.Linear(features, units, bias=not spec.fc_batch_norm))
        if spec.fc_batch_norm:
            layers.append(nn.BatchNorm1d(units))
        layers.append(nn.ReLU(inplace=True))
        features = units
    if spec.dropout:
        layers.append(nn.Dropout(spec.dropout))
    layers.append(nn.Linear(features, NUM_CLASSES))
    return layers


def _init_weights(model: nn.Module) -> None:
    # He initialisation suits ReLU networks (report E used it); biases start at zero.
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(spec: ModelSpec) -> str:
    """A one-line picture of the network, e.g. ``conv32 → pool → conv64 → pool → fc128 → 10``."""
    parts = []
    for w in block_widths(spec):
        parts.append("→".join([f"conv{w}k{spec.kernel_size}"] * spec.convs_per_block))
        parts.append(f"{spec.pool}pool")
        if spec.residual:
            parts.append(f"res{w}")
    parts += [f"fc{u}" + ("bn" if spec.fc_batch_norm else "") for u in fc_widths(spec)]
    parts.append(str(NUM_CLASSES))
    return " → ".join(parts)


class DigitReader(nn.Module):
    """What is shipped: (N, 28, 28) float pixels in [0, 1], white digit on black -> (N,) digits.

    MLflow's pyfunc and `mlflow models serve` call this, so they answer with digits, not logits.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.unsqueeze(1)).argmax(dim=1)


class Ensemble(nn.Module):
    """Several trained networks read as one: (N, 1, 28, 28) -> (N, 10) scores whose softmax is
    the average of the members' probabilities (the log of that average, taken in log space so
    that a class every member all but rules out stays finite). Shipped like a single network:
    the digit is its argmax, its probabilities its softmax."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probabilities = torch.stack([F.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(self.members))


# A shipped model's architecture, in its metadata: a ModelSpec's fields, or for an ensemble
# {ENSEMBLE_KEY: [fields of each member]}.
ENSEMBLE_KEY = "ensemble_of"


def architecture_of(specs: list[ModelSpec]) -> dict:
    """The architecture metadata of one network (one spec) or of an ensemble (several)."""
    if len(specs) == 1:
        return specs[0].to_dict()
    return {ENSEMBLE_KEY: [spec.to_dict() for spec in specs]}


def build_from_architecture(architecture: dict) -> nn.Module:
    """The untrained network (or ensemble) an architecture's metadata describes."""
    if ENSEMBLE_KEY in architecture:
        return Ensemble([build_model(ModelSpec(**member))
                         for member in architecture[ENSEMBLE_KEY]])
    return build_model(ModelSpec(**architecture))
