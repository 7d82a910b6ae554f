"""Batched per-image rotation and shift on the training device."""

from __future__ import annotations

import torch

from pipeline.data.augment import random_affine


def _bars(n: int) -> torch.Tensor:
    """A vertical bar in every image: any rotation visibly changes it."""
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 4:24, 13:15] = 1.0
    return images


def test_zero_degrees_is_the_identity_at_no_cost():
    images = _bars(4)
    assert random_affine(images, degrees=0, translate=0) is images


def test_each_image_gets_its_own_angle():
    images = _bars(16)
    out = random_affine(images, degrees=30, generator=torch.Generator().manual_seed(0))
    # Identical inputs, different outputs: the angles differ within one batch.
    distinct = {tuple(img.flatten().round(decimals=3).tolist()) for img in out}
    assert len(distinct) == 16
    assert not torch.equal(out, images)


def test_shapes_dtypes_and_mass_are_kept():
    images = _bars(8)
    for dtype in (torch.float32, torch.bfloat16):
        out = random_affine(images.to(dtype), degrees=10, translate=0.05,
                            generator=torch.Generator().manual_seed(1))
        assert out.shape == images.shape and out.dtype == dtype
    out = random_affine(images, degrees=10, generator=torch.Generator().manual_seed(1))
    # A small rotation of a centred bar moves pixels but keeps (nearly) all of the ink.
    assert torch.allclose(out.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)), rtol=0.05)


def test_rotation_stays_within_the_bound():
    # A horizontal line rotated by at most 10 degrees keeps its ends within tan(10°)*half-length.
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 14, 2:26] = 1.0
    out = random_affine(images, degrees=10, generator=torch.Generator().manual_seed(2))
    rows_with_ink = (out[:, 0] > 0.05).any(dim=2)
    spread = rows_with_ink.float().sum(dim=1)
    # 12 px half-length * tan(10°) ≈ 2.1 px each way, plus bilinear blur: at most ~7 rows.
    assert spread.max() <= 7
    assert spread.min() >= 1


def test_same_generator_seed_gives_the_same_batch():
    images = _bars(4)
    a = random_affine(images, degrees=15, translate=0.1, generator=torch.Generator().manual_seed(5))
    b = random_affine(images, degrees=15, translate=0.1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
