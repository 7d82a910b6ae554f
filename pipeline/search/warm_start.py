"""Warm starts: a study's first trials are the best configurations of an earlier study in the same
storage, or the parameters of a registered model's run, each checked against this space first.

Optuna runs enqueued trials before it samples; each carries where it came from (the trial
attribute ``warm_start``). A configuration that does not fit this space (a parameter it lacks, a
value outside a range or among no choices) is skipped with one line naming the key. A study is
warm-started once: the study attribute ``warm_start`` records the source, and a resumed study
or a second worker of the same search enqueues nothing more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import optuna

from pipeline.core.errors import UsageError, first_line
from pipeline.study.space import SearchSpace
from pipeline.study.studies import study_names
from pipeline.study.trials import ranked_trials

ATTR_WARM_START = "warm_start"  # on the study: its source; on a trial: the configuration's origin


@dataclass(frozen=True)
class Configuration:
    origin: str  # e.g. "trial #7 of study 'mnist-cpu'"
    values: dict


def configurations(source: str, storage, study_name: str,
                   tracking_uri: str) -> list[Configuration]:
    """``source``'s configurations, best first: read only, so that a source that is not there
    is one line before anything is created."""
    if source.startswith("models:/"):
        return _from_model(source, tracking_uri)
    return _from_study(storage, source, study_name)


def enqueue(study: optuna.Study, space: SearchSpace, source: str,
            found: list[Configuration], *, top: int, room: int, echo=print) -> int:
    """Enqueue up to ``top`` (and no more than ``room``, the trials the study still needs) of
    the ``found`` configurations that fit ``space``; returns how many. Once per study."""
    if ATTR_WARM_START in study.user_attrs:
        return 0
    queued = 0
    for configuration in found[:top]:
        if queued >= room:
            break
        try:
            values = space.fit(configuration.values)
        except ValueError as e:
            echo(f"warm start: {configuration.origin} does not fit {space.path.name}: {e}; "
                 "skipped")
            continue
        study.enqueue_trial(values, user_attrs={ATTR_WARM_START: configuration.origin},
                            skip_if_exists=True)
        queued += 1
    study.set_user_attr(ATTR_WARM_START, source)
    echo(f"warm start: {queued} configuration(s) of {source} queued to run first")
    return queued


def _from_study(storage, name: str, this_study: str) -> list[Configuration]:
    """The complete trials of study ``name`` in ``storage``, best first."""
    if name == this_study:
        raise UsageError(f"--warm-start {name}: a study cannot warm-start from itself")
    names = study_names(storage)
    if name not in names:
        known = ", ".join(names) or "none"
        raise UsageError(f"--warm-start {name}: no such study in this storage (its studies: "
                         f"{known}); give a study name or a models:/ URI")
    source = optuna.load_study(study_name=name, storage=storage)
    ranked = ranked_trials(source)
    if not ranked:
        raise UsageError(f"--warm-start {name}: study {name!r} has no complete trial to start "
                         "from")
    return [Configuration(f"trial #{t.number} of study {name!r}", dict(t.params))
            for t in ranked]


MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def _from_model(uri: str, tracking_uri: str) -> list[Configuration]:
    """The params of the run behind a registered version (models:/NAME@ALIAS, models:/NAME/N)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    match = MODEL_URI.match(uri)
    if match is None:
        raise UsageError(f"--warm-start {uri}: a registered model is models:/NAME@ALIAS or "
                         "models:/NAME/VERSION")
    client = MlflowClient(tracking_uri)
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(match["name"], match["alias"])
        else:
            version = client.get_model_version(match["name"], match["version"])
        params = client.get_run(version.run_id).data.params
    except MlflowException as e:
        raise UsageError(f"--warm-start {uri}: {first_line(e)}") from None
    return [Configuration(f"{uri} (run {version.run_id})", dict(params))]
