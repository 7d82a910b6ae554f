"""Batched augmentation on the training device: one random affine transform per image.

torchvision's ``RandomRotation`` on a batched tensor turns every image by the same angle, and the
per-image PIL path runs on the host one image at a time. Here each image gets its own angle (and
optional shift) and the whole batch is resampled in one ``grid_sample`` call where it lives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    *,
    degrees: float = 0.0,
    translate: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate each image by its own angle, uniform in [-degrees, +degrees], and shift it.

    Args:
        images: float tensor (N, C, H, W), background 0 (MNIST: white digit on black).
        degrees: largest rotation in degrees; 0 turns rotation off.
        translate: largest shift as a fraction of the image side (0.1 = up to 2.8 px at 28x28);
            0 turns shifting off.
        generator: random source on the images' device, for reproducible runs.

    With both at 0 the input is returned as it is, at no cost.
    """
    if degrees < 0 or translate < 0:
        raise ValueError("degrees and translate must be >= 0")
    if degrees == 0 and translate == 0:
        return images
    n = images.shape[0]
    device, dtype = images.device, images.dtype

    def uniform(scale: float) -> torch.Tensor:
        # Random numbers are drawn in float32 even for bf16 images: angles need the precision.
        u = torch.rand(n, device=device, generator=generator, dtype=torch.float32)
        return (u * 2 - 1) * scale

    angle = uniform(math.radians(degrees)) if degrees else torch.zeros(n, device=device)
    cos, sin = angle.cos(), angle.sin()
    # affine_grid works in normalised coordinates [-1, 1]: a shift of t * side is 2t.
    tx = uniform(2 * translate) if translate else torch.zeros(n, device=device)
    ty = uniform(2 * translate) if translate else torch.zeros(n, device=device)
    theta = torch.stack(
        [torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1
    )
    grid = F.affine_grid(theta.to(dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
