"""Typed hyperparameters: what a network is, how it is trained, which data it sees.

Plain data with validation and no torch import, so that the CLI can build its options and check a
configuration or a search space without loading the machinery. Every field is a key of the one
flat namespace shared by `pipeline train`, search-space files and MLflow params (see hparams.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from pipeline.core.errors import ArchitectureError, UsageError


@dataclass(frozen=True)
class Bounds:
    """The values a numeric key takes: checked by the settings, shown by the documentation."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False  # a whole number (a bool is not one)
    unit: str = ""
    high_text: str = ""  # a highest value that depends on another key, in words

    def __str__(self) -> str:
        high = self.high_text or (f"{self.high:,}" if self.high is not None else "")
        if self.whole:
            return f"whole number from {self.low:,} to {high}" if high else \
                f"whole number >= {self.low:,}"
        if not high:
            return f"{'>' if self.low_open else '>='} {self.low:g}{self.unit}"
        return (f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}{self.unit}")

    def holds(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.whole else (int, float)):
            return False
        above = value > self.low if self.low_open else value >= self.low
        if self.high is None:
            return above
        return above and (value < self.high if self.high_open else value <= self.high)

    def refusal(self, name: str, value) -> str:
        """The one line that says ``value`` is not one of these."""
        if self.whole or self.high is None:
            return f"{name} must be {'a ' if self.whole else ''}{self}, got {value!r}"
        return f"{name} must be in {self}, got {value!r}"


def _field(default, help: str, choices: tuple[str, ...] | None = None,
           bounds: Bounds | None = None):
    """A settings field whose help text (and choices) the CLI turns into an option, and whose
    bounds the settings check."""
    return field(default=default, metadata={"help": help, "choices": choices, "bounds": bounds})


def bounds_of(settings_class) -> dict[str, Bounds]:
    """The bounded keys of a settings class."""
    return {f.name: f.metadata["bounds"] for f in fields(settings_class)
            if f.metadata.get("bounds") is not None}


def _check_bounds(settings, error: type[Exception]) -> None:
    for name, bounds in bounds_of(type(settings)).items():
        if not bounds.holds(getattr(settings, name)):
            raise error(bounds.refusal(name, getattr(settings, name)))


# ---------------------------------------------------------------------------------------------
# Architecture

IMAGE_SIZE = 28
NUM_CLASSES = 10
POOLS = ("max", "avg")
PADDINGS = ("same", "valid")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture hyperparameters. Every field is a search-space and ``pipeline train`` key."""

    # Whole numbers: the highest are far beyond any useful MNIST network; they keep a typo (a
    # billion layers) from hanging the program instead of failing in one line. Widths stay
    # open-ended enough that a network too big for memory is a trial's out-of-memory outcome.
    depth: int = _field(2, "conv blocks; each ends in a 2x2 pooling (0: a dense network)",
                        bounds=Bounds(0, 16, whole=True))
    width: int = _field(32, "channels of the first block; block i has width*2^i",
                        bounds=Bounds(1, 1 << 20, whole=True))
    kernel_size: int = _field(3, "odd conv kernel size", bounds=Bounds(1, 27, whole=True))
    padding: str = _field("same", "'same' keeps the size, 'valid' shrinks it", PADDINGS)
    convs_per_block: int = _field(1, "conv layers per block (2 = VGG-style)",
                                  bounds=Bounds(1, 16, whole=True))
    batch_norm: bool = _field(True, "batch norm after every conv")
    pool: str = _field("max", "pooling at the end of each block", POOLS)
    conv_dropout: float = _field(0.0, "channel dropout after each block",
                                 bounds=Bounds(0, 1, high_open=True))
    residual: bool = _field(False, "a residual block (two 3x3 convs and a skip) after each "
                                   "conv block")
    fc_width: int = _field(128, "units of the first hidden dense layer",
                           bounds=Bounds(0, 1 << 30, whole=True))
    fc_layers: int = _field(1, "hidden dense layers, each 1/fc_shrink of the one before",
                            bounds=Bounds(0, 16, whole=True))
    fc_shrink: int = _field(2, "each hidden dense layer has 1/fc_shrink the units of the one "
                               "before (2 halves them)", bounds=Bounds(1, 16, whole=True))
    fc_batch_norm: bool = _field(False, "batch norm after every hidden dense layer")
    dropout: float = _field(0.0, "dropout before every dense layer",
                            bounds=Bounds(0, 1, high_open=True))

    def __post_init__(self) -> None:
        check_spec(self)

    def to_dict(self) -> dict:
        return asdict(self)


MODEL_KEYS = tuple(f.name for f in fields(ModelSpec))


def _refuse(spec: ModelSpec, why: str) -> ArchitectureError:
    return ArchitectureError(f"impossible architecture ({describe_brief(spec)}): {why}")


def describe_brief(spec: ModelSpec) -> str:
    return (
        f"depth {spec.depth}, width {spec.width}, kernel {spec.kernel_size}, "
        f"padding {spec.padding}, {spec.convs_per_block} conv(s)/block"
    )


def spatial_sizes(spec: ModelSpec) -> list[int]:
    """Feature-map side after the input and after every block: [28, 14, 7, ...]."""
    sizes = [IMAGE_SIZE]
    size = IMAGE_SIZE
    shrink = 0 if spec.padding == "same" else spec.kernel_size - 1
    for _ in range(spec.depth):
        size -= shrink * spec.convs_per_block
        if size < 1:
            sizes.append(size)
            break
        size //= 2
        sizes.append(size)
        if size < 1:
            break
    return sizes



def _check_values(spec: ModelSpec) -> None:
    """Each key on its own: numbers in range, known names, true/false."""
    _check_bounds(spec, ArchitectureError)
    if spec.pool not in POOLS:
        raise ArchitectureError(f"pool must be one of {', '.join(POOLS)}, got {spec.pool!r}")
    if spec.padding not in PADDINGS:
        raise ArchitectureError(
            f"padding must be one of {', '.join(PADDINGS)}, got {spec.padding!r}")
    for name in ("batch_norm", "residual", "fc_batch_norm"):
        if not isinstance(getattr(spec, name), bool):
            raise ArchitectureError(f"{name} must be true or false, got "
                                    f"{getattr(spec, name)!r}")


def check_spec(spec: ModelSpec) -> None:
    """Refuse, with the reason, any combination that cannot make a network for 28x28 inputs."""
    _check_values(spec)
    if spec.kernel_size % 2 == 0:
        k = spec.kernel_size
        raise _refuse(spec, f"kernel_size must be odd so 'same' padding is symmetric, got {k}; "
                            f"use {k - 1} or {k + 1}")
    if spec.residual and spec.depth == 0:
        raise _refuse(spec, "residual blocks follow conv blocks, and depth 0 has none; use "
                            "depth >= 1 or no residual")
    if spec.fc_layers > 0 and spec.fc_width // spec.fc_shrink ** (spec.fc_layers - 1) < 1:
        least = spec.fc_shrink ** (spec.fc_layers - 1)
        raise _refuse(spec, f"fc_width {spec.fc_width} cannot be shrunk by {spec.fc_shrink} "
                            f"into {spec.fc_layers} hidden layers; use fc_width >= {least:,}")
    sizes = spatial_sizes(spec)
    if sizes[-1] < 1 or len(sizes) < spec.depth + 1:
        trace = "→".join(str(max(s, 0)) for s in sizes)
        fix = ("use fewer blocks" if spec.padding == "same"
               else "use padding 'same', a smaller kernel or fewer blocks")
        raise _refuse(spec, f"the 28x28 input shrinks to nothing ({trace}) before block "
                            f"{len(sizes) - 1} ends; {fix}")


def block_widths(spec: ModelSpec) -> list[int]:
    return [spec.width * 2**i for i in range(spec.depth)]


def fc_widths(spec: ModelSpec) -> list[int]:
    return [spec.fc_width // spec.fc_shrink**i for i in range(spec.fc_layers)]


# ---------------------------------------------------------------------------------------------
# Training

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("onecycle", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
CHANNELS_LAST = ("auto", "on", "off")
CUDA_GRAPH = ("auto", "on", "off")
# Optimisers whose update reads its learning rate on the device (capturable=True), so a CUDA
# graph can replay it while the schedule changes the rate. SGD reads it on the host.
GRAPH_OPTIMIZERS = ("adam", "adamw", "rmsprop")
_AT_LEAST_ONE = Bounds(1, whole=True)


@dataclass(frozen=True)
class TrainSettings:
    """How a network is trained. Every field is a search-space and ``pipeline train`` key."""

    epochs: int = _field(3, "passes over the training images", bounds=_AT_LEAST_ONE)
    batch_size: int = _field(128, "images per optimisation step", bounds=_AT_LEAST_ONE)
    optimizer: str = _field("adamw", "optimiser", OPTIMIZERS)
    lr: float = _field(3e-3, "peak learning rate", bounds=Bounds(0, low_open=True))
    momentum: float = _field(0.9, "momentum for sgd and rmsprop",
                             bounds=Bounds(0, 1, high_open=True))
    nesterov: bool = _field(True, "Nesterov momentum for sgd")
    weight_decay: float = _field(5e-4, "L2 penalty (decoupled for adamw)", bounds=Bounds(0))
    schedule: str = _field("onecycle", "learning-rate schedule", SCHEDULES)
    warmup: float = _field(0.2, "onecycle: fraction of steps spent warming up",
                           bounds=Bounds(0, 1, low_open=True, high_open=True))
    label_smoothing: float = _field(0.0, "cross-entropy label smoothing",
                                    bounds=Bounds(0, 1, high_open=True))
    rotation: float = _field(0.0, "random rotation, ± degrees per image (0 = off)",
                             bounds=Bounds(0, 180, unit=" degrees"))
    translate: float = _field(0.0, "random shift, ± fraction of the side (0 = off)",
                              bounds=Bounds(0, 0.5, high_open=True))
    ema_decay: float = _field(0.0, "exponential moving average of the weights, this decay "
                              "per step, evaluated and shipped instead of the last weights "
                              "(0 = off)", bounds=Bounds(0, 1, high_open=True))
    eval_batch_size: int = _field(2048, "images per evaluation batch", bounds=_AT_LEAST_ONE)
    seed: int = _field(0, "seeds weights, shuffling and augmentation")
    device: str = _field("auto", "auto (cuda, mps, cpu), or a torch device")
    precision: str = _field("auto", "bf16 autocast or fp32 (auto: bf16 where fast)", PRECISIONS)
    channels_last: str = _field("auto", "NHWC memory layout", CHANNELS_LAST)
    compile: bool = _field(False, "torch.compile the model (pays off on GPUs)")
    cuda_graph: str = _field("auto", "capture the training step in a CUDA graph and replay it "
                                     "(auto: on CUDA with adam, adamw or rmsprop)", CUDA_GRAPH)

    def __post_init__(self) -> None:
        check_settings(self)

    def to_dict(self) -> dict:
        return asdict(self)


def check_settings(s: TrainSettings) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise UsageError(message)

    _check_bounds(s, UsageError)
    need(s.optimizer in OPTIMIZERS,
         f"unknown optimizer {s.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    need(s.schedule in SCHEDULES,
         f"unknown schedule {s.schedule!r}; choose from {', '.join(SCHEDULES)}")
    need(s.precision in PRECISIONS,
         f"unknown precision {s.precision!r}; choose from {', '.join(PRECISIONS)}")
    need(s.channels_last in CHANNELS_LAST,
         f"channels_last must be auto, on or off, got {s.channels_last!r}")
    need(s.cuda_graph in CUDA_GRAPH,
         f"cuda_graph must be auto, on or off, got {s.cuda_graph!r}")
    need(s.cuda_graph != "on" or s.optimizer in GRAPH_OPTIMIZERS,
         f"cuda_graph on needs optimizer {', '.join(GRAPH_OPTIMIZERS)} (sgd reads its learning "
         f"rate on the host, so a graph cannot replay it); use cuda_graph auto or off")
    need(s.cuda_graph != "on" or not s.compile,
         "cuda_graph on and compile do not go together: torch.compile makes its own graphs")


# ---------------------------------------------------------------------------------------------
# Data

TRAINING_IMAGES = 60_000  # MNIST's official training set; validation is carved out of it


@dataclass(frozen=True)
class DataSettings:
    """Which images a run trains and validates on. The test set is never part of it."""

    val_size: int = _field(5000, "validation images carved from the training set",
                           bounds=Bounds(1, TRAINING_IMAGES - 1, whole=True))
    split_seed: int = _field(0, "seed of the train/validation split",
                             bounds=Bounds(0, whole=True))
    train_subset: int | None = _field(
        None, "train on only this many images (default: all)",
        bounds=Bounds(1, TRAINING_IMAGES, whole=True, high_text="60,000 minus val_size"))

    def __post_init__(self) -> None:
        check_data(self)


def _whole(value, name: str, bounds: Bounds, high: int | None = None, unit: str = "") -> None:
    low, high = int(bounds.low), high if high is not None else bounds.high
    fits = isinstance(value, int) and not isinstance(value, bool) and value >= low and (
        high is None or value <= high)
    if not fits:
        bound = f"between {low:,} and {high:,}" if high is not None else f">= {low}"
        raise UsageError(f"{name} must be a whole number {bound}{unit}, got {value!r}")


def check_data(d: DataSettings) -> None:
    bounds = bounds_of(DataSettings)
    _whole(d.val_size, "val_size", bounds["val_size"])
    _whole(d.split_seed, "split_seed", bounds["split_seed"])
    if d.train_subset is not None:  # its highest depends on val_size
        _whole(d.train_subset, "train_subset", bounds["train_subset"],
               high=TRAINING_IMAGES - d.val_size, unit=" (60,000 minus val_size)")
