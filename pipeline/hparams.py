"""Flat hyperparameter dicts <-> typed settings.

One flat namespace of keys (``depth``, ``lr``, ``rotation``, ``val_size``...) is shared by
``pipeline train`` options and YAML files, search-space files and the params logged to MLflow.
This module is the one place that knows which key belongs to which settings object and what type
it has.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UsageError
from pipeline.settings import DataSettings, ModelSpec, TrainSettings

SETTINGS_CLASSES = (ModelSpec, TrainSettings, DataSettings)
ALL_FIELDS = {f.name: f for cls in SETTINGS_CLASSES for f in fields(cls)}
ALL_KEYS = tuple(ALL_FIELDS)


@dataclass(frozen=True)
class RunConfig:
    model: ModelSpec
    train: TrainSettings
    data: DataSettings

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in (self.model, self.train, self.data):
            out.update({f.name: getattr(part, f.name) for f in fields(part)})
        return out


def field_kind(name: str) -> str:
    """'int', 'float', 'bool', 'str' or 'int|None' for a key."""
    return str(ALL_FIELDS[name].type).replace(" ", "").replace("None|int", "int|None")


def default_of(name: str) -> Any:
    f = ALL_FIELDS[name]
    return f.default if f.default is not MISSING else None


def unknown_key_message(key: str, where: str = "") -> str:
    close = difflib.get_close_matches(key, ALL_KEYS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(ALL_KEYS)}"
    return _prefixed(where, f"unknown key {key!r}; {hint}")


def _prefixed(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def coerce(name: str, value: Any) -> Any:
    """Check (and gently convert) one value to its key's type."""
    kind = field_kind(name)
    bad = UsageError(f"{name} must be {kind.replace('|None', ' or null')}, got {value!r}")
    if kind == "int|None":
        if value is None:
            return None
        kind = "int"
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad
    if kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise bad
    if kind == "float":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        # YAML 1.1 reads 1e-3 (no dot) as a string; accept what is plainly a number.
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if kind == "str":
        if isinstance(value, bool):  # YAML 1.1 reads on/off as booleans
            return "on" if value else "off"
        if isinstance(value, str):
            return value
        raise bad
    raise AssertionError(f"unhandled field type {kind} for {name}")


def make_config(params: Mapping[str, Any], where: str = "") -> RunConfig:
    """Split a flat dict into validated settings; unknown keys and bad values are UsageErrors.

    ``where`` (a file name, "options") prefixes every message so the user knows what to fix.
    """
    parts: dict[type, dict[str, Any]] = {cls: {} for cls in SETTINGS_CLASSES}
    owner = {f.name: cls for cls in SETTINGS_CLASSES for f in fields(cls)}
    try:
        for key, value in params.items():
            if key not in owner:
                raise UsageError(unknown_key_message(key))
            parts[owner[key]][key] = coerce(key, value)
        return RunConfig(
            model=ModelSpec(**parts[ModelSpec]),
            train=TrainSettings(**parts[TrainSettings]),
            data=DataSettings(**parts[DataSettings]),
        )
    except UsageError as e:
        if not where:
            raise
        raise type(e)(_prefixed(where, str(e))) from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping; any problem is one UsageError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(f"{path}: not valid YAML{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: expected a mapping of keys to values, got a "
                         f"{type(loaded).__name__}")
    return loaded
