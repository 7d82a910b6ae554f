"""What a trained model gets wrong: confusion matrix, per-class accuracy, a picture of mistakes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# Both pictures are drawn with PIL, and the matrix is counted by torch: a matplotlib figure and
# scikit-learn's confusion matrix cost a search process 1.3 s of imports and first drawing, and
# 0.16 s per complete trial after that, for a 10x10 grid of numbers (bench/search_costs.py).

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
    """The confusion matrix (rows true, columns predicted) and each digit's accuracy."""
    pairs = labels.long() * len(DIGITS) + predictions.long()
    matrix = torch.bincount(pairs, minlength=len(DIGITS) ** 2).reshape(len(DIGITS), -1).numpy()
    totals = matrix.sum(axis=1)
    per_class = {d: float(matrix[d, d] / totals[d]) if totals[d] else float("nan")
                 for d in DIGITS}
    return Diagnostics(matrix, per_class)


def confusion_image(diag: Diagnostics, title: str, cell: int = 44) -> Image.Image:
    """The matrix as a heat map with its counts: right answers blue by their share of the row,
    mistakes red by their count against the largest mistake, so the confusions stand out."""
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    left, top, margin = 56, 52, 16
    side = cell * len(DIGITS)
    sheet = Image.new("RGB", (left + side + margin, top + side + 40), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((left, 8), title, fill="black", font=font)
    rows = diag.matrix.sum(axis=1).clip(min=1)
    mistakes = diag.matrix * (1 - np.eye(len(DIGITS), dtype=diag.matrix.dtype))
    worst = max(1, int(mistakes.max()))
    for t in DIGITS:
        for p in DIGITS:
            x, y = left + p * cell, top + t * cell
            count = int(diag.matrix[t, p])
            if t == p:
                level, colour = count / rows[t], (8, 48, 107)  # deep blue at 100%
            else:
                level, colour = (0.15 + 0.85 * count / worst if count else 0.0), (203, 24, 29)
            fill = tuple(int(255 - level * (255 - c)) for c in colour)
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=fill, outline=(220, 220, 220))
            ink = "white" if level > 0.5 else "black"
            width = draw.textlength(str(count), font=small)
            draw.text((x + (cell - width) / 2, y + cell / 2 - 7), str(count), fill=ink,
                      font=small)
        draw.text((left - 18, top + t * cell + cell / 2 - 8), str(t), fill="black", font=font)
        draw.text((left + t * cell + cell / 2 - 4, top + side + 4), str(t), fill="black",
                  font=font)
    draw.text((left + side / 2 - 50, top + side + 22), "predicted digit", fill="black",
              font=small)
    draw.text((4, top - 20), "true", fill="black", font=small)
    return sheet


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
