"""The architecture, kept by tests: every module lives in the folder of its stage, a stage imports
only the stages below it, some stages never touch some libraries, and light modules stay light.

The stages, lowest first (a floor's stages know nothing of each other):

    core                foundations: errors, keys, settings, outcomes, timings, progress lines
    data                MNIST: fetched, verified, split
    train               networks and their training; knows neither MLflow nor Optuna
    track | study       MLflow runs of one training | Optuna studies, spaces and storages
    report              the study report
    search | ship       the search loop and its trials | promotion, models, predict, export, demo
    scale               worker processes and Ray actors around the search loop
    cli                 above every stage
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parent.parent / "pipeline"
FLOORS = [("core",), ("data",), ("train",), ("track", "study"), ("report",), ("search", "ship"),
          ("scale",)]
FLOOR = {stage: level for level, stages in enumerate(FLOORS) for stage in stages}
TOP = ("__init__", "__main__", "cli")  # above every stage
# Libraries a stage never imports, anywhere in its files (functions included).
NEVER = {
    "core": ("torch", "torchvision", "optuna", "mlflow", "sklearn", "plotly"),
    "data": ("optuna", "mlflow"),
    "train": ("optuna", "mlflow"),
    "track": ("optuna",),
    "study": ("torch", "mlflow"),
    "report": ("torch",),
}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(PIPELINE.rglob("*.py")):
        parts = path.relative_to(PIPELINE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def stage_of(module: str) -> str | None:
    """The stage a module of `pipeline` belongs to; "top" for the CLI; None while unplaced."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in TOP:
        return "top"
    if parts[1] in FLOOR and (PIPELINE / parts[1]).is_dir():
        return parts[1]
    return None


def imported(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The modules a file imports (names it imports from a package count as its modules), what
    runs only for type checkers left out."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST, depth: int) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and top_level_only:
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, depth + 1)

    visit(tree, 0)
    known = modules()
    return {name for name in found if not name.startswith("pipeline") or name in known}


def test_every_module_lives_in_the_folder_of_its_stage():
    unplaced = [name for name in modules() if stage_of(name) is None]
    assert not unplaced


@pytest.mark.parametrize("stage", sorted(FLOOR))
def test_a_stage_imports_only_itself_and_the_stages_below_it(stage):
    for name, path in modules().items():
        if stage_of(name) != stage:
            continue
        for target in imported(path):
            if not target.startswith("pipeline.") or target == "pipeline":
                continue
            other = stage_of(target)
            assert other is not None and other != "top", f"{name} imports {target}"
            assert other == stage or FLOOR[other] < FLOOR[stage], f"{name} imports {target}"


@pytest.mark.parametrize("stage", sorted(NEVER))
def test_a_stage_never_imports_the_libraries_outside_its_job(stage):
    for name, path in modules().items():
        if stage_of(name) == stage:
            libraries = {target.split(".")[0] for target in imported(path)}
            assert not libraries & set(NEVER[stage]), f"{name} imports {libraries}"


def test_no_module_imports_itself_back_through_others():
    """No cycle among the imports that run when a module loads."""
    graph = {name: {t for t in imported(path, top_level_only=True)
                    if t in modules() and t != name}
             for name, path in modules().items()}
    done: set[str] = set()

    def walk(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, " -> ".join((*trail, name))
        if name in done:
            return
        for target in graph[name]:
            walk(target, (*trail, name))
        done.add(name)

    for name in graph:
        walk(name, ())


STAGES = sorted(FLOOR)


def test_the_cli_reaches_each_stage_through_what_its_package_offers():
    """`from pipeline.ship import promote`, never a module inside a stage: each package's
    ``__init__`` says what the commands use."""
    for node in ast.walk(ast.parse((PIPELINE / "cli.py").read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline."):
            assert node.module in {f"pipeline.{stage}" for stage in FLOOR}, node.module
        if isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name.startswith("pipeline.")]


@pytest.mark.parametrize("stage", STAGES)
def test_what_a_package_offers_exists_and_never_shadows_one_of_its_modules(stage):
    import importlib

    package = importlib.import_module(f"pipeline.{stage}")
    submodules = {path.stem for path in (PIPELINE / stage).glob("*.py")}
    assert package.__all__ and not set(package.__all__) & submodules
    for name in package.__all__:
        assert getattr(package, name) is not None, name


HEAVY = ("optuna", "torch", "mlflow", "sklearn", "matplotlib", "pipeline.train.trainer")


@pytest.mark.parametrize("module, allowed", [
    ("pipeline.core.keys", ()),
    ("pipeline.core.outcomes", ()),
    ("pipeline.core.errors", ()),
    ("pipeline.core.stores", ()),
    ("pipeline.core.settings", ()),
    ("pipeline.core.progress", ()),  # a type and a formatter, not the trainer
    ("pipeline.report.study_report", ("optuna",)),  # reads studies; no torch, no trainer
    ("pipeline.ship.predict", ("torch", "mlflow")),  # reads digits: never Optuna
    ("pipeline.cli", ()),  # each command imports what it needs when it runs
])
def test_a_module_loads_only_what_its_job_needs(module, allowed):
    """Checked in a fresh interpreter, where nothing is imported yet."""
    code = (f"import sys, {module}; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert set(loaded) <= set(allowed), f"{module} loads {loaded}"


def test_the_documented_layout_is_the_package_as_it_is():
    """The folder tree under the architecture page's layout marker names every module of
    pipeline/ (but the packages' faces), in its folder, and nothing that is not there."""
    page = (PIPELINE.parent / "docs" / "architecture.md").read_text()
    block = page.split("<!-- layout -->\n```\n", 1)[1].split("```", 1)[0]
    listed, folders = set(), []
    for line in block.splitlines():
        name = line.split()[0]
        depth = (len(line) - len(line.lstrip())) // 2
        folders[depth:] = [name.rstrip("/")] if name.endswith("/") else []
        if name.endswith(".py"):
            listed.add("/".join([*folders[:depth], name]))
        elif depth == 0:
            assert (PIPELINE.parent / name).exists(), name
    actual = {str(p.relative_to(PIPELINE.parent)) for p in PIPELINE.rglob("*.py")
              if p.name not in ("__init__.py", "__main__.py")}
    assert listed == actual

