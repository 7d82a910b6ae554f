"""Infrastructure faults: errors that say the tracking server, the study's storage or the disk
failed, and nothing about a trial's hyperparameters.

A trial that meets one is not one of the study's results: it runs again (core.outcomes), and the
search waits for the store to come back rather than burning trial after trial on it (search.
outage). Light: exceptions are recognised by the modules that raise them, if those are loaded.
"""

from __future__ import annotations

import errno
import sys
from dataclasses import dataclass

# How long a search waits out an unreachable store before it stops (resumable): a server's
# restart or a team's maintenance window, not a lost night.
DEFAULT_OUTAGE_TIMEOUT = 1800.0

TRACKING = "tracking"  # the MLflow tracking server
STORAGE = "storage"  # the Optuna study's database
DISK = "disk"  # a full disk where runs, models or reports are written

@dataclass(frozen=True)
class Fault:
    """What failed (TRACKING, STORAGE or DISK) and the error that said so."""

    kind: str
    error: BaseException


def _chain(error: BaseException):
    """The error and those it was raised from or during, innermost last."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _module_has(name: str, *classes: str) -> tuple[type, ...]:
    """The named exception classes of a module, if it is loaded (nothing is imported here)."""
    module = sys.modules.get(name)
    return tuple(getattr(module, c) for c in classes if module is not None and hasattr(module, c))


def _tracking_fault(error: BaseException) -> bool:
    if isinstance(error, _module_has("requests.exceptions", "ConnectionError", "Timeout",
                                     "ChunkedEncodingError")):
        return True
    if isinstance(error, _module_has("mlflow.exceptions", "MlflowException")):
        # What MLflow's REST client raises once its own retries gave up, or on a 5xx answer.
        text = str(error)
        return text.startswith("API request to") and (
            "failed with exception" in text or "failed with timeout exception" in text
            or "failed with error code 5" in text)
    return False


def _storage_fault(error: BaseException) -> bool:
    if isinstance(error, _module_has("optuna.exceptions", "StorageInternalError")):
        return True
    if isinstance(error, _module_has("sqlalchemy.exc", "OperationalError", "InterfaceError",
                                     "DisconnectionError")):
        # SQLite's own complaints (a locked or full file) are not a lost connection.
        return "database is locked" not in str(error) and not _disk_full(error)
    return False


def _disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "database or disk is full" in str(error) or "No space left on device" in str(error)


def fault_of(error: BaseException | None) -> Fault | None:
    """The infrastructure fault behind ``error``, looking through what it was raised from;
    None for anything else (a bug, bad hyperparameters, Ctrl-C)."""
    if error is None or isinstance(error, KeyboardInterrupt):
        return None
    for cause in _chain(error):
        if _disk_full(cause):
            return Fault(DISK, error)
        if _tracking_fault(cause):
            return Fault(TRACKING, error)
        if _storage_fault(cause):
            return Fault(STORAGE, error)
    return None
