"""Study bookkeeping: seeding across processes and resumes, trial accounting, the study lock."""

from __future__ import annotations

import textwrap
import threading
import time

import optuna
import pytest

from pipeline.study.locking import study_lock
from pipeline.study.space import load_space
from pipeline.study.storage import open_storage
from pipeline.study.studies import create_or_resume
from pipeline.study.trials import count_trials, requeue

TPE = textwrap.dedent("""\
    study: {sampler: {type: tpe, seed: 3, n_startup_trials: 10}}
    params:
      lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
      width: {type: categorical, choices: [4, 8, 16]}
""")
GRID = textwrap.dedent("""\
    study: {sampler: {type: grid, seed: 3}, pruner: {type: none}}
    params:
      width: {type: categorical, choices: [4, 8, 16]}
      depth: {type: int, low: 1, high: 2}
""")


def _space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path)


def _ask(study, space) -> dict:
    trial = study.ask()
    params = space.suggest(trial)
    study.tell(trial, 0.5)
    return params


def test_each_trial_number_draws_its_own_reproducible_parameters(tmp_path):
    space = _space(tmp_path, TPE)
    url = f"sqlite:///{tmp_path}/a.db"
    # Two "processes" on one study (two study objects, each with its own sampler).
    first, _ = create_or_resume(open_storage(url), "s", space, seed=3)
    second, _ = create_or_resume(open_storage(url), "s", space, seed=3)
    drawn = [_ask(first, space), _ask(second, space), _ask(first, space)]
    assert len({tuple(d.items()) for d in drawn}) == 3  # nobody replays another's draw
    # The same seed gives the same trials in a fresh study: reproducible.
    again, _ = create_or_resume(open_storage(f"sqlite:///{tmp_path}/b.db"), "s", space, seed=3)
    assert [_ask(again, space) for _ in range(3)] == drawn


def test_a_grid_is_covered_exactly_once_across_processes_and_resumes(tmp_path):
    space = _space(tmp_path, GRID)
    url = f"sqlite:///{tmp_path}/g.db"
    seen = []

    def objective(trial):
        seen.append(tuple(sorted(space.suggest(trial).items())))
        return 0.5

    for _ in range(3):  # three processes, two trials each (optimize: the grid stops the study)
        study, _ = create_or_resume(open_storage(url), "g", space, seed=3)
        study.optimize(objective, n_trials=2)
    assert len(seen) == 6 and len(set(seen)) == 6  # 3 widths x 2 depths, each once
    assert study.sampler.is_exhausted(study)


def test_interrupted_trials_are_requeued_and_do_not_count(tmp_path):
    space = _space(tmp_path, TPE)
    study, _ = create_or_resume(open_storage(f"sqlite:///{tmp_path}/c.db"), "c", space, seed=0)
    trial = study.ask()
    space.suggest(trial)
    frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
    requeue(study, frozen)
    counts = count_trials(study)
    assert (counts.failed, counts.retried, counts.waiting) == (0, 1, 1)
    assert counts.should_start(target=1)  # the retry must run even though 1 trial exists
    retry = study.ask()
    assert space.suggest(retry) == frozen.params


def test_the_file_lock_lets_one_worker_in_at_a_time(tmp_path):
    url = f"sqlite:///{tmp_path}/l.db"
    storage = open_storage(url)
    inside, overlaps = [], []

    def worker():
        lock = study_lock(storage, url, "s")
        for _ in range(5):
            lock.acquire()
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(True)
            time.sleep(0.005)
            inside.pop()
            lock.release()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps


@pytest.mark.parametrize("url", ["journal:///x/optuna.journal", "x/optuna.journal",
                                 "journal:x.journal"])
def test_journal_urls(url):
    from pipeline.core.stores import local_file
    from pipeline.study.storage import is_journal

    assert is_journal(url)
    path = str(local_file(url))
    assert path.endswith(".journal") and "journal:" not in path


def test_of_two_workers_failing_the_same_dead_trial_only_one_wins(tmp_path):
    """Two workers reconciling at once: the loser must neither crash nor queue a second retry
    (it used to raise UpdateFinishedTrialError)."""
    from pipeline.study.optuna_private import fail_dead_trial

    space = _space(tmp_path, TPE)
    study, _ = create_or_resume(open_storage(f"sqlite:///{tmp_path}/d.db"), "d", space, seed=0)
    trial = study.ask()
    space.suggest(trial)
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))[0]
    assert fail_dead_trial(study, running, {"reason": "worker died"}) is True
    assert fail_dead_trial(study, running, {"reason": "worker died"}) is False
    assert study.trials[0].state == optuna.trial.TrialState.FAIL


@pytest.mark.parametrize("url, shown", [
    ("postgresql://user:s3cret@host/db", "postgresql://user:***@host/db"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),  # no password to hide
    ("sqlite:///optuna.db", "sqlite:///optuna.db"),
    ("postgresql+psycopg://user:p%40ss@host:5432/db", "postgresql+psycopg://user:***@host:5432/db"),
    ("journal:///x/optuna.journal", "journal:///x/optuna.journal"),
    ("optuna.journal", "optuna.journal"),
])
def test_storage_urls_are_shown_without_their_password(url, shown):
    from pipeline.study.storage import redact

    assert redact(url) == shown


def test_resuming_with_other_constraints_is_refused_as_any_change(tmp_path):
    from pipeline.study.studies import StudyError

    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    limited = _space(tmp_path, TPE + "constraints: {params: {max: 50000}}\n")
    create_or_resume(storage, "s", limited, seed=3)
    looser = _space(tmp_path, TPE + "constraints: {params: {max: 60000}}\n")
    with pytest.raises(StudyError) as refused:
        create_or_resume(storage, "s", looser, seed=3)
    assert "constraints.params: 50000.0 → 60000.0" in str(refused.value)
    assert "--force" in str(refused.value)
