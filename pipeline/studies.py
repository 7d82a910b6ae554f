"""Optuna studies: storage URLs, creating or resuming a study safely, and counting its trials."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from datetime import datetime

import optuna
import sqlalchemy
from optuna.trial import TrialState

from pipeline.errors import UsageError, first_line
from pipeline.keys import (
    ATTR_EPOCHS,
    ATTR_FINGERPRINT,
    ATTR_SAMPLER,
    ATTR_SPACE,
    ATTR_SPACE_FILE,
    ATTR_SPACE_HISTORY,
    SYS_FAILED_TRIAL,
    SYS_RETRY_HISTORY,
)
from pipeline.space import SearchSpace, describe_change
from pipeline.stores import require_study_store

STORAGE_ENV = "PIPELINE_STORAGE"
DEFAULT_STORAGE = "sqlite:///optuna.db"
SQLITE_BUSY_SECONDS = 60

class StudyError(UsageError):
    """A study that does not exist, or cannot be resumed as asked."""


def default_storage() -> str:
    return os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith(".journal")


def journal_path(url: str) -> str:
    """journal:///abs/path.journal, journal:rel.journal or a bare *.journal path -> the path."""
    return url.removeprefix("journal:").removeprefix("//") if url.startswith("journal:") else url


def open_storage(url: str, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None,
                 must_exist: bool = False) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; RDB storages get heartbeats and stale-trial retries.

    ``must_exist``: for commands that only read, a SQLite or journal file that is not there is
    an error, not a new empty file.
    """
    if must_exist:
        require_study_store(url, redact(url))
    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(journal_path(url)))
    if "://" not in url:
        raise UsageError(f"storage {url!r} is not a database URL; use e.g. sqlite:///optuna.db, "
                         "postgresql://user@host/db or journal:///path/optuna.journal")
    _require_driver(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        kwargs: dict = {}
        if url.startswith("sqlite"):
            # Worker processes of one machine share a SQLite study: a writer that finds the
            # file locked waits for the other's short transaction instead of failing.
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}
        if heartbeat_interval:
            kwargs.update(
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period or 3 * heartbeat_interval,
                # A trial whose worker stopped beating is failed, then run again with its params.
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3),
            )
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy reports bad URLs in many types
            raise UsageError(f"cannot open storage {redact(url)}: "
                             f"{first_line(e)}") from None


def _require_driver(url: str) -> None:
    """A database URL whose Python driver is missing is one line naming what to install (Optuna
    would say "Please install appropriate one")."""
    from sqlalchemy.engine import make_url

    try:
        dialect = make_url(url).get_dialect()
    except Exception as e:  # noqa: BLE001 - SQLAlchemy reports bad URLs in many types
        raise UsageError(f"storage {redact(url)} is not a database URL SQLAlchemy knows "
                         f"({first_line(e)}); use e.g. sqlite:///optuna.db or "
                         "postgresql://user@host/db") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        module = e.name or dialect.driver
        if dialect.name == "postgresql":
            hint = ('pip install -e ".[postgres]" (psycopg 3), and write postgresql://…'
                    if dialect.driver != "psycopg" else 'pip install -e ".[postgres]"')
        else:
            hint = f"install the Python module {module} (a {dialect.name} driver)"
        raise UsageError(f"cannot open storage {redact(url)}: its database driver ({module}) is "
                         f"not installed; {hint}") from None


def tune_sqlite_for_search(storage: optuna.storages.BaseStorage) -> None:
    """Ready a SQLite study for a search: write-ahead logging lets several worker processes of
    this machine read while one writes (a file setting, kept for later searches), and with it
    ``synchronous=NORMAL`` lets a commit return without waiting for the disk. A trial makes
    dozens of small commits (each parameter, report and attribute); this halves what they cost
    here (60 to 35 ms for 8 attributes, a report and a tell). A crashed process loses nothing
    it committed; a power cut may lose the last commits, and never corrupts the file. Other
    storages need nothing."""
    if not (isinstance(storage, optuna.storages.RDBStorage)
            and storage.engine.dialect.name == "sqlite"):
        return
    with storage.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _no_disk_wait_per_commit(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    storage.engine.dispose()  # pooled connections reconnect with the setting


def redact(url: str) -> str:
    """A storage URL without its password, safe to log."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    if ":" not in credentials:
        return url  # a user name and no password
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


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


def study_metric(study: optuna.Study, default: str = "val_accuracy") -> str:
    """The metric the study optimises, as its search space recorded it."""
    return json.loads(study.user_attrs.get(ATTR_SPACE, "{}")).get("metric", default)


def _tpe_options(space: SearchSpace) -> dict:
    # Conditional parameters (`when`) make the space dynamic; group=True lets multivariate TPE
    # model each sub-space instead of falling back to independent sampling.
    return {"n_startup_trials": space.sampler["n_startup_trials"], "multivariate": True,
            "group": any(p.when for p in space.params), "constant_liar": True}


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask-and-tell: after a trial, Optuna's would call study.stop()
    once the grid is used up, which is allowed only inside study.optimize. The search asks
    is_exhausted() itself before it claims a trial (search.claim_next_trial)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    kind = space.sampler["type"]
    if kind == "grid":
        return GridSampler(space.grid(), seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, **_tpe_options(space))


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Seeds the sampler afresh for every trial, from the study's seed and the trial number.

    A sampler seeded once per process replays its first random draws in every process that
    resumes the study or joins it. Seeding by trial number keeps a study reproducible, and no two
    trials (in any process, on any machine) draw alike.
    """

    def __init__(self, factory, seed: int) -> None:
        self._factory = factory
        self._seed = seed
        self._inner = factory(seed)

    def before_trial(self, study, trial) -> None:
        self._inner = self._factory(self._seed + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()

    def is_exhausted(self, study) -> bool:
        """For a grid: every combination has run."""
        check = getattr(self._inner, "is_exhausted", None)
        return bool(check and check(study))


def seeded_sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if space.sampler["type"] == "grid":
        # The grid sampler maps grid ids through one seeded shuffle: every process and every
        # trial must share that seed, or ids would name different points.
        return make_sampler(space, seed)
    return TrialSeededSampler(lambda s: make_sampler(space, s), seed)


def sampler_settings(space: SearchSpace, seed: int) -> dict:
    settings = {"type": space.sampler["type"], "seed": seed,
                "seeding": "seed" if space.sampler["type"] == "grid" else "seed + trial number"}
    if settings["type"] == "tpe":
        settings.update(_tpe_options(space))
    return settings


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """The space's pruner. Its steps are reports: epochs, or fractions of one
    (``reports_per_epoch``), which the resources of the multi-fidelity pruners count too."""
    p = space.pruner
    if p["type"] == "none":
        return optuna.pruners.NopPruner()
    if p["type"] == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p["min_resource"], reduction_factor=p["reduction_factor"],
            min_early_stopping_rate=p["min_early_stopping_rate"],
            bootstrap_count=p.get("bootstrap_count", 0))
    if p["type"] == "hyperband":
        # The most a trial can report: the space's largest epoch count, in reports.
        return optuna.pruners.HyperbandPruner(
            min_resource=p["min_resource"], max_resource=space.max_reports(),
            reduction_factor=p["reduction_factor"])
    return optuna.pruners.MedianPruner(n_startup_trials=p["n_startup_trials"],
                                       n_warmup_steps=p["n_warmup_steps"],
                                       interval_steps=p["interval_steps"])


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


@dataclass(frozen=True)
class TrialCounts:
    """Where a study stands against its target number of trials.

    ``retried`` failed trials (interrupted, or their worker died) are run again with the same
    parameters as a new trial, so they do not count towards the target.
    """

    complete: int
    pruned: int
    failed: int
    retried: int
    running: int
    waiting: int

    @property
    def finished(self) -> int:
        """Trials that count towards the target: complete, pruned, failed for good."""
        return self.complete + self.pruned + self.failed

    def should_start(self, target: int) -> bool:
        """Whether one more trial may start: a queued retry, or room under the target."""
        return self.waiting > 0 or self.finished + self.running < target

    def line(self) -> str:
        return (f"{self.complete} complete, {self.pruned} pruned, {self.failed} failed"
                + (f", {self.running} running" if self.running else "")
                + (f", {self.retried} retried" if self.retried else ""))


def retried_numbers(trials) -> set[int]:
    """Numbers of trials that a later trial re-runs (its retry history names them)."""
    return {n for t in trials for n in t.system_attrs.get(SYS_RETRY_HISTORY, [])}


def count_trials(study: optuna.Study) -> TrialCounts:
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    by_state = {state: 0 for state in TrialState}
    failed_for_good = 0
    for t in trials:
        by_state[t.state] += 1
        if t.state == TrialState.FAIL and t.number not in retried:
            failed_for_good += 1
    return TrialCounts(
        complete=by_state[TrialState.COMPLETE], pruned=by_state[TrialState.PRUNED],
        failed=failed_for_good, retried=by_state[TrialState.FAIL] - failed_for_good,
        running=by_state[TrialState.RUNNING], waiting=by_state[TrialState.WAITING],
    )


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial to run again with the same parameters (lineage in system attrs).

    Same record as Optuna's RetryHeartbeatStaleTrialCallback, so both kinds of retry read alike.
    """
    if not trial.params:
        return  # interrupted before anything was sampled: a fresh trial will do
    history = [*trial.system_attrs.get(SYS_RETRY_HISTORY, []), trial.number]
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs={SYS_FAILED_TRIAL: trial.system_attrs.get(SYS_FAILED_TRIAL, trial.number),
                      SYS_RETRY_HISTORY: history},
    ))


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.value, reverse=maximize)


def epochs_trained(trial: optuna.trial.FrozenTrial) -> float:
    """Passes over the training images: recorded by the trial (fractions when a pruner stopped
    it part-way), else its reports, one per epoch, as before fractions existed."""
    return trial.user_attrs.get(ATTR_EPOCHS, len(trial.intermediate_values))
