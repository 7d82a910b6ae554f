"""`pipeline predict`: digits (and how sure the model is) for image files.

Digits come from the model exactly as MLflow serves it (pyfunc), so `pipeline predict` and
`mlflow models serve` always agree. Probabilities come from the same weights: the network is
rebuilt from the architecture the model carries in its metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.core.keys import DEFAULT_MODEL_URI
from pipeline.ship.imaging import ImageError, read_digit
from pipeline.ship.models import DigitModel


@dataclass
class Prediction:
    file: str
    digit: int | None = None
    probability: float | None = None
    probabilities: list[float] | None = None
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"{self.file}: error: {self.error}"
        sure = f"  (p={self.probability:.3f})" if self.probability is not None else ""
        return f"{self.file}: {self.digit}{sure}"

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def predict_files(paths: list[Path], model_uri: str = DEFAULT_MODEL_URI) -> list[Prediction]:
    """One answer per file, in order; a file that cannot be read gets its error, not a crash."""
    results: list[Prediction] = []
    images, slots = [], []
    for path in paths:
        try:
            images.append(read_digit(path))
            slots.append(len(results))
            results.append(Prediction(str(path)))
        except ImageError as e:
            results.append(Prediction(str(path), error=str(e).split(": ", 1)[-1]))
    if images:
        model = DigitModel(model_uri)
        digits, probabilities = model.predict(np.stack(images))
        for i, slot in enumerate(slots):
            result = results[slot]
            result.digit = int(digits[i])
            if probabilities is not None:
                result.probabilities = [round(float(p), 6) for p in probabilities[i]]
                result.probability = result.probabilities[result.digit]
    return results


def serving_request(paths: list[Path]) -> dict:
    """The JSON body `mlflow models serve` takes for these images (tensor input)."""
    return {"inputs": [read_digit(p).round(4).tolist() for p in paths]}
