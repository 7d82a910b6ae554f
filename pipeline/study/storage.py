"""Optuna storages: which URL, opened how, with which driver; a URL shown without its password.

SQLite files, Optuna's journal files, and databases (PostgreSQL) reached through SQLAlchemy. Every
search, worker and reading command opens its study's storage here.
"""

from __future__ import annotations

import re
import warnings

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pipeline.core import env
from pipeline.core.errors import UsageError, first_line
from pipeline.core.stores import local_file, require_study_store

DEFAULT_STORAGE = "sqlite:///optuna.db"
SQLITE_BUSY_SECONDS = 60


def default_storage() -> str:
    return env.STORAGE.get(DEFAULT_STORAGE)


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith(".journal")


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

        return optuna.storages.JournalStorage(JournalFileBackend(str(local_file(url))))
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
    """A storage URL without its password, safe to log (file paths and journals as they are)."""
    if "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads: hide all before the host
        return re.sub(r"://[^/]*@", "://***@", url)


