"""Optuna studies: created from a search space or resumed when the space is unchanged (its
fingerprint), and found again by name for the commands that read them."""

from __future__ import annotations

import json
from datetime import datetime

import optuna

from pipeline.core import metric
from pipeline.core.errors import UsageError
from pipeline.core.keys import (
    ATTR_FINGERPRINT,
    ATTR_SAMPLER,
    ATTR_SPACE,
    ATTR_SPACE_FILE,
    ATTR_SPACE_HISTORY,
)
from pipeline.study.samplers import make_pruner, sampler_settings, seeded_sampler
from pipeline.study.space import SearchSpace, describe_change
from pipeline.study.storage import open_storage, redact


class StudyError(UsageError):
    """A study that does not exist, or cannot be resumed as asked."""


def study_names(storage) -> list[str]:
    """Study names, oldest first: by first trial's start, studies without trials first, ties in
    creation order (summaries sort by creation; the second sort is stable)."""
    summaries = sorted(optuna.get_all_study_summaries(storage=storage, include_best_trial=False))
    ordered = sorted(summaries, key=lambda s: (s.datetime_start is not None,
                                               s.datetime_start or datetime.min))
    return [s.study_name for s in ordered]


def resolve_study_name(storage, name: str | None, storage_url: str) -> str:
    """``name`` if it exists, else the most recently started study; a clear error otherwise."""
    names = study_names(storage)
    if name is None:
        if not names:
            raise StudyError(f"no study in {redact(storage_url)}; run `pipeline search` first "
                             "or point --storage at the right database")
        return names[-1]
    if name not in names:
        known = f"; studies there: {', '.join(names)}" if names else ""
        raise StudyError(f"no study named {name!r} in {redact(storage_url)}{known}")
    return name


def load_study(storage, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def open_existing_study(url: str, name: str | None, **storage_options) -> optuna.Study:
    """The study ``name`` (default: the most recent) for a command that reads it: a storage
    file that is not there, or a study that is not in it, is one error and writes nothing."""
    storage = open_storage(url, must_exist=True, **storage_options)
    return load_study(storage, resolve_study_name(storage, name, url))


def study_metric(study: optuna.Study, default: str = metric.DEFAULT) -> str:
    """The metric the study optimises, as its search space recorded it."""
    return json.loads(study.user_attrs.get(ATTR_SPACE, "{}")).get("metric", default)


def create_or_resume(storage, name: str, space: SearchSpace, seed: int, *,
                     force: bool = False) -> tuple[optuna.Study, bool]:
    """The study ``name``, created from ``space`` or resumed if its space is unchanged.

    A resumed study whose space changed is refused unless ``force``; the metric (and with it the
    direction) can never change. Returns (study, created).
    """
    pruner = make_pruner(space)
    if name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage,
                                  sampler=seeded_sampler(space, seed), pruner=pruner)
        old = study.user_attrs.get(ATTR_FINGERPRINT)
        if old is not None and old != space.fingerprint:
            old_space = json.loads(study.user_attrs.get(ATTR_SPACE, "{}"))
            change = describe_change(old_space, space.canonical())
            if old_space.get("metric", space.metric) != space.metric:
                raise StudyError(f"study {name!r} optimises {old_space['metric']}, the space "
                                 f"{space.path} optimises {space.metric}; a study cannot change "
                                 "its metric: use a new --study name")
            if not force:
                raise StudyError(f"study {name!r} was created from a different search space "
                                 f"({change}); continue it anyway with --force, or start a new "
                                 "study with --study NAME")
            history = study.user_attrs.get(ATTR_SPACE_HISTORY, [])
            study.set_user_attr(ATTR_SPACE_HISTORY, [*history, {"from": old,
                                                                 "to": space.fingerprint,
                                                                 "change": change}])
            _record_space(study, space, seed)
        return study, False
    study = optuna.create_study(storage=storage, study_name=name, direction=space.direction,
                                sampler=seeded_sampler(space, seed), pruner=pruner,
                                load_if_exists=True)
    _record_space(study, space, seed)
    return study, True


def _record_space(study: optuna.Study, space: SearchSpace, seed: int) -> None:
    study.set_user_attr(ATTR_FINGERPRINT, space.fingerprint)
    study.set_user_attr(ATTR_SPACE, json.dumps(space.canonical(), sort_keys=True, default=str))
    study.set_user_attr(ATTR_SPACE_FILE, str(space.path))
    study.set_user_attr(ATTR_SAMPLER, sampler_settings(space, seed))
