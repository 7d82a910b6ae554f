"""What a trained model gets wrong: confusion matrix, per-class accuracy, a picture of mistakes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# scikit-learn and matplotlib are imported where they are used: together they cost a worker
# process two seconds of start-up, and a trial needs them only once it completes.

DIGITS = list(range(10))


@dataclass(frozen=True)
class Diagnostics:
    matrix: np.ndarray  # (10, 10): rows are true digits, columns predicted
    per_class_accuracy: dict[int, float]

    def as_dict(self) -> dict:
        return {"labels": DIGITS, "rows": "true digit", "columns": "predicted digit",
                "matrix": self.matrix.tolist(),
                "per_class_accuracy": {str(d): a for d, a in self.per_class_accuracy.items()}}


def diagnose(labels: torch.Tensor, predictions: torch.Tensor) -> Diagnostics:
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels.numpy(), predictions.numpy(), labels=DIGITS)
    totals = matrix.sum(axis=1)
    per_class = {d: float(matrix[d, d] / totals[d]) if totals[d] else float("nan")
                 for d in DIGITS}
    return Diagnostics(matrix, per_class)


def confusion_figure(diag: Diagnostics, title: str) -> Figure:
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    # A Figure without pyplot: no global state, safe in worker threads and without a display.
    fig = Figure(figsize=(6.4, 5.6), dpi=100)
    ax = fig.add_subplot()
    ConfusionMatrixDisplay(diag.matrix, display_labels=DIGITS).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format="d")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def mistakes_image(images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
                   limit: int = 32, columns: int = 8, scale: int = 2) -> Image.Image | None:
    """Up to ``limit`` misread validation images in one mosaic, each captioned 'true->predicted'.

    Drawn with PIL in one pass: a 32-panel matplotlib figure cost half a second per trial.
    """
    wrong = (predictions != labels).nonzero().flatten()[:limit].tolist()
    if not wrong:
        return None
    side, caption = 28 * scale, 16
    font = ImageFont.load_default(size=13)  # Pillow's scalable font; the bitmap one is tiny
    rows = (len(wrong) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (side + 4), rows * (side + caption + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, index in enumerate(wrong):
        x, y = (i % columns) * (side + 4) + 2, (i // columns) * (side + caption + 4) + 2
        digit = Image.fromarray(images[index].numpy()).resize((side, side), Image.NEAREST)
        sheet.paste(digit.convert("RGB"), (x, y + caption))
        draw.text((x + 2, y), f"{labels[index].item()}->{predictions[index].item()}",
                  fill=(200, 0, 40), font=font)
    return sheet
