"""A search worker, whatever runs it: a process of this machine started by `pipeline search
--workers K` (``python -m pipeline.scale.worker``, the request on its standard input) or a Ray
actor (the request as its argument). Both get the driver's SearchRequest as the same JSON text."""

from __future__ import annotations

import dataclasses
import faulthandler
import signal
import sys
from collections.abc import Callable

from pipeline.core import env
from pipeline.core.errors import PipelineError
from pipeline.search.loop import run_search
from pipeline.search.request import SearchRequest


def request_for_node(text: str) -> SearchRequest:
    """The request a worker runs: the driver's, with the stores as this machine names them when
    it reaches them under other names (PIPELINE_NODE_STORAGE, PIPELINE_NODE_TRACKING_URI: a Ray
    node inside docker-compose reaches postgres:5432 and mlflow:5000, not the driver's
    127.0.0.1)."""
    req = SearchRequest.from_json(text)
    return dataclasses.replace(
        req, storage_url=env.NODE_STORAGE.get(req.storage_url),
        tracking_uri=env.NODE_TRACKING_URI.get(req.tracking_uri))


def run_worker(text: str, should_stop: Callable[[], bool] | None = None) -> str:
    """Run the search of ``text`` (a SearchRequest as JSON) here; returns why it stopped.
    ``kill -USR1`` prints every thread's stack to the worker's stderr (a Ray worker's log)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return run_search(request_for_node(text), should_stop=should_stop).stopped_by


def main() -> None:
    """``python -m pipeline.scale.worker``: the request on standard input; a user's error is one
    line and its exit status, as from the `pipeline` command."""
    env.configure_process()
    try:
        run_worker(sys.stdin.read())
    except PipelineError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
