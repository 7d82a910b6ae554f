"""No input makes a traceback: property-based tests (Hypothesis) feed the parsers of every file a
user writes (search spaces, configs) and `pipeline predict` arbitrary documents and bytes. Each
answer is a valid result or one PipelineError; never another exception."""

from __future__ import annotations

import string
import struct
import zlib
from pathlib import Path

import pytest
import yaml
from helpers import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import PipelineError
from pipeline.core.hparams import ALL_KEYS, make_config, read_yaml_mapping
from pipeline.ship.imaging import read_digit
from pipeline.study.space import PARAM_KEYS, SECTIONS, load_space

# Bounded so the suite stays fast; each example is a file written and parsed.
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Values YAML can hold, with the awkward ones made likely: numbers as strings, huge and
# non-finite floats, booleans where numbers go, nesting where scalars go.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["1e-3", "3", "auto", "on",
                                                                     "", "sgd", "max"]),
    st.text(max_size=8))
keys = st.one_of(st.sampled_from(ALL_KEYS + SECTIONS + PARAM_KEYS + (
    "metric", "sampler", "pruner", "type", "seed", "n_startup_trials", "n_warmup_steps",
    "interval_steps", "val_size", "train_subset", "split_seed")), st.text(max_size=6))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)), max_leaves=30)

# Search-space-shaped documents: the sections with plausible and implausible contents.
param_entries = st.dictionaries(st.sampled_from(PARAM_KEYS), st.one_of(
    scalars, st.lists(scalars, max_size=4), st.dictionaries(keys, scalars, max_size=2)),
    max_size=5)
spaces = st.fixed_dictionaries({}, optional={
    "study": documents, "data": st.dictionaries(keys, scalars, max_size=3),
    "fixed": st.dictionaries(st.sampled_from(ALL_KEYS), scalars, max_size=4),
    "presets": documents,
    "params": st.dictionaries(st.sampled_from(ALL_KEYS + ("group",)), param_entries,
                              max_size=5),
    "cpu_fallback": scalars, "description": scalars})


def _answer_or_one_clear_error(read, path: Path):
    """``read(path)``'s result, or None after checking its error is one line naming the file."""
    try:
        return read(path)
    except PipelineError as e:
        assert str(path) in str(e) and "\n" not in str(e).strip()
        return None


def _write(folder: Path, name: str, content) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(yaml.safe_dump(content, allow_unicode=True))
    return path


@FAST
@given(content=st.one_of(spaces, documents, st.binary(max_size=200)))
def test_any_space_file_is_a_space_or_one_clear_error(tmp_path_factory, content):
    path = _write(tmp_path_factory.mktemp("space"), "space.yaml", content)
    space = _answer_or_one_clear_error(load_space, path)
    assert space is None or (space.params and len(space.fingerprint) == 16)


@FAST
@given(content=st.one_of(st.dictionaries(st.sampled_from(ALL_KEYS), scalars, max_size=6),
                         documents, st.binary(max_size=200)))
def test_any_config_file_is_a_configuration_or_one_clear_error(tmp_path_factory, content):
    path = _write(tmp_path_factory.mktemp("config"), "config.yaml", content)
    config = _answer_or_one_clear_error(
        lambda p: make_config(read_yaml_mapping(p), where=str(p)), path)
    assert config is None or (config.model.depth >= 0 and config.train.epochs >= 1)


def _png_header(width: int, height: int, bit_depth: int, color: int) -> bytes:
    """A PNG that declares an image of this size and no pixels worth reading."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + struct.pack(">I", len(idat) - 4) + idat
            + struct.pack(">I", zlib.crc32(idat)) + b"\x00\x00\x00\x00IEND\xaeB`\x82")


huge_headers = st.builds(_png_header, st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1),
                         st.sampled_from([1, 8, 16]), st.sampled_from([0, 2, 3, 4, 6]))
image_bytes = st.one_of(
    st.binary(max_size=300), huge_headers,
    st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),  # a PNG in name only
    st.binary(max_size=200).map(lambda b: b"\xff\xd8\xff\xe0" + b),  # a JPEG in name only
    st.binary(max_size=200).map(lambda b: b"GIF89a" + b),
    st.binary(max_size=200).map(lambda b: b"BM" + b))


@FAST
@given(content=image_bytes)
def test_any_bytes_are_a_digit_picture_or_one_clear_error(tmp_path_factory, content):
    path = _write(tmp_path_factory.mktemp("image"), "digit.png", content)
    image = _answer_or_one_clear_error(read_digit, path)
    assert image is None or image.shape == (28, 28)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=image_bytes)
def test_pipeline_predict_answers_any_file_with_one_line(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("predict")
    path = _write(folder, "digit.png", content)
    result = invoke("predict", str(path), "--model", str(folder / "no-model"), cwd=folder)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    # The file's own error, or (for bytes that decode into a picture) the missing model's.
    assert len(errors) == 1 and (str(path) in errors[0] or "cannot load model" in errors[0])


@pytest.mark.parametrize("width, height", [(20_000, 20_000), (2**31 - 1, 1)])
def test_an_image_past_pils_safety_limit_is_refused_in_one_line(tmp_path, width, height):
    path = _write(tmp_path, "huge.png", _png_header(width, height, 8, 0))
    with pytest.raises(PipelineError, match="too large to be a digit picture|unreadable image"):
        read_digit(path)


def test_text_that_is_not_utf8_is_named(tmp_path):
    path = _write(tmp_path, "space.yaml", "params:\n  lr: {type: float}\n".encode("utf-16"))
    with pytest.raises(PipelineError, match="not UTF-8 text"):
        load_space(path)


@pytest.mark.parametrize("name", ["a" * 10, string.punctuation])
def test_a_model_uri_that_names_nothing_is_one_line(tmp_path, mnist, name):
    from PIL import Image

    Image.fromarray(mnist.test.images[0].numpy()).save(tmp_path / "seven.png")
    (tmp_path / "mlflow.db").touch()  # a store exists; the model does not
    for uri in (f"models:/{name}/1", f"runs:/{name}/model", str(tmp_path / name),
                f"s3://bucket/{name}"):
        result = invoke("predict", "--model", uri, "seven.png", cwd=tmp_path)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert result.returncode == 1 and len(errors) == 1, (uri, result.stderr)


@pytest.mark.parametrize("content", [b"?", b"? [a, b]\n", b"1: 2\n", b"null: 1\n"])
def test_keys_that_are_not_names_are_one_clear_error(tmp_path, content):
    """Found by Hypothesis: `?` is a mapping with a null key, and the hint for an unknown key
    used to crash on it."""
    path = _write(tmp_path, "config.yaml", content)
    assert _answer_or_one_clear_error(lambda p: make_config(read_yaml_mapping(p),
                                                            where=str(p)), path) is None
    assert _answer_or_one_clear_error(load_space, _write(tmp_path, "space.yaml", content)) is None
