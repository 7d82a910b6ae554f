"""A lock per study, so workers that share a study never start more trials than its total.

A worker takes the lock, counts the study's trials, and if there is room creates its next trial;
it lets go as soon as the trial exists (search.claim_next_trial, a `with` block). On PostgreSQL
the lock is a session advisory lock, so workers on different machines serialise too; on a file
storage (SQLite, Optuna's journal) it is an flock on a file beside it, which covers the
processes of one machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import optuna


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
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


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
        from pipeline.study.storage import journal_path

        return _FileLock(Path(f"{journal_path(storage_url)}.{study_name}.lock"))
    return StudyLock()
