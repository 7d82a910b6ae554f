"""`pipeline predict`: digits (and how sure the model is) for image files.

Digits come from the model exactly as MLflow serves it (pyfunc), so `pipeline predict` and
`mlflow models serve` always agree. Probabilities come from the same weights: the network is
rebuilt from the architecture the model carries in its metadata.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.keys import CHAMPION, DEFAULT_MODEL_NAME
from pipeline.core.settings import ModelSpec
from pipeline.core.stores import require_tracking_store
from pipeline.imaging import ImageError, read_digit
from pipeline.pyfunc import load_pyfunc
from pipeline.train.model import build_model

DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION}"


class ModelNotFound(PipelineError):
    """The model URI names nothing that exists (no such model, version, alias or run)."""


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


def registered_reference(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, version) of a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI; None
    for any other (a logged model's ``models:/m-<id>``, ``runs:/``, a path)."""
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
    if not match or match.group(1).startswith("m-"):
        return None
    return match.group(1), match.group(2), match.group(3)


def _check_registered(uri: str) -> None:
    """Turn the registry's answers for ``models:/NAME@ALIAS`` or ``/VERSION`` into clear lines."""
    reference = registered_reference(uri)
    if reference is None:
        return
    name, alias, version = reference
    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise ModelNotFound(f"no registered model {name!r} in {mlflow.get_tracking_uri()}; "
                            "run `pipeline promote best` first (or pass --model)") from None
    try:
        if alias:
            client.get_model_version_by_alias(name, alias)
        else:
            client.get_model_version(name, version)
    except MlflowException:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise ModelNotFound(f"model {name!r} has no {what} yet; run `pipeline promote best` "
                            f"(see `pipeline models`)") from None


class NotADigitReader(PipelineError):
    """A model that loads but does not take 28x28 images."""


# The input every digit reader takes: float32 (N, 28, 28). A model logged with another input is
# not one, whatever it answers.
DIGIT_INPUT_SHAPE = (-1, 28, 28)


class DigitModel:
    """A logged or registered model, loaded once, answering batches of 28x28 images."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if uri.startswith(("models:/", "runs:/")):
            # Looking it up must not create an empty store.
            require_tracking_store(mlflow.get_tracking_uri())
        try:
            _check_registered(uri)
            self.local = mlflow.artifacts.download_artifacts(uri)
            self.pyfunc = load_pyfunc(self.local)
        except PipelineError:
            raise
        except Exception as e:  # noqa: BLE001 - a URI can fail in as many ways as stores exist
            raise ModelNotFound(f"cannot load model {uri}: {type(e).__name__}: "
                                f"{first_line(e)}") from None
        self._check_is_a_digit_reader()
        self.network = self._rebuild_network()

    def _check_is_a_digit_reader(self) -> None:
        signature = self.pyfunc.metadata.signature
        inputs = signature.inputs.inputs if signature is not None else []
        shape = tuple(getattr(inputs[0], "shape", ()) or ()) if len(inputs) == 1 else ()
        if shape != DIGIT_INPUT_SHAPE:
            raise NotADigitReader(f"model {self.uri} is not a digit reader: it takes "
                                  f"{signature.inputs if signature else 'an unknown input'}, "
                                  "not float32 images of shape (N, 28, 28)")

    def _rebuild_network(self) -> torch.nn.Module | None:
        architecture = (self.pyfunc.metadata.metadata or {}).get("pipeline_architecture")
        program = os.path.join(self.local, "data", "model.pt2")
        if not architecture or not os.path.exists(program):
            return None  # a model from elsewhere: digits only
        try:
            weights = torch.export.load(program).state_dict
            net = build_model(ModelSpec(**architecture))
            net.load_state_dict({k.removeprefix("net."): v for k, v in weights.items()})
        except Exception:  # noqa: BLE001 - digits still come from the model as MLflow serves it
            return None
        return net.eval()

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Digits (N,) and, when the network could be rebuilt, probabilities (N, 10)."""
        digits = np.asarray(self.pyfunc.predict(images.astype(np.float32)))
        if self.network is None:
            return digits, None
        with torch.no_grad():
            logits = self.network(torch.from_numpy(images).float().unsqueeze(1))
        return digits, torch.softmax(logits, dim=1).numpy()


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
