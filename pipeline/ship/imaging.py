"""Any photo or scan of one digit -> a 28x28 MNIST-style image.

MNIST's digits were size-normalised to fit a 20x20 box (keeping their aspect ratio, with
anti-aliasing) and then centred by their centre of mass in a 28x28 field, white on black. A
picture from a phone or a paint program is made to look the same before a model sees it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.errors import PipelineError, first_line

BOX = 20  # the digit's longer side, in pixels, as in MNIST
FIELD = 28
INK_THRESHOLD = 0.2  # of full ink: what counts as part of the digit when cropping


class ImageError(PipelineError):
    """One input file that cannot be read as a digit."""


def load_image(path: Path) -> Image.Image:
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Past PIL's decompression-bomb limit (about 89 million pixels) PIL only warns up to
            # twice that; a digit never needs it, so both are the same one-line refusal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
            return ImageOps.exif_transpose(image)  # phone photos carry their rotation in EXIF
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image PIL can read (PNG or JPEG expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: too large to be a digit picture (over "
                         f"{Image.MAX_IMAGE_PIXELS:,} pixels)") from None
    except Exception as e:  # noqa: BLE001 - PIL's decoders fail in many types on bad bytes
        raise ImageError(f"{path}: unreadable image ({type(e).__name__}: "
                         f"{first_line(e, limit=120)})") from None


def _grayscale(image: Image.Image) -> np.ndarray:
    """Gray levels in [0, 1]; transparent areas become background, whatever the ink's colour."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3]
        gray = rgba[..., :3].mean(axis=2)
        if alpha.min() < 0.99:
            opaque = alpha > 0.5
            ink_is_dark = opaque.any() and gray[opaque].mean() < 0.5
            background = 1.0 if ink_is_dark else 0.0
            return gray * alpha + background * (1 - alpha)
        return gray
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def to_mnist(image: Image.Image, name: str = "image") -> np.ndarray:
    """float32 (28, 28) in [0, 1], white digit on black, sized and centred the MNIST way."""
    gray = _grayscale(image)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark ink on a light page: MNIST is white on black
        gray, background = 1.0 - gray, 1.0 - background
    ink = np.clip(gray - background, 0.0, None)
    peak = float(ink.max())
    if peak < 0.1:
        raise ImageError(f"{name}: no digit found (the image is blank or has no contrast)")
    ink /= peak
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.LANCZOS)
    box = np.asarray(digit, dtype=np.float32) / 255.0
    # Centre of mass to the field's centre, as MNIST did.
    total = box.sum()
    cy = (box.sum(axis=1) * np.arange(box.shape[0])).sum() / total
    cx = (box.sum(axis=0) * np.arange(box.shape[1])).sum() / total
    top = int(round(FIELD / 2 - 0.5 - cy))
    left = int(round(FIELD / 2 - 0.5 - cx))
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + box.shape[0], FIELD), min(left + box.shape[1], FIELD)
    field[y0:y1, x0:x1] = box[y0 - top:y1 - top, x0 - left:x1 - left]
    return np.clip(field, 0.0, 1.0)


def read_digit(path: Path) -> np.ndarray:
    """Load ``path`` and return it as an MNIST-style 28x28 float image."""
    return to_mnist(load_image(path), str(path))
