"""A lock per study, so workers that share a study never start more trials than its total.

A worker takes the lock, counts the study's trials, and if there is room creates its next trial;
it lets go as soon as the trial exists (search.claim, a `with` block). On PostgreSQL the lock is a
session advisory lock, so workers on different machines serialise too; on a file storage (SQLite,
Optuna's journal) it is a lock on a file beside it, which covers the processes of one machine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import filelock
import optuna

from pipeline.core.stores import local_file


class StudyLock:
    """``with lock:`` blocks until this worker may count and create trials, and lets go at the
    end of the block. The base class locks nothing (storages with no cross-process guard)."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _FileLock(StudyLock):
    """An exclusive lock on a file beside the storage: filelock takes it with flock on POSIX and
    msvcrt on Windows, and the system lets go of it when a worker dies holding it."""

    def __init__(self, path: Path) -> None:
        self._lock = filelock.FileLock(path)

    def acquire(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()


class _PostgresLock(StudyLock):
    def __init__(self, engine, key: int) -> None:
        self.engine = engine
        self.key = key
        self._connection = None

    def acquire(self) -> None:
        from sqlalchemy import text

        # Session-level: held by this connection until unlocked, or until the connection drops
        # (a killed worker cannot keep it).
        self._connection = self.engine.connect()
        self._connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.key})

    def release(self) -> None:
        if self._connection is not None:
            from sqlalchemy import text

            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"),
                                         {"key": self.key})
            finally:
                self._connection.close()
                self._connection = None


def _key(study_name: str) -> int:
    digest = hashlib.sha256(f"pipeline-study:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)  # a bigint advisory-lock key


def study_lock(storage: optuna.storages.BaseStorage, storage_url: str,
               study_name: str) -> StudyLock:
    if isinstance(storage, optuna.storages.RDBStorage):
        engine = storage.engine
        if engine.dialect.name == "postgresql":
            return _PostgresLock(engine, _key(study_name))
        if engine.dialect.name == "sqlite" and engine.url.database:
            return _FileLock(Path(f"{engine.url.database}.{study_name}.lock"))
        return StudyLock()  # other databases: no cross-process guard
    if isinstance(storage, optuna.storages.JournalStorage):
        return _FileLock(Path(f"{local_file(storage_url)}.{study_name}.lock"))
    return StudyLock()
