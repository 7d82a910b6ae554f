"""The wheel is the program: built from this checkout and installed in a folder of its own, it holds
every module and finds its shipped search spaces from any working directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import assert_wrote_nothing, cli_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """The wheel `pip wheel --no-deps` builds (from a copy of what the build reads, so that the
    build leaves nothing in the checkout), and the folder it was installed into."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    for name in ("pipeline", "search_spaces"):
        shutil.copytree(REPO / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    dist, target = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(source)], check=True, capture_output=True)
    (wheel,) = dist.glob("pipeline-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    return wheel, target


def _from_the_wheel(target: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` in ``folder``, importing `pipeline` from the wheel's install
    (ahead of this checkout's editable install)."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=folder,
                          env=cli_env({"PYTHONPATH": str(target)}), capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_holds_every_module_and_the_shipped_spaces(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for p in (REPO / "pipeline").rglob("*.py")}
    assert modules <= names
    spaces = {f"pipeline/search_spaces/{p.name}" for p in (REPO / "search_spaces").glob("*.yaml")}
    assert {"pipeline/search_spaces/default.yaml", "pipeline/search_spaces/cpu.yaml"} <= spaces
    assert spaces <= names


def test_from_the_wheel_in_an_empty_folder_the_main_command_finds_its_default_space(
        installed, tmp_path):
    """`pipeline search` resolves `default`, falls back to `cpu` on a CPU, and only then meets
    the (deliberately bad) storage: one line, exit 2, nothing written."""
    _, target = installed
    probe = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"],
                           cwd=tmp_path, env=cli_env({"PYTHONPATH": str(target)}),
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip().startswith(str(target)), probe.stdout
    result = _from_the_wheel(target, tmp_path, "search", "--trials", "1", "--device", "cpu",
                             "--storage", "nosuch://x/y")
    shipped = target / "pipeline" / "search_spaces"
    assert (f"searching the CPU-sized space {shipped / 'cpu.yaml'} instead of "
            f"{shipped / 'default.yaml'}") in result.stdout, result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "not a database URL SQLAlchemy knows" in result.stderr
    assert_wrote_nothing(tmp_path)


def test_from_the_wheel_an_unknown_space_names_the_shipped_ones(installed, tmp_path):
    _, target = installed
    result = _from_the_wheel(target, tmp_path, "search", "--space", "nope")
    assert result.returncode == 2, result.stderr
    assert "no search space 'nope'; give a YAML path or one of: cpu, default, seeds" in \
        result.stderr
