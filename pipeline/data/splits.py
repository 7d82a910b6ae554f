"""MNIST as tensors: the official training and test sets, read from their verified files, and the
seeded split of the training set into the images a run trains on and those it validates on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pipeline.core.settings import DataSettings
from pipeline.data.sources import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    Log,
    ensure_mnist,
    parse_idx,
)


def to_unit_pixels(images: torch.Tensor) -> torch.Tensor:
    """MNIST's uint8 pixels as float32 in [0, 1]: what every network `pipeline` builds, and every
    model it logs, takes (the networks standardise their own input)."""
    return images.to(torch.float32).div_(255.0)  # .to copies the uint8 images: div_ is safe


@dataclass(frozen=True)
class Split:
    """Images as uint8 (N, 28, 28) and labels as int64 (N,); CPU until a trainer moves them."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Mnist:
    """The official training and test sets, verified."""

    train: Split
    test: Split
    checksum: str


def load_mnist(data_dir: Path | None = None, *, log: Log = lambda message: None) -> Mnist:
    """Fetch if needed, verify, and parse the four files into uint8/int64 tensors."""
    files = ensure_mnist(data_dir, log=log)

    def read(name: str) -> torch.Tensor:
        array = parse_idx((files.folder / name).read_bytes(), name)
        return torch.from_numpy(array.copy())

    return Mnist(
        train=Split(read(TRAIN_IMAGES), read(TRAIN_LABELS).long()),
        test=Split(read(TEST_IMAGES), read(TEST_LABELS).long()),
        checksum=files.checksum,
    )


@dataclass(frozen=True)
class DataSplits:
    """Training and validation images carved from the official training set; no test images."""

    train: Split
    val: Split
    checksum: str
    val_size: int
    split_seed: int

    def to(self, device: torch.device | str) -> DataSplits:
        """The same splits on ``device`` (a search moves them once, not once per trial)."""
        return replace(self, train=self.train.to(device), val=self.val.to(device))


def split_train_val(mnist: Mnist, settings: DataSettings) -> DataSplits:
    """A seeded split of the 60,000 training images into validation and training parts.

    ``settings.train_subset`` keeps only that many training images (for quick CPU searches and
    tests); the validation part does not change with it, so results stay comparable. The
    settings checked their own ranges when they were made.
    """
    n = len(mnist.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(settings.split_seed))
    val_idx = order[:settings.val_size]
    subset = settings.train_subset
    train_idx = order[settings.val_size:n if subset is None else settings.val_size + subset]
    take = mnist.train
    return DataSplits(
        train=Split(take.images[train_idx], take.labels[train_idx]),
        val=Split(take.images[val_idx], take.labels[val_idx]),
        checksum=mnist.checksum,
        val_size=settings.val_size,
        split_seed=settings.split_seed,
    )
