"""The models `pipeline` logs and registers, loaded as MLflow serves them (pyfunc), on the CPU on
every machine: found by URI with one clear line when nothing is there, checked to be a digit
reader, and with the network rebuilt from the architecture they carry, for probabilities.
"""

from __future__ import annotations

import os
import re
import tempfile

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.stores import require_tracking_store
from pipeline.train.model import build_from_architecture

# Models are exported (torch.export) with their weights on the CPU, which is what lets them load
# on any machine. Where CUDA exists MLflow loads a PyTorch model onto the GPU unless told
# otherwise, and an exported program cannot move: it would fail.
LOAD_ON_CPU = {"device": "cpu"}


def load_pyfunc(model_uri: str, dst_path: str | None = None):
    """``mlflow.pyfunc.load_model(model_uri)``, on the CPU; a model that must be downloaded goes
    to ``dst_path`` (without it, into a temporary folder MLflow makes and never removes)."""
    return mlflow.pyfunc.load_model(model_uri, model_config=LOAD_ON_CPU, dst_path=dst_path)


class ModelNotFound(PipelineError):
    """The model URI names nothing that exists (no such model, version, alias or run)."""


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
            # The model's files, in a folder that lives as long as this object (a loaded model
            # may read them later). Left to itself, MLflow downloads a tracking server's model
            # into a temporary folder that nobody removes.
            self._files = tempfile.TemporaryDirectory(prefix="pipeline-model-")
            self.local = mlflow.artifacts.download_artifacts(uri, dst_path=self._files.name)
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
            net = build_from_architecture(architecture)
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
