"""Light modules stay light: a command that reads digits or draws progress does not load the
search machinery (each check runs in a fresh interpreter, where nothing is imported yet)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("optuna", "torch", "mlflow", "sklearn", "matplotlib", "pipeline.train")


@pytest.mark.parametrize("module, allowed", [
    ("pipeline.keys", ()),
    ("pipeline.outcomes", ()),
    ("pipeline.errors", ()),
    ("pipeline.stores", ()),
    ("pipeline.settings", ()),
    ("pipeline.progress", ()),  # a type and a formatter, not the trainer
    ("pipeline.report", ("optuna",)),  # reads studies; no torch, no trainer
    ("pipeline.predict", ("torch", "mlflow")),  # reads digits: never Optuna
    ("pipeline.cli", ()),  # each command imports what it needs when it runs
])
def test_a_module_loads_only_what_its_job_needs(module, allowed):
    code = (f"import sys, {module}; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert set(loaded) <= set(allowed), f"{module} loads {loaded}"
