"""Whether the stores a command reads exist: commands that only read (report, models, predict,
promote's look-up, reconcile) must not leave an empty optuna.db or mlflow.db behind when tried in
the wrong folder. SQLite (and Optuna's journal) create their file on first touch; servers and
databases exist or fail on their own.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import UsageError


class StoreMissing(UsageError):
    """A store that a reading command was pointed at does not exist."""


def local_file(url: str) -> Path | None:
    """The file behind a sqlite:/// or journal URL (or a bare *.journal path); None otherwise."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        return Path(path) if path and path != ":memory:" else None
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:").removeprefix("//"))
    if url.endswith(".journal") and "://" not in url:
        return Path(url)
    return None


def require_study_store(url: str, shown: str) -> None:
    """Refuse a study storage file that does not exist (``shown``: the URL without password)."""
    path = local_file(url)
    if path is not None and not path.exists():
        raise StoreMissing(f"no study in {shown}: {path} does not exist here; run `pipeline "
                           "search` first, or point --storage (PIPELINE_STORAGE) at the study")


def tracking_store_exists(uri: str) -> bool:
    """False only for an MLflow SQLite store (``uri``) whose file is not there."""
    path = local_file(uri)
    return path is None or path.exists()


def require_tracking_store(uri: str) -> None:
    """Refuse an MLflow SQLite store that does not exist (MLflow would create an empty one)."""
    if not tracking_store_exists(uri):
        raise StoreMissing(f"no MLflow store here: {local_file(uri)} does not exist; run "
                           "`pipeline search` or `pipeline train` in this folder first, or set "
                           "MLFLOW_TRACKING_URI")
