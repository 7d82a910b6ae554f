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

from pipeline.core.errors import UsageError, first_line
from pipeline.core.settings import DataSettings, ModelSpec, TrainSettings

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


def unknown_key_message(key, where: str = "") -> str:
    # A YAML key may be anything: `?` alone is a mapping whose key is null.
    close = difflib.get_close_matches(key, ALL_KEYS, n=1) if isinstance(key, str) else []
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(ALL_KEYS)}"
    return _prefixed(where, f"unknown key {key!r}; {hint}")


def _prefixed(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def as_number(value: Any) -> int | float | None:
    """``value`` as the number it plainly is, or None. The one place YAML's numbers are read:
    YAML 1.1 reads ``1e-3`` (no dot) as a string, and a boolean is never a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_BAD = object()


def _to_int(value: Any) -> Any:
    number = as_number(value) if not isinstance(value, str) else None
    if isinstance(number, float) and number.is_integer():
        return int(number)
    return number if isinstance(number, int) else _BAD


def _to_float(value: Any) -> Any:
    number = as_number(value)
    return _BAD if number is None else float(number)


def _to_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else _BAD


def _to_str(value: Any) -> Any:
    if isinstance(value, bool):  # YAML 1.1 reads on/off as booleans
        return "on" if value else "off"
    return value if isinstance(value, str) else _BAD


_COERCERS = {"int": _to_int, "float": _to_float, "bool": _to_bool, "str": _to_str}


def coerce(name: str, value: Any) -> Any:
    """Check (and gently convert) one value to its key's type."""
    kind = field_kind(name)
    if kind == "int|None" and value is None:
        return None
    converted = _COERCERS[kind.removesuffix("|None")](value)
    if converted is _BAD:
        raise UsageError(f"{name} must be {kind.replace('|None', ' or null')}, got {value!r}")
    return converted


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
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8 "
                         "YAML") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or first_line(e)
        raise UsageError(f"{path}: not valid YAML{where}: {problem}") from None
    except RecursionError:  # aliases nested beyond Python's stack
        raise UsageError(f"{path}: nested too deeply to read") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: expected a mapping of keys to values, got a "
                         f"{type(loaded).__name__}")
    return loaded
