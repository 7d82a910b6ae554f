"""Waiting out an unreachable store: the MLflow tracking server, or the study's storage.

While a store is down the search starts no trial and burns nothing: it says so once, retries with
growing pauses, says when the store is back, and goes on. Past ``--outage-timeout`` it stops with
one line and exit status 75 (try again later); the next search resumes where it stopped.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.faults import DEFAULT_OUTAGE_TIMEOUT, STORAGE, TRACKING, fault_of
from pipeline.study import heartbeats

FIRST_PAUSE, LONGEST_PAUSE = 2.0, 30.0
EX_TEMPFAIL = 75  # sysexits.h: a temporary failure; trying again later may succeed
# A store that answers its probe yet fails a request (a server whose artifact disk is full resets
# the upload; a 500 from a bug) is not down: waiting for it is no use. A few tries within this
# window, then the error stands, and trials that keep meeting it stop the search.
ANSWERING_FAILURES, ANSWERING_WINDOW = 3, 120.0
FAILING_TRIALS_IN_A_ROW = 3


class OutageTooLong(PipelineError):
    """A store stayed unreachable past --outage-timeout; the search stopped and can resume."""

    exit_code = EX_TEMPFAIL


class StoreFailing(PipelineError):
    """Trials in a row met a store's errors while it answered; the search stopped, resumable."""

    exit_code = EX_TEMPFAIL


class DiskFull(PipelineError):
    """No space left where the search writes; it stopped and can resume once there is."""

    exit_code = EX_TEMPFAIL


# What a trial writes at the least (a model, two pictures): a folder without this much room
# fails the next trial too.
ROOM_BYTES = 1 << 20


def stop_if_failing(store_names: list[str], in_a_row: int, why: str) -> None:
    """After a trial a store's error ended: stop (StoreFailing, one line) once
    FAILING_TRIALS_IN_A_ROW trials in a row ended so though the stores answer."""
    if in_a_row >= FAILING_TRIALS_IN_A_ROW:
        raise StoreFailing(f"{in_a_row} trials in a row failed on {' or '.join(store_names)}, "
                           f"which answers but refuses their requests ({why}); the search "
                           "stopped: look at the server (its log, its disk), then run the same "
                           "command, and it resumes")


def require_room(folders: list[Path], tries: int = 1) -> None:
    """After a trial the disk failed: stop (DiskFull, one line) when a folder the search writes
    to still has no room for a trial's files, or when ``tries`` trials in a row failed on it
    anyway (the disk that filled is not one these folders show); go on when there is room."""
    if tries >= 2:
        raise DiskFull(f"no space left on device: {tries} trials in a row could not write their "
                       "run, model or pictures; the search stopped: free some space and run "
                       "the same command, and it resumes")
    for folder in folders:
        try:
            with tempfile.TemporaryFile(dir=folder) as probe:
                probe.write(b"\0" * ROOM_BYTES)
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as e:
            if fault_of(e) is None:
                raise
            raise DiskFull(f"no space left on device in {folder} (a trial could not write its "
                           "run, model or pictures); the search stopped: free some space and "
                           "run the same command, and it resumes") from None


@dataclass(frozen=True)
class Store:
    kind: str  # core.faults.TRACKING or STORAGE
    name: str  # as the user knows it, without a password
    probe: Callable[[], None]  # raises while the store is unreachable


def tracking_store(uri: str) -> Store | None:
    """The MLflow tracking server at ``uri``; None for a store in local files (nothing to
    reach)."""
    if urlparse(uri).scheme not in ("http", "https"):
        return None

    def probe() -> None:
        import requests

        requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()

    return Store(TRACKING, f"MLflow tracking server {uri}", probe)


def storage_store(url: str, shown: str) -> Store | None:
    """The study's storage when it is a database server (``shown``: its URL without password);
    None for files of this machine (SQLite, a journal), which do not go away."""
    if url.startswith("sqlite") or "://" not in url or url.startswith("journal"):
        return None
    engine = None

    def probe() -> None:
        nonlocal engine
        import sqlalchemy

        if engine is None:  # one engine, without a pool: each probe is a fresh connection
            engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    return Store(STORAGE, f"study storage {shown}", probe)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _request_of(error: BaseException) -> str:
    """What failed: the URL of an MLflow API request, else the error's first line."""
    line = first_line(error)
    found = re.match(r"API request to (\S+) failed", line)
    return found.group(1) if found else line[:200]


class Waiter:
    """Waits for the stores of one search, each outage said once and its end said once."""

    def __init__(self, stores: list[Store], *, timeout: float = DEFAULT_OUTAGE_TIMEOUT,
                 echo=print) -> None:
        self.stores = {store.kind: store for store in stores}
        self.timeout = timeout
        self.echo = echo
        self._answering_failures: dict[str, list[float]] = {}
        self.refusing: str | None = None  # the store that last answered but refused a request

    def ride_out(self, error: BaseException) -> bool:
        """For an error a store's outage explains: wait until that store answers again and
        return True (the caller tries again). False for any other error."""
        fault = fault_of(error)
        store = self.stores.get(fault.kind) if fault is not None else None
        if store is None:
            return False
        if store.kind == STORAGE:
            heartbeats.storage_failed()
        try:
            store.probe()
        except Exception:  # noqa: BLE001 - down: wait until it answers
            self.wait_for(store, first_line(error))
            return True
        if self._try_again_while_answering(_request_of(error)):
            return True
        self.refusing = store.name
        return False

    def _try_again_while_answering(self, request: str) -> bool:
        """The store answers, yet the call failed: try again after a pause, unless the same
        request failed so ANSWERING_FAILURES times in the last ANSWERING_WINDOW seconds."""
        now = time.monotonic()
        recent = [t for t in self._answering_failures.get(request, [])
                  if now - t < ANSWERING_WINDOW] + [now]
        self._answering_failures[request] = recent
        if len(recent) > ANSWERING_FAILURES:
            return False
        time.sleep(FIRST_PAUSE * len(recent))
        return True

    def check(self, kind: str) -> None:
        """Before a trial starts: wait while the store of ``kind`` does not answer."""
        store = self.stores.get(kind)
        if store is None:
            return
        try:
            store.probe()
        except Exception as e:  # noqa: BLE001 - every client reports a lost server its own way
            self.wait_for(store, first_line(e))

    def wait_for(self, store: Store, why: str) -> None:
        """Retry ``store`` until it answers, pausing longer each time; past the timeout raise
        OutageTooLong. Ctrl-C stops the wait as it stops the search."""
        since, pause = time.monotonic(), FIRST_PAUSE
        self.echo(f"{store.name} unreachable since {datetime.now():%H:%M:%S} ({why}); waiting "
                  f"(retry every {FIRST_PAUSE:g} to {LONGEST_PAUSE:g} s); Ctrl-C stops, the "
                  "next search resumes")
        while True:
            if time.monotonic() - since > self.timeout:
                raise OutageTooLong(
                    f"{store.name} unreachable for {_clock(time.monotonic() - since)} "
                    f"(--outage-timeout {self.timeout:g}s); the search stopped: run the same "
                    "command once it is back, and it resumes")
            time.sleep(min(pause, max(0.0, self.timeout - (time.monotonic() - since)) + 0.1))
            pause = min(pause * 2, LONGEST_PAUSE)
            try:
                store.probe()
            except Exception:  # noqa: BLE001 - still down
                if store.kind == STORAGE:
                    heartbeats.storage_failed()
                continue
            self.echo(f"{store.name} is back after {_clock(time.monotonic() - since)}; "
                      "going on")
            return

    def retrying(self, call: Callable, *args, **kwargs):
        """``call(*args, **kwargs)``, riding out any outage of this search's stores."""
        while True:
            try:
                return call(*args, **kwargs)
            except Exception as e:
                if not self.ride_out(e):
                    raise
