"""What a search is asked to do, as one object: the command builds it, and every worker (a search
in this process, a worker process of this machine, a Ray actor elsewhere) gets the same one,
serialised as JSON. The encoding follows the dataclass's fields, so a field added here reaches
every kind of worker without anyone listing it again."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.faults import DEFAULT_OUTAGE_TIMEOUT
from pipeline.study.space import SearchSpace, parse_space


@dataclass(frozen=True)
class SearchRequest:
    space: SearchSpace
    trials: int  # the study's target number of finished trials
    study_name: str
    storage_url: str  # the Optuna storage of the study
    tracking_uri: str  # the MLflow store every trial's run goes to
    seed: int
    device: str = "auto"
    timeout: float | None = None  # seconds; no new trial starts after it
    force: bool = False  # resume even though the space changed
    data_dir: Path | None = None
    report_dir: Path = Path("reports")
    report: bool = True
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    workers: int = 1  # processes sharing this study (this one included)
    threads: int | None = None  # torch CPU threads for this process
    quiet: bool = False  # a worker of a coordinated search: errors only, no report
    # Seconds a store may stay unreachable, waited out, before the search stops (resumable).
    outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT
    # A study of the same storage, or a models:/ URI, whose best configurations run first.
    warm_start: str | None = None
    warm_start_top: int = 3

    def to_json(self) -> str:
        return json.dumps({f.name: _encode(getattr(self, f.name))
                           for f in dataclasses.fields(self)})

    @classmethod
    def from_json(cls, text: str) -> SearchRequest:
        hints = typing.get_type_hints(cls)
        values = json.loads(text)
        return cls(**{name: _decode(hints[name], value) for name, value in values.items()})


def _encode(value: Any) -> Any:
    if isinstance(value, SearchSpace):
        # As YAML inside the JSON: whatever the file held (dates, keys that are numbers) comes
        # back as it was read, in the file's order (a parameter's `when` names earlier ones).
        source = yaml.safe_dump(value.source, sort_keys=False)
        return {"path": str(value.path), "source": source}
    if isinstance(value, Path):
        return str(value)
    return value


def _decode(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(kind, types.UnionType):  # X | None: the one type that is not None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind is SearchSpace:
        return parse_space(yaml.safe_load(value["source"]), Path(value["path"]))
    if kind is Path:
        return Path(value)
    return value
