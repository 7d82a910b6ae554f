"""Search-space files: YAML -> a validated, fingerprinted space that suggests trial parameters.

A file has these sections (all but ``params`` optional)::

    description: free text shown when the search starts
    cpu_fallback: cpu.yaml          # the space to use instead when there is no GPU
    study:                          # how the study searches
      metric: val_accuracy          # val_accuracy (maximised) or val_loss (minimised)
      sampler: {type: tpe, seed: 0, n_startup_trials: 10}
      pruner: {type: median, n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1}
                                    # or successive_halving, hyperband, none (PRUNERS below);
                                    # reports_per_epoch: 4 reports each quarter epoch;
                                    # report_val_size: 2000 validation images for the
                                    # reports inside an epoch (epoch ends use them all)
    data: {val_size: 5000, split_seed: 0, train_subset: null}
    fixed: {schedule: onecycle}     # hyperparameters every trial uses
    presets:                        # named bundles a categorical parameter can choose from
      model: {lenet: {depth: 2, width: 6, ...}, ...}
    params:                         # one entry per Optuna suggest call
      lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
      depth: {type: int, low: 1, high: 3, step: 1}
      optimizer: {type: categorical, choices: [adamw, sgd]}
      momentum: {type: float, low: 0.8, high: 0.99, when: {optimizer: [sgd, rmsprop]}}

Everything is checked before any study or run exists: unknown keys, inverted or out-of-range
bounds, unknown choices, and every architecture the space can produce (a search must never
sample a network that cannot be built).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import UsageError
from pipeline.core.hparams import (
    ALL_KEYS,
    as_number,
    make_config,
    read_yaml_mapping,
    unknown_key_message,
)
from pipeline.core.metric import DEFAULT as DEFAULT_METRIC
from pipeline.core.metric import DIRECTIONS
from pipeline.core.settings import MODEL_KEYS, DataSettings, TrainSettings

SECTIONS = ("description", "cpu_fallback", "study", "data", "fixed", "presets", "params",
            "constraints")
# What a space may limit, by what a trained network costs to run (train.cost): the key in the
# file, and the cost it limits.
CONSTRAINTS = {"params": "params", "flops": "flops_per_image", "latency_ms": "latency_ms"}
STUDY_KEYS = ("metric", "sampler", "pruner")
SAMPLERS = ("tpe", "random", "grid")
SAMPLER_DEFAULTS = {"type": "tpe", "seed": 0, "n_startup_trials": 10}
# Each pruner's keys with their defaults, and the least whole number each key takes. A step is
# one report: an epoch, or 1/reports_per_epoch of one (study.pruner.reports_per_epoch), so a
# weak trial can be stopped part-way through its first pass over the training images.
PRUNERS = {
    "median": ({"n_startup_trials": 5, "n_warmup_steps": 0, "interval_steps": 1},
               {"n_startup_trials": 0, "n_warmup_steps": 0, "interval_steps": 1}),
    "successive_halving": ({"min_resource": 1, "reduction_factor": 4,
                            "min_early_stopping_rate": 0, "bootstrap_count": 0},
                           {"min_resource": 1, "reduction_factor": 2,
                            "min_early_stopping_rate": 0, "bootstrap_count": 0}),
    "hyperband": ({"min_resource": 1, "reduction_factor": 3},
                  {"min_resource": 1, "reduction_factor": 2}),
}
# `none` has always taken (and ignored) the median pruner's keys: kept so that studies made
# before the other pruners keep their space fingerprints and resume.
PRUNERS["none"] = PRUNERS["median"]
REPORTS_PER_EPOCH_MAX = 100
PARAM_KEYS = ("type", "low", "high", "step", "log", "choices", "when")
PARAM_TYPES = ("int", "float", "categorical")
DATA_KEYS = ("val_size", "split_seed", "train_subset")


class SpaceError(UsageError):
    """A search-space file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ParamSpec:
    """One Optuna suggest call."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple = ()
    when: dict[str, tuple] = field(default_factory=dict)

    def active(self, sampled: dict[str, Any]) -> bool:
        return all(sampled.get(key) in values for key, values in self.when.items())

    def suggest(self, trial) -> Any:
        if self.type == "int":
            return trial.suggest_int(name=self.name, low=int(self.low), high=int(self.high),
                                     step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return trial.suggest_float(name=self.name, low=float(self.low),
                                       high=float(self.high), step=self.step, log=self.log)
        return trial.suggest_categorical(name=self.name, choices=list(self.choices))

    def fit(self, value: Any) -> Any:
        """``value`` as this parameter samples it (strings read as MLflow logs params), or a
        ValueError naming the key and what it allows."""
        if self.type == "categorical":
            for choice in self.choices:
                if value == choice or str(value) == str(choice):
                    return choice
            raise ValueError(f"{self.name}={value!r} is not one of its choices "
                             f"{list(self.choices)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}={value!r} is not a number") from None
        if self.type == "int":
            if not number.is_integer():
                raise ValueError(f"{self.name}={value!r} is not a whole number")
            number = int(number)
        if not self.low <= number <= self.high:
            raise ValueError(f"{self.name}={number:g} is outside its range "
                             f"[{self.low:g}, {self.high:g}]")
        if self.step and abs(round((number - self.low) / self.step) * self.step
                             - (number - self.low)) > 1e-9 * max(1.0, abs(number)):
            raise ValueError(f"{self.name}={number:g} is not on its step of {self.step:g} "
                             f"from {self.low:g}")
        return number

    def extremes(self) -> list:
        """The values a check must try: both bounds, or every choice."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def canonical(self) -> dict:
        out = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, step=self.step, log=self.log)
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        return out


@dataclass(frozen=True)
class SearchSpace:
    name: str
    path: Path
    description: str
    metric: str
    direction: str
    sampler: dict
    pruner: dict
    data: DataSettings
    fixed: dict[str, Any]
    presets: dict[str, dict[str, dict[str, Any]]]
    params: tuple[ParamSpec, ...]
    cpu_fallback: str | None
    # The most a trial's network may cost to run, by CONSTRAINTS key: {"params": 50000.0}.
    constraints: dict[str, float] = field(default_factory=dict)
    # The file's mapping as read: parse_space(source, path) makes this space again, wherever the
    # file is not (a worker on another machine gets the space with its request).
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def reports_per_epoch(self) -> int:
        """How often a trial reports to the pruner: once per epoch, or this many times."""
        return self.pruner.get("reports_per_epoch", 1)

    @property
    def report_val_size(self) -> int | None:
        """Validation images a report inside an epoch measures (None: all of them)."""
        return self.pruner.get("report_val_size")

    def canonical(self) -> dict:
        """Everything that decides what trials mean; comments and layout do not count."""
        return {
            "metric": self.metric,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "data": {k: getattr(self.data, k) for k in DATA_KEYS},
            "fixed": self.fixed,
            "presets": self.presets,
            "params": {p.name: p.canonical() for p in self.params},
            # Only when there are some: spaces without keep the fingerprints they always had.
            **({"constraints": self.constraints} if self.constraints else {}),
        }

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def suggest(self, trial) -> dict[str, Any]:
        """Ask the trial for every active parameter, in file order; returns what was sampled."""
        sampled: dict[str, Any] = {}
        for param in self.params:
            if param.active(sampled):
                sampled[param.name] = param.suggest(trial)
        return sampled

    def fit(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` (another study's parameters, or a run's params as MLflow's strings) as
        this space would sample them: every active parameter, in file order, within its range
        or among its choices. A value that does not fit raises ValueError naming its key."""
        fitted: dict[str, Any] = {}
        for param in self.params:
            if not param.active(fitted):
                continue
            if param.name not in values:
                raise ValueError(f"it has no {param.name}")
            fitted[param.name] = param.fit(values[param.name])
        return fitted

    def hyperparameters(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Fixed values, then sampled ones, with preset names expanded into their keys."""
        flat = dict(self.fixed)
        for key, value in sampled.items():
            if key in self.presets:
                flat.update(self.presets[key][value])
            else:
                flat[key] = value
        flat.update({k: getattr(self.data, k) for k in DATA_KEYS})
        return flat

    def max_reports(self) -> int:
        """The most reports a trial of this space makes: its largest epoch count (fixed, a
        parameter's top, or a preset's) times the reports per epoch."""
        counts = [self.fixed.get("epochs", TrainSettings().epochs)]
        counts += [b["epochs"] for group in self.presets.values() for b in group.values()
                   if "epochs" in b]
        for p in self.params:
            if p.name == "epochs":
                counts.append(max(p.choices) if p.type == "categorical" else p.high)
        return int(max(counts)) * self.reports_per_epoch

    def grid(self) -> dict[str, list]:
        """The search space as a grid, for the grid sampler (categorical and int params only)."""
        out = {}
        for p in self.params:
            if p.type == "categorical":
                out[p.name] = list(p.choices)
            elif p.type == "int":
                out[p.name] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        return out

    def summary(self) -> str:
        parts = []
        for p in self.params:
            if p.type == "categorical":
                parts.append(f"{p.name} {'/'.join(str(c) for c in p.choices)}")
            else:
                parts.append(f"{p.name} {p.low:g}–{p.high:g}{' (log)' if p.log else ''}")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------


def shipped_spaces() -> Path:
    """The spaces that come with `pipeline`: the repository's search_spaces/ folder, which the
    wheel carries as the package pipeline.search_spaces (an editable install maps the package
    onto the folder itself)."""
    return Path(str(importlib.resources.files("pipeline.search_spaces")))


def resolve_space_path(name_or_path: str) -> Path:
    """A path as given, or a bare name looked up in ./search_spaces (a folder of the working
    directory overrides by name), then among the shipped spaces."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    stem = name_or_path if candidate.suffix in (".yaml", ".yml") else f"{name_or_path}.yaml"
    for folder in (Path.cwd() / "search_spaces", shipped_spaces()):
        if (folder / stem).exists():
            return folder / stem
    known = sorted(p.stem for p in shipped_spaces().glob("*.yaml"))
    raise SpaceError(f"no search space {name_or_path!r}; give a YAML path or one of: "
                     f"{', '.join(known)}")


def load_space(name_or_path: str | Path) -> SearchSpace:
    path = resolve_space_path(str(name_or_path))
    return parse_space(read_yaml_mapping(path), path)


def parse_space(raw: dict, path: Path) -> SearchSpace:
    """A space file's mapping -> a checked SearchSpace; any problem is one SpaceError naming
    the file, the key and the fix."""
    parse = _Parser(str(path))
    parse.keys(raw, SECTIONS, "")
    if not raw.get("params"):
        raise parse.fail("params", "missing; a search space needs at least one parameter to "
                                   "search")
    data = parse.data(raw.get("data") or {})
    metric, sampler, pruner = parse.study(raw.get("study") or {}, data.val_size)
    fixed = parse.fixed(raw.get("fixed") or {})
    presets = parse.presets(raw.get("presets") or {}, fixed)
    params = parse.params(raw["params"], presets)
    if sampler["type"] == "grid" and any(p.type == "float" for p in params):
        floats = [p.name for p in params if p.type == "float"]
        raise parse.fail("study.sampler.type", f"the grid sampler needs int or categorical "
                                               f"parameters; {', '.join(floats)} are floats")
    fallback = raw.get("cpu_fallback")
    if fallback is not None and not isinstance(fallback, str):
        raise parse.fail("cpu_fallback", "expected the name or path of another space file")
    space = SearchSpace(
        name=path.stem, path=path, description=str(raw.get("description") or "").strip(),
        metric=metric, direction=DIRECTIONS[metric], sampler=sampler, pruner=pruner, data=data,
        fixed=fixed, presets=presets, params=params, cpu_fallback=fallback,
        constraints=parse.constraints(raw.get("constraints") or {}), source=raw,
    )
    _check_every_value(space, parse.fail)
    _check_every_architecture(space, parse.fail)
    return space


class _Parser:
    """Reads the sections of one space file; every error names the file and the key."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, message: str) -> SpaceError:
        # Keys come from the file and may hold anything YAML allows, a line break included;
        # escaped, the error stays one line.
        if not key.isprintable():
            key = key.encode("unicode_escape").decode("ascii")
        return SpaceError(f"{self.where}: {key}: {message}")

    def keys(self, section, allowed: tuple, prefix: str) -> None:
        if not isinstance(section, dict):
            raise self.fail(prefix, f"expected a mapping, got {type(section).__name__}")
        for key in section:
            if key not in allowed:
                raise self.fail(f"{prefix}.{key}" if prefix else str(key),
                                f"unknown key; expected one of {', '.join(allowed)}")

    def constraints(self, raw) -> dict[str, float]:
        """``{params: {max: 50000}, latency_ms: {max: 0.5}}`` -> ``{"params": 50000.0, ...}``."""
        self.keys(raw, tuple(CONSTRAINTS), "constraints")
        limits = {}
        for key, limit in raw.items():
            self.keys(limit, ("max",), f"constraints.{key}")
            top = limit.get("max")
            if isinstance(top, bool) or not isinstance(top, int | float) or not top > 0:
                raise self.fail(f"constraints.{key}.max", f"expected a number above 0, got "
                                                          f"{top!r}")
            limits[key] = float(top)
        return limits

    def study(self, study, val_size: int) -> tuple[str, dict, dict]:
        self.keys(study, STUDY_KEYS, "study")
        metric = study.get("metric", DEFAULT_METRIC)
        if metric not in DIRECTIONS:
            raise self.fail("study.metric", f"unknown metric {metric!r}; use one of "
                                            f"{', '.join(DIRECTIONS)}")
        sampler = self.study_part(study.get("sampler"), "sampler", SAMPLER_DEFAULTS, SAMPLERS,
                                  {"seed": 0, "n_startup_trials": 0})
        return metric, sampler, self.pruner(study.get("pruner"), val_size)

    def pruner(self, raw, val_size: int) -> dict:
        """``study.pruner``: its type's keys with defaults filled in, plus ``reports_per_epoch``
        when it is not 1 and ``report_val_size`` when given (so the spaces written before them
        keep their fingerprints)."""
        if raw is not None and not isinstance(raw, dict):
            raise self.fail("study.pruner", f"expected a mapping, got {type(raw).__name__}")
        raw = dict(raw or {})
        kind = raw.get("type", "median")
        if kind not in PRUNERS:
            raise self.fail("study.pruner.type",
                            f"unknown pruner {kind!r}; use one of {', '.join(PRUNERS)}")
        defaults, minimums = PRUNERS[kind]
        per_epoch = raw.pop("reports_per_epoch", 1)
        report_size = raw.pop("report_val_size", None)
        part = self.study_part(raw, "pruner", {"type": kind, **defaults}, tuple(PRUNERS),
                               minimums)
        if part.get("bootstrap_count") == 0:
            # Added after the first spaces with this pruner: its default (Optuna's) is left out
            # so that those spaces keep their fingerprints and their studies resume.
            del part["bootstrap_count"]
        if (not isinstance(per_epoch, int) or isinstance(per_epoch, bool)
                or not 1 <= per_epoch <= REPORTS_PER_EPOCH_MAX):
            raise self.fail("study.pruner.reports_per_epoch",
                            f"must be a whole number from 1 to {REPORTS_PER_EPOCH_MAX}, got "
                            f"{per_epoch!r}")
        if per_epoch != 1:
            part["reports_per_epoch"] = per_epoch
        if report_size is not None:
            if (not isinstance(report_size, int) or isinstance(report_size, bool)
                    or not 1 <= report_size <= val_size):
                raise self.fail("study.pruner.report_val_size",
                                f"must be a whole number from 1 to data.val_size "
                                f"({val_size:,}), got {report_size!r}")
            if per_epoch == 1:
                raise self.fail("study.pruner.report_val_size",
                                "applies to reports inside an epoch; set reports_per_epoch "
                                "above 1 too, or remove it")
            part["report_val_size"] = report_size
        return part

    def study_part(self, raw, name: str, defaults: dict, kinds: tuple,
                   minimums: dict[str, int]) -> dict:
        """``study.sampler`` or ``study.pruner``: defaults filled in, keys, type and numbers
        checked. The defaults name every key the part may have."""
        if raw is not None and not isinstance(raw, dict):
            raise self.fail(f"study.{name}", f"expected a mapping, got {type(raw).__name__}")
        part = {**defaults, **(raw or {})}
        self.keys(part, tuple(defaults), f"study.{name}")
        if part["type"] not in kinds:
            raise self.fail(f"study.{name}.type",
                            f"unknown {name} {part['type']!r}; use one of {', '.join(kinds)}")
        for key, low in minimums.items():
            value = part[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise self.fail(f"study.{name}.{key}",
                                f"must be a whole number >= {low}, got {value!r}")
        return part

    def data(self, raw) -> DataSettings:
        self.keys(raw, DATA_KEYS, "data")
        return make_config(raw, where=f"{self.where}: data").data  # the settings check ranges

    def fixed(self, fixed) -> dict:
        if not isinstance(fixed, dict):
            raise self.fail("fixed", "expected a mapping of hyperparameters to values")
        for key in fixed:
            if key in DATA_KEYS:
                raise self.fail(f"fixed.{key}", "data keys belong in the data section")
            if key not in ALL_KEYS:
                raise SpaceError(unknown_key_message(key, f"{self.where}: fixed"))
        make_config(fixed, where=f"{self.where}: fixed")
        return fixed

    def presets(self, raw, fixed: dict) -> dict:
        if not isinstance(raw, dict):
            raise self.fail("presets", "expected a mapping of group name to named bundles")
        presets = {}
        for group, bundles in raw.items():
            if group in ALL_KEYS:
                raise self.fail(f"presets.{group}",
                                "a preset group cannot share a hyperparameter's name")
            if not isinstance(bundles, dict) or not bundles:
                raise self.fail(f"presets.{group}",
                                "expected a mapping of bundle name to hyperparameters")
            for bundle, values in bundles.items():
                self.bundle(f"presets.{group}.{bundle}", values, fixed)
            presets[str(group)] = {str(name): dict(values) for name, values in bundles.items()}
        return presets

    def bundle(self, key: str, values, fixed: dict) -> None:
        if not isinstance(values, dict):
            raise self.fail(key, "expected a mapping of hyperparameters")
        for name in values:
            if name not in ALL_KEYS or name in DATA_KEYS:
                raise SpaceError(unknown_key_message(name, f"{self.where}: {key}"))
        make_config({**fixed, **values}, where=f"{self.where}: {key}")

    def params(self, raw, presets: dict) -> tuple[ParamSpec, ...]:
        if not isinstance(raw, dict):
            raise self.fail("params", "expected a mapping of hyperparameter to its range")
        specs: list[ParamSpec] = []
        for name, entry in raw.items():
            specs.append(self.param(str(name), entry, specs, presets))
        return tuple(specs)

    def param(self, name: str, entry, earlier: list[ParamSpec], presets: dict) -> ParamSpec:
        key = f"params.{name}"
        if name in DATA_KEYS:
            raise self.fail(key, "data keys cannot be searched: trials must share one "
                                 "validation set")
        if name not in ALL_KEYS and name not in presets:
            raise SpaceError(unknown_key_message(name, f"{self.where}: params"))
        if not isinstance(entry, dict):
            raise self.fail(key, "expected a mapping like {type: float, low: 0.0, high: 0.5}")
        self.keys(entry, PARAM_KEYS, key)
        kind = entry.get("type")
        if kind not in PARAM_TYPES:
            raise self.fail(f"{key}.type", f"must be one of {', '.join(PARAM_TYPES)}, "
                                           f"got {kind!r}")
        when = self.when(entry.get("when"), earlier, key)
        if name in presets and kind != "categorical":
            raise self.fail(f"{key}.type", "a preset group is chosen with type: categorical")
        if kind == "categorical":
            return self.categorical(name, entry, when, presets.get(name))
        return self.numeric(name, kind, entry, when)

    def categorical(self, name: str, entry: dict, when: dict,
                    bundles: dict | None) -> ParamSpec:
        key = f"params.{name}"
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self.fail(f"{key}.choices", "a categorical parameter needs a non-empty list")
        for extra in ("low", "high", "step", "log"):
            if extra in entry:
                raise self.fail(f"{key}.{extra}", "categorical parameters take choices only")
        for choice in choices:
            if not isinstance(choice, (str, int, float, bool)):
                raise self.fail(f"{key}.choices", f"choices must be plain values, got {choice!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise self.fail(f"{key}.choices", "choices repeat a value")
        if bundles is not None:
            unknown = [c for c in choices if str(c) not in bundles]
            if unknown:
                raise self.fail(f"{key}.choices", f"{unknown[0]!r} is not a preset of {name}; "
                                                  f"presets: {', '.join(bundles)}")
        return ParamSpec(name, "categorical", choices=tuple(choices), when=when)

    def numeric(self, name: str, kind: str, entry: dict, when: dict) -> ParamSpec:
        key = f"params.{name}"
        if "choices" in entry:
            raise self.fail(f"{key}.choices", f"{kind} parameters take low and high, not "
                                              "choices")
        low, high = (self.bound(key, bound, entry.get(bound), kind) for bound in ("low", "high"))
        if low > high:
            raise self.fail(key, f"low {low:g} is above high {high:g}; swap them")
        log = entry.get("log", False)
        if not isinstance(log, bool):
            raise self.fail(f"{key}.log", f"must be true or false, got {log!r}")
        if log and low <= 0:
            raise self.fail(f"{key}.low", f"a log range must start above 0, got {low:g}")
        step = self.step(key, entry.get("step"), kind, log, low, high)
        return ParamSpec(name, kind, low=low, high=high, step=step, log=log, when=when)

    def bound(self, key: str, bound: str, value, kind: str) -> int | float:
        number = as_number(value)
        if number is None or not math.isfinite(number):
            raise self.fail(f"{key}.{bound}", f"must be a number, got {value!r}")
        if kind == "int" and not float(number).is_integer():
            raise self.fail(f"{key}.{bound}", f"must be a whole number for an int, got {value!r}")
        return int(number) if kind == "int" else float(number)

    def step(self, key: str, step, kind: str, log: bool, low, high) -> int | float | None:
        if step is None:
            return None
        if log:
            raise self.fail(f"{key}.step", "Optuna cannot combine step with log; drop one")
        number = as_number(step)
        if number is None or not math.isfinite(number) or number <= 0:
            raise self.fail(f"{key}.step", f"must be a positive number, got {step!r}")
        if kind == "int" and not float(number).is_integer():
            raise self.fail(f"{key}.step", f"must be a whole number for an int, got {step!r}")
        span = (high - low) / number
        if not math.isclose(span, round(span), abs_tol=1e-9):
            raise self.fail(f"{key}.step", f"high - low ({high - low:g}) must be a multiple of "
                                           f"step {number:g}")
        return int(number) if kind == "int" else float(number)

    def when(self, raw, earlier: list[ParamSpec], key: str) -> dict[str, tuple]:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not raw:
            raise self.fail(f"{key}.when", "expected a mapping like {optimizer: [sgd, rmsprop]}")
        by_name = {p.name: p for p in earlier}
        when = {}
        for other, values in raw.items():
            values = values if isinstance(values, list) else [values]
            spec = by_name.get(other)
            if spec is None or spec.type != "categorical":
                raise self.fail(f"{key}.when.{other}", "must name a categorical parameter "
                                                       "declared above this one")
            unknown = [v for v in values if v not in spec.choices]
            if unknown:
                raise self.fail(f"{key}.when.{other}",
                                f"{unknown[0]!r} is not one of {other}'s choices "
                                f"({', '.join(map(str, spec.choices))})")
            when[str(other)] = tuple(values)
        return when


def _check_every_value(space: SearchSpace, fail) -> None:
    """Every bound and every choice must be a valid value for its hyperparameter."""
    for param in space.params:
        if param.name in space.presets:
            continue
        labels = (["choices"] * len(param.choices) if param.type == "categorical"
                  else ["low", "high"])
        for label, value in zip(labels, param.extremes(), strict=True):
            try:
                make_config({**space.fixed, param.name: value})
            except UsageError as e:
                raise fail(f"params.{param.name}.{label}",
                           f"{value!r} is out of range: {e}") from None


def _corner_values(param: ParamSpec) -> list:
    """Values that bound what a parameter can do to an architecture.

    Whether a network can be built is monotone in every numeric key (a larger kernel or more
    blocks only shrink the feature map further), so numeric ranges and numeric choices need only
    their two ends; booleans and strings need every choice.
    """
    values = param.extremes()
    numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if param.type == "categorical" and len(numeric) == len(values):
        return [min(values), max(values)]
    return values


def _check_every_architecture(space: SearchSpace, fail) -> None:
    """Build-check each corner of the architecture sub-space (bounds and choices)."""
    axes: list[list[tuple[str, Any]]] = []
    for param in space.params:
        if param.name in space.presets:
            bundles = space.presets[param.name]
            if any(k in MODEL_KEYS for b in bundles.values() for k in b):
                axes.append([(param.name, c) for c in param.choices])
        elif param.name in MODEL_KEYS:
            axes.append([(param.name, v) for v in _corner_values(param)])
    for combo in itertools.product(*axes):
        sampled = dict(combo)
        try:
            make_config(space.hyperparameters(sampled))
        except UsageError as e:
            picked = ", ".join(f"{k}={v}" for k, v in sampled.items())
            raise fail("params", f"the space can sample a network that cannot be built "
                                 f"({picked}): {e}") from None


def describe_change(old: dict, new: dict) -> str:
    """The first few differences between two canonical spaces, for the refusal message."""
    changes = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k, "(absent)"), b.get(k, "(absent)"), f"{prefix}.{k}" if prefix else k)
        elif a != b:
            changes.append(f"{prefix}: {a} → {b}")

    walk(old, new, "")
    shown = "; ".join(changes[:3])
    return shown + (f" (+{len(changes) - 3} more)" if len(changes) > 3 else "")
