"""Every environment variable `pipeline` reads, and every default it sets for the libraries it
runs, in one place: the CLI's options name their variable from here (click's ``envvar``), Ray
workers get the forwarded ones, and the documentation lists them from here.

MLflow's own variables (``MLFLOW_TRACKING_URI`` above all) keep MLflow's names and meaning.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    """One ``PIPELINE_*`` variable."""

    name: str
    help: str
    forwarded: bool = False  # Ray workers get the driver's value (they run elsewhere)

    def get(self, default: str | None = None) -> str | None:
        """Its value; an empty one counts as unset."""
        return os.environ.get(self.name) or default


DATA_DIR = Variable("PIPELINE_DATA_DIR", "Folder of the MNIST cache (default: "
                    "$XDG_CACHE_HOME/pipeline, else ~/.cache/pipeline).", forwarded=True)
STORAGE = Variable("PIPELINE_STORAGE", "Optuna storage URL of the studies (default: "
                   "sqlite:///optuna.db in the working folder).")
WORKERS = Variable("PIPELINE_WORKERS", "Trials that run at once in `pipeline search` "
                   "(--workers).")
RAY_ADDRESS = Variable("PIPELINE_RAY_ADDRESS", "The Ray cluster `pipeline search --ray` "
                       "runs its workers on (host:6379 or ray://host:10001).")
NODE_STORAGE = Variable("PIPELINE_NODE_STORAGE", "Set on a Ray node: the study storage URL "
                        "as that node reaches it (postgres:5432 inside docker-compose).")
NODE_TRACKING_URI = Variable("PIPELINE_NODE_TRACKING_URI", "Set on a Ray node: the MLflow "
                             "tracking server as that node reaches it.")
WORKER_HOST = Variable("PIPELINE_WORKER_HOST", "Set by `pipeline` in each Ray worker: the "
                       "host its worker id names (its Ray node), so that only processes on it "
                       "judge it by its process id.")

VARIABLES = (DATA_DIR, STORAGE, WORKERS, RAY_ADDRESS, NODE_STORAGE, NODE_TRACKING_URI,
             WORKER_HOST)


@dataclass(frozen=True)
class Default:
    """A library setting `pipeline` changes unless the user set it."""

    name: str
    value: str
    why: str


LIBRARY_DEFAULTS = (
    Default("MLFLOW_LOGGING_LEVEL", "WARNING",
            "MLflow announces database set-up at INFO when it is imported; the commands say "
            "what matters."),
    Default("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true",
            "Against a tracking server MLflow prints two links for every run it closes, one "
            "per trial, at the cost of a request each."),
    Default("MLFLOW_DEFAULT_PREDICTION_DEVICE", "cpu",
            "Models are exported with their weights on the CPU, which lets them load anywhere; "
            "MLflow would move them to a GPU where there is one, and fail."),
    Default("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false",
            "The files `pipeline` downloads are small (pictures for the report, a model): "
            "progress bars would only litter the output."),
    Default("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2",
            "A search rides out a tracking-server outage itself; MLflow's client gives up "
            "after a few seconds instead of five minutes."),
    Default("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1",
            "With the two retries above: about three seconds before a call gives up."),
    Default("MLFLOW_HTTP_REQUEST_TIMEOUT", "30",
            "A server that accepts a connection and never answers is noticed in 30 s, not "
            "120 s."),
    Default("GRADIO_ANALYTICS_ENABLED", "False",
            "The demo serves on loopback: no usage statistics sent, nor waited for."),
)
# The MLflow UI server `pipeline ui` starts: one person browsing needs none of MLflow's GenAI job
# runner (7 more processes importing MLflow).
UI_SERVER_DEFAULTS = (
    Default("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false",
            "`pipeline ui` (and the tests' tracking server) run without MLflow's job runner."),
)


def apply_defaults() -> None:
    """Set the library defaults in this process (and so in what it starts); the user's win."""
    for default in LIBRARY_DEFAULTS:
        os.environ.setdefault(default.name, default.value)


def configure_process() -> None:
    """What every `pipeline` process (a command, a worker) starts with: the library defaults,
    and quiet where a library's warning says nothing to the user."""
    apply_defaults()
    # Loading an exported program warns that its weights' buffer is read-only; it is never
    # written, and the warning filled a GPU search's log once per trial.
    warnings.filterwarnings("ignore", message="The given buffer is not writable")


def forwarded() -> dict[str, str]:
    """What a Ray worker is started with: the forwarded variables and library defaults as this
    process has them."""
    names = [v.name for v in VARIABLES if v.forwarded] + [d.name for d in LIBRARY_DEFAULTS]
    return {name: os.environ[name] for name in names if os.environ.get(name)}
