"""Any picture of a digit -> MNIST's 28x28 form (grayscale, inverted, cropped, 20x20, centred)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.ship.imaging import ImageError, read_digit, to_mnist


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    total = image.sum()
    rows = (image.sum(axis=1) * np.arange(28)).sum() / total
    cols = (image.sum(axis=0) * np.arange(28)).sum() / total
    return rows, cols


def test_dark_ink_on_a_light_page_becomes_a_centred_white_digit(tmp_path):
    # A tall black bar, off-centre on a big light-grey page, saved as a JPEG.
    page = np.full((300, 400), 230, dtype=np.uint8)
    page[40:200, 50:90] = 20
    Image.fromarray(page).convert("RGB").save(tmp_path / "bar.jpg", quality=90)
    out = read_digit(tmp_path / "bar.jpg")
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() == pytest.approx(1.0)
    assert out[0].max() < 0.05 and out[:, 0].max() < 0.05  # background is black
    rows, cols = _centre_of_mass(out)
    assert abs(rows - 13.5) < 1.0 and abs(cols - 13.5) < 1.0
    # Aspect ratio kept: 160x40 ink -> 20 rows by 5 columns of ink.
    ink = out > 0.5
    assert ink.any(axis=1).sum() in (19, 20, 21)
    assert 4 <= ink.any(axis=0).sum() <= 6


def test_a_transparent_png_with_dark_strokes(tmp_path):
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)
    rgba[20:80, 45:55] = (10, 10, 10, 255)  # opaque dark stroke, the rest fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "stroke.png")
    out = read_digit(tmp_path / "stroke.png")
    assert out.max() == pytest.approx(1.0) and out[0].max() < 0.05


def test_an_mnist_image_stays_close_to_itself(mnist):
    for image in mnist.test.images[:20]:
        out = to_mnist(Image.fromarray(image.numpy()))
        assert np.abs(out - image.numpy() / 255.0).mean() < 0.15


def test_a_blank_image_has_no_digit():
    with pytest.raises(ImageError, match="no digit found"):
        to_mnist(Image.new("L", (50, 50), 255), "blank.png")


@pytest.mark.parametrize("content, fragment", [
    (b"hello, not an image", "not an image"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "unreadable image"),
])
def test_unreadable_files_are_named(tmp_path, content, fragment):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=fragment) as caught:
        read_digit(path)
    assert str(path) in str(caught.value)
