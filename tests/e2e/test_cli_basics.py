"""`pipeline --help` and usage errors: one line, exit status 2, no traceback."""

from __future__ import annotations

import pytest
from helpers import assert_one_line_error, assert_wrote_nothing, invoke, run_cli


def test_the_real_program_answers_help_and_a_usage_error_in_one_line(tmp_path):
    """A real process, once: what the in-process tests below cannot show (the interpreter's
    exit status and stderr, with no traceback)."""
    helped = run_cli("--help", cwd=tmp_path)
    assert helped.returncode == 0
    for command in ("search", "report", "promote", "models", "predict", "export", "ui", "train",
                    "data"):
        assert command in helped.stdout
    refused = run_cli("train", "--depth", "5", cwd=tmp_path)
    assert_one_line_error(refused, "shrinks to nothing", code=2)
    assert_wrote_nothing(tmp_path)


def test_version_is_the_installed_package_version(tmp_path):
    from importlib.metadata import version

    result = invoke("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"pipeline, version {version('pipeline')}"


def test_bash_completion_as_documented_completes_commands_and_options(tmp_path):
    """The line the docs give for ~/.bashrc, in a real bash with the installed program: it
    registers a completion for `pipeline`, which completes a command and an option."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash here")
    script = ('eval "$(_PIPELINE_COMPLETE=bash_source pipeline)"\n'
              "complete -p pipeline\n"
              "# bash passes the command being completed as $1\n"
              "COMP_WORDS=(pipeline sea); COMP_CWORD=1; _pipeline_completion pipeline; "
              'echo "commands: ${COMPREPLY[*]}"\n'
              "COMPREPLY=(); COMP_WORDS=(pipeline search --tri); COMP_CWORD=2; "
              "_pipeline_completion pipeline; "
              'echo "options: ${COMPREPLY[*]}"\n')
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([bash, "--norc", "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith(" pipeline") and "-F _pipeline_completion" in lines[0]
    assert "commands: search" in lines
    assert "options: --trials" in lines


def test_train_help_documents_every_hyperparameter(tmp_path):
    from pipeline.core.hparams import ALL_KEYS

    result = invoke("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for key in ALL_KEYS:
        assert "--" + key.replace("_", "-") in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (("train", "--optimizer", "lamb"), "'lamb' is not one of"),
    (("train", "--epochs", "three"), "'three' is not a valid integer"),
    (("train", "--no-such-option"), "No such option"),
    (("train", "--depth", "5"), "shrinks to nothing"),
    (("train", "--kernel-size", "4"), "must be odd"),
    (("train", "--depth", "0", "--residual"), "residual blocks follow conv blocks"),
    (("train", "--fc-shrink", "3", "--fc-width", "8", "--fc-layers", "3"),
     "fc_width 8 cannot be shrunk by 3 into 3 hidden layers; use fc_width >= 9"),
    (("train", "--val-size", "0", "--epochs", "1"), "val_size must be a whole number between"),
    (("train", "--fc-layers", "100000000000"), "fc_layers must be a whole number from 0 to 16"),
    (("train", "--cuda-graph", "on", "--optimizer", "sgd"), "cuda_graph on needs optimizer"),
    (("train", "--device", "cuda:7"), "cuda"),
    (("search", "--trials", "0"), "0 is not in the range x>=1"),
    (("search", "--worker-of", "2"), "No such option '--worker-of'"),  # workers read JSON now
    (("frobnicate",), "No such command"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, fragment):
    assert_one_line_error(invoke(*args, cwd=tmp_path), fragment, code=2)
    assert_wrote_nothing(tmp_path)  # nothing half-written


@pytest.mark.parametrize("content, fragment", [
    (b"depth: [1, 2\n", "not valid YAML at line"),
    (b"- 1\n- 2\n", "expected a mapping"),
    (b"detph: 2\n", "unknown key 'detph'; did you mean 'depth'?"),
    (b"lr: fast\n", "lr must be float"),
    (b"batch_norm: 3\n", "batch_norm must be bool"),
    (b"depth: 2\nwidth: \xff\xfe\n", "not UTF-8 text"),
])
def test_bad_config_files_exit_2_naming_the_file(tmp_path, content, fragment):
    config = tmp_path / "bad.yaml"
    config.write_bytes(content)
    line = assert_one_line_error(invoke("train", "--config", str(config), cwd=tmp_path),
                                 fragment, code=2)
    assert str(config) in line


def test_missing_config_file(tmp_path):
    result = invoke("train", "--config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert_one_line_error(result, "no such file", code=2)


@pytest.mark.parametrize("command", [("report",), ("models",), ("promote", "best"),
                                     ("reconcile",)])
def test_reading_commands_in_an_empty_folder_write_nothing(tmp_path, command):
    """Tried as a new user would, in the wrong folder: one line, and no empty optuna.db or
    mlflow.db left behind."""
    result = invoke(*command, cwd=tmp_path)
    assert_one_line_error(result, "does not exist", code=2)
    assert_wrote_nothing(tmp_path)
