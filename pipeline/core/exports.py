"""What a package of `pipeline` offers, loaded when first used.

Each stage's ``__init__`` names what it offers (``from pipeline.ship import promote``) without
importing it: the CLI's light commands, and every module that imports one file of a stage, must not
load the stage's heavy libraries (torch, Optuna, MLflow) with it. Attribute access on the package
imports the one submodule that defines the name (PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def exports(package: str, offered: dict[str, list[str]]
            ) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``, offering each submodule's
    listed names: ``{"registry": ["promote", ...], ...}``."""
    where = {name: module for module, names in offered.items() for name in names}

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
