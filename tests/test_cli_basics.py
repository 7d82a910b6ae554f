"""`pipeline --help`, usage errors, and `pipeline train` end to end on a small subset."""

from __future__ import annotations

import pytest
from helpers import assert_one_line_error, run_cli


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("data", "train"):
        assert command in result.stdout


def test_train_help_documents_every_hyperparameter():
    from pipeline.hparams import ALL_KEYS

    result = run_cli("train", "--help")
    assert result.returncode == 0
    for key in ALL_KEYS:
        assert "--" + key.replace("_", "-") in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (("train", "--optimizer", "lamb"), "'lamb' is not one of"),
    (("train", "--epochs", "three"), "'three' is not a valid integer"),
    (("train", "--no-such-option"), "No such option"),
    (("train", "--depth", "5"), "shrinks to nothing"),
    (("train", "--kernel-size", "4"), "must be odd"),
    (("train", "--val-size", "0", "--epochs", "1"), "val_size must be between"),
    (("train", "--device", "cuda:7"), "cuda"),
    (("frobnicate",), "No such command"),
])
def test_bad_input_exits_2_with_one_line(args, fragment):
    result = run_cli(*args)
    assert_one_line_error(result, fragment, code=2)


@pytest.mark.parametrize("content, fragment", [
    ("depth: [1, 2\n", "not valid YAML at line"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("detph: 2\n", "unknown key 'detph'; did you mean 'depth'?"),
    ("lr: fast\n", "lr must be float"),
    ("batch_norm: 3\n", "batch_norm must be bool"),
])
def test_bad_config_files_exit_2_naming_the_file(tmp_path, content, fragment):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    result = run_cli("train", "--config", str(config))
    line = assert_one_line_error(result, fragment, code=2)
    assert str(config) in line


def test_missing_config_file(tmp_path):
    result = run_cli("train", "--config", str(tmp_path / "nope.yaml"))
    assert_one_line_error(result, "no such file", code=2)
