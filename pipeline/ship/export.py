"""`pipeline export`: a digit reader as one ONNX file, for runtimes outside Python and MLflow.

The file is checked with onnxruntime against the model as MLflow serves it, on the 10,000 test
images, before it is written anywhere: the same digit on at least 99.9% of them, probabilities
within 1e-3 of the PyTorch network's. A registered version gets the file as an artifact of its
logged model (``onnx/<file>``) and a tag saying where it is. The ONNX graph takes what the served
model takes, float32 pixels (N, 28, 28) in [0, 1] with any N, and answers both probabilities
(N, 10) and digits (N,).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.core.errors import PipelineError, UsageError, first_line
from pipeline.core.keys import VERSION_TAG_PREFIX
from pipeline.ship.models import DigitModel, registered_reference

INSTALL_HINT = 'pip install -e ".[export]"'
INPUT_NAME = "pixels"
OUTPUT_NAMES = ("probabilities", "digit")
# What "the same model" means after conversion: float32 kernels of two runtimes may
# round differently, so a digit whose two best probabilities tie within rounding may flip.
MIN_SAME_DIGITS = 0.999
MAX_PROBABILITY_DIFFERENCE = 1e-3
VERSION_TAG = VERSION_TAG_PREFIX + "onnx"
BATCH = 2000


class ExportError(PipelineError):
    """The model cannot be exported, or its ONNX file does not answer like it."""


def require_onnx():
    """onnxruntime, after checking the exporter's packages are installed (an optional extra)."""
    try:
        import onnx  # noqa: F401 - the exporter writes with it
        import onnxruntime
        import onnxscript  # noqa: F401 - torch's exporter translates with it
    except ImportError as e:
        raise UsageError(f"`pipeline export` needs {e.name}, which is not installed here: "
                         f"{INSTALL_HINT}") from None
    return onnxruntime


def check_output(path: Path) -> Path:
    """Where the file goes: a path in a folder that exists (a folder: digit-reader.onnx in it)."""
    if path.is_dir():
        path = path / "digit-reader.onnx"
    if not path.parent.is_dir():
        raise UsageError(f"--output {path}: folder {path.parent} does not exist; create it or "
                         "choose another path")
    return path


class _OnnxReader(torch.nn.Module):
    """What the ONNX graph computes: pixels (N, 28, 28) -> probabilities (N, 10), digits (N,)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.net(pixels.unsqueeze(1)), dim=1)
        return probabilities, probabilities.argmax(dim=1)


def write_onnx(net: torch.nn.Module, path: Path) -> None:
    """torch.export, then ONNX with a dynamic batch dimension, weights inside the one file."""
    reader = _OnnxReader(net).eval()
    # Two examples, not one: torch.export would specialise a batch of size 1.
    example = torch.rand(2, 28, 28)
    batch = torch.export.Dim("batch")
    try:
        torch.onnx.export(reader, (example,), str(path), input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES), dynamic_shapes=({0: batch},),
                          dynamo=True, external_data=False, verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter's failures are many and long
        raise ExportError(f"the network could not be converted to ONNX: {type(e).__name__}: "
                          f"{first_line(e)}") from None


@dataclass(frozen=True)
class Agreement:
    """How the ONNX file answers the test images, beside the model MLflow serves."""

    images: int
    same_digits: int
    max_probability_difference: float
    onnx_accuracy: float

    @property
    def same_fraction(self) -> float:
        return self.same_digits / self.images

    @property
    def passed(self) -> bool:
        return (self.same_fraction >= MIN_SAME_DIGITS
                and self.max_probability_difference <= MAX_PROBABILITY_DIFFERENCE)

    def lines(self) -> list[str]:
        return [
            f"onnxruntime vs the MLflow model on {self.images:,} test images: the same digit "
            f"on {self.same_digits:,} ({self.same_fraction:.2%}; needs >= "
            f"{MIN_SAME_DIGITS:.1%})",
            f"largest probability difference {self.max_probability_difference:.1e} (needs <= "
            f"{MAX_PROBABILITY_DIFFERENCE:.0e}); ONNX test accuracy {self.onnx_accuracy:.2%}",
        ]


def onnx_answers(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and digits from onnxruntime, on the CPU, in batches."""
    onnxruntime = require_onnx()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities, digits = [], []
    for start in range(0, len(images), BATCH):
        p, d = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images[start:start + BATCH]})
        probabilities.append(p)
        digits.append(d)
    return np.concatenate(probabilities), np.concatenate(digits)


def compare(path: Path, model: DigitModel, images: np.ndarray,
            labels: np.ndarray) -> Agreement:
    onnx_probabilities, onnx_digits = onnx_answers(path, images)
    served_digits, probabilities = [], []
    for start in range(0, len(images), BATCH):
        d, p = model.predict(images[start:start + BATCH])
        served_digits.append(d)
        probabilities.append(p)
    served = np.concatenate(served_digits)
    difference = np.abs(onnx_probabilities - np.concatenate(probabilities)).max()
    return Agreement(images=len(images), same_digits=int((onnx_digits == served).sum()),
                     max_probability_difference=float(difference),
                     onnx_accuracy=float((onnx_digits == labels).mean()))


def _registered_version(client, uri: str):
    """The registry version a models:/NAME@ALIAS or models:/NAME/VERSION URI names, else None."""
    reference = registered_reference(uri)
    if reference is None:
        return None
    name, alias, version = reference
    if alias:
        return client.get_model_version_by_alias(name, alias)
    return client.get_model_version(name, version)


def attach_to_version(client, uri: str, path: Path, echo=print) -> None:
    """Log the file with the registered version's model, and tag the version with where it is."""
    version = _registered_version(client, uri)
    if version is None:
        return
    # A version registered from a logged model names it in its source (models:/m-<id>); the
    # model_id field is not always filled in (a SQLite registry leaves it empty).
    model_id = getattr(version, "model_id", None) or (
        version.source.removeprefix("models:/") if version.source.startswith("models:/m-")
        else None)
    if not model_id:
        return
    client.log_model_artifact(model_id, str(path), "onnx")
    where = f"{client.get_logged_model(model_id).artifact_location}/onnx/{path.name}"
    client.set_model_version_tag(version.name, version.version, VERSION_TAG, where)
    echo(f"logged with {version.name} version {version.version}: {where}")


def export_onnx(uri: str, output: Path,
                test_set: Callable[[], tuple[np.ndarray, np.ndarray]], *,
                registry: Callable[[], object], echo=print) -> Agreement:
    """Convert, compare on ``test_set()`` (images, labels), and only then write ``output`` and
    attach it to the version in ``registry()``. Usage errors come first, then the store, then
    the model: each fails before the slower steps after it."""
    output = check_output(output)
    require_onnx()
    client = registry()
    model = DigitModel(uri)
    if model.network is None:
        raise ExportError(f"model {uri} carries no `pipeline` architecture, so its network "
                          "cannot be rebuilt for ONNX; export a model `pipeline` logged")
    images, labels = test_set()
    echo(f"exporting {uri} to ONNX")
    with tempfile.TemporaryDirectory() as scratch:
        converted = Path(scratch) / output.name
        write_onnx(model.network, converted)
        agreement = compare(converted, model, images, labels)
        for line in agreement.lines():
            echo(line)
        if not agreement.passed:
            raise ExportError(f"the ONNX file does not answer like {uri}; nothing was written")
        attach_to_version(client, uri, converted, echo=echo)
        # Into place in one step: a reader of ``output`` never sees half a file.
        staged = output.with_name(f".{output.name}.partial")
        staged.write_bytes(converted.read_bytes())
        os.replace(staged, output)
    echo(f"wrote {output} ({output.stat().st_size / 1024:.0f} KiB)")
    return agreement
