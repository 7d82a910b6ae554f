"""Warm starts on Optuna studies made by hand in one storage: an earlier study's best
configurations are enqueued first (those that fit this space, as many as the study has room
for, once), and a source that is not there is one line before anything is created."""

from __future__ import annotations

import textwrap

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from pipeline.core.errors import UsageError
from pipeline.search import warm_start
from pipeline.study.space import load_space

DISTRIBUTIONS = {"width": CategoricalDistribution([4, 8, 16]),
                 "lr": FloatDistribution(1e-4, 1e-1, log=True)}
# value, width, lr: the best first once ranked
YESTERDAY = [(0.95, 8, 1e-2), (0.99, 8, 3e-3), (0.97, 16, 1e-3), (0.90, 4, 5e-2)]


@pytest.fixture
def storage():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="yesterday", storage=storage, direction="maximize")
    for value, width, lr in YESTERDAY:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value,
                                     params={"width": width, "lr": lr},
                                     distributions=DISTRIBUTIONS))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"width": 4, "lr": 1e-4},
                                 distributions=DISTRIBUTIONS, intermediate_values={1: 0.1}))
    optuna.create_study(study_name="empty", storage=storage)
    return storage


@pytest.fixture
def today(tmp_path):
    """This space: width 4 or 8 (yesterday's 16 does not fit), lr as yesterday's."""
    path = tmp_path / "today.yaml"
    path.write_text(textwrap.dedent("""\
        params:
          width: {type: categorical, choices: [4, 8]}
          lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
        """))
    return load_space(path)


def test_the_best_configurations_that_fit_run_first_in_order(storage, today):
    study = optuna.create_study(study_name="today", storage=storage, direction="maximize")
    found = warm_start.configurations("yesterday", storage, "today", "unused")
    assert [c.origin for c in found] == [f"trial #{n} of study 'yesterday'" for n in (1, 2, 0, 3)]
    lines = []
    queued = warm_start.enqueue(study, today, "yesterday", found, top=3, room=10,
                                echo=lines.append)
    assert queued == 2
    assert lines == [
        "warm start: trial #2 of study 'yesterday' does not fit today.yaml: width=16 is not one "
        "of its choices [4, 8]; skipped",
        "warm start: 2 configuration(s) of yesterday queued to run first"]
    first, second = study.ask(), study.ask()  # what the search's claim does, then samples
    assert today.suggest(first) == {"width": 8, "lr": 3e-3}
    assert today.suggest(second) == {"width": 8, "lr": 1e-2}
    assert first.user_attrs["warm_start"] == "trial #1 of study 'yesterday'"
    assert study.ask().user_attrs == {}  # then the sampler's own


def test_a_study_is_warm_started_once_and_never_past_its_target(storage, today):
    study = optuna.create_study(study_name="today", storage=storage, direction="maximize")
    found = warm_start.configurations("yesterday", storage, "today", "unused")
    assert warm_start.enqueue(study, today, "yesterday", found, top=3, room=1,
                              echo=lambda _: None) == 1
    # A resumed study, or another worker of the same search: nothing more.
    assert warm_start.enqueue(study, today, "yesterday", found, top=3, room=10,
                              echo=lambda _: None) == 0
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    assert study.user_attrs["warm_start"] == "yesterday"


@pytest.mark.parametrize("source, fragment", [
    ("nope", "--warm-start nope: no such study in this storage (its studies: empty, yesterday)"),
    ("today", "--warm-start today: a study cannot warm-start from itself"),
    ("empty", "study 'empty' has no complete trial to start from"),
    ("models:/mnist-cnn", "a registered model is models:/NAME@ALIAS or models:/NAME/VERSION"),
])
def test_a_source_that_cannot_start_the_study_is_one_line(storage, source, fragment):
    with pytest.raises(UsageError) as refused:
        warm_start.configurations(source, storage, "today", "sqlite:///unused.db")
    assert fragment in str(refused.value) and "\n" not in str(refused.value)
