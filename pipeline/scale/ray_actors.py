"""`pipeline search --ray [ADDRESS]`: the search's workers as Ray actors on a Ray cluster.

The command is the driver: it connects to the cluster (ADDRESS, else PIPELINE_RAY_ADDRESS, else a
Ray instance of its own on this machine), opens the study and its parent run, and places K
workers as actors, each by the resources it asks for (CPUs, a fraction of a GPU). Every actor
runs the search's own worker loop (search.run_search) against the shared study and tracking
server. Ray restarts an actor whose node died on another node and runs its loop again
(max_restarts, max_task_retries); the study's heartbeats fail the trial the dead actor held, and
Optuna's retry callback queues it again with the same parameters. Placement, restarts and the
dashboard are Ray's: this module starts the actors and watches the study.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import replace

from pipeline.core import env
from pipeline.core.errors import UsageError, first_line
from pipeline.core.stores import local_file
from pipeline.scale.coordinator import WorkerGroup, coordinate
from pipeline.scale.processes import WORKERS_PER_GPU
from pipeline.search.loop import SearchOutcome, space_for
from pipeline.search.request import SearchRequest
from pipeline.search.session import SearchInterrupted, open_search
from pipeline.study.space import SearchSpace
from pipeline.study.storage import is_journal, redact

LOCAL = "local"  # `--ray` with no address: a Ray instance of this command's own
# How often Ray restarts a worker whose process or node died. Its loop is submitted again until
# the restarted worker takes it (max_task_retries=-1): while a lost node's actors move, calls
# fail as "temporarily unavailable" many times over, so a small retry count would give up first.
ACTOR_RESTARTS = 3
# How long the cluster may take to place the workers before the search gives up on it.
PLACEMENT_SECONDS = 180


class RayError(UsageError):
    """--ray cannot work as asked: Ray is missing, the cluster is unreachable, or a store is one
    that the cluster's nodes cannot share."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayError('--ray needs Ray, which is not installed here: pip install -e ".[ray]"'
                       ) from None
    return ray


def check_storages(storage_url: str, tracking_uri: str, address: str) -> None:
    """Only stores every node can reach work with Ray: refuse the rest before anything runs."""
    if not is_journal(storage_url) and storage_url.startswith("sqlite"):
        raise RayError(f"--ray needs a study storage every Ray node can reach, and "
                       f"{redact(storage_url)} is a SQLite file of this machine: use "
                       "--storage postgresql://user@host/db (or journal:///path/optuna.journal on "
                       "a file system every node shares)")
    if address != LOCAL and local_file(tracking_uri) is not None:
        raise RayError(f"--ray {address} needs an MLflow tracking server every node reaches, "
                       f"and {tracking_uri} is a file of this machine: set MLFLOW_TRACKING_URI="
                       "http://host:5000 (`docker-compose up mlflow` starts one)")


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in one line, at once, when nothing answers at ``address`` (Ray itself would keep
    retrying for a long while)."""
    if address in (LOCAL, "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayError(f"Ray address {address!r} is not host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise RayError(f"the Ray cluster at {address} is unreachable ({e.strerror or e}); start "
                       "it (`ray start --head`, `docker-compose up ray-head`) or fix --ray / "
                       f"{env.RAY_ADDRESS.name}") from None


def _actor_class(ray):
    """The worker actor, defined once Ray is imported (it is an optional dependency)."""

    @ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=-1)
    class SearchWorker:
        def where(self) -> dict:
            return {"node": ray.get_runtime_context().get_node_id(),
                    "host": socket.gethostname(), "pid": os.getpid()}

        def run(self, request: str) -> str:
            """The search worker of scale.worker, on ``request`` (a SearchRequest as JSON)."""
            from pipeline.scale.worker import run_worker

            context = ray.get_runtime_context()
            # This node stands for this worker's host: only processes on it judge the worker by
            # its process id, every other by its heartbeats (study.liveness).
            node = context.get_node_id()[:12]
            os.environ[env.WORKER_HOST.name] = f"{socket.gethostname()}/ray-{node}"
            try:
                return run_worker(request, should_stop=context.is_canceled)
            except SearchInterrupted:
                if context.is_canceled():
                    return "interrupted"  # the driver asked: its trial was queued again
                raise

    return SearchWorker


class RayWorkers(WorkerGroup):
    """The search's actors and the run of their worker loops."""

    def __init__(self, ray, actors: list, req: SearchRequest) -> None:
        self.ray = ray
        self.actors = actors
        # Every actor runs the same request, quiet: the driver draws progress and reports.
        request = replace(req, quiet=True).to_json()
        self.pending = [actor.run.remote(request) for actor in actors]
        self.errors: list[str] = []
        self.stopping = False

    def running(self) -> bool:
        return bool(self.pending)

    def wait(self, seconds: float) -> None:
        done, self.pending = self.ray.wait(self.pending, num_returns=1, timeout=seconds)
        self._collect(done)

    def _collect(self, done: list) -> None:
        for ref in done:
            try:
                self.ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a worker's error, or a cancelled loop
                if not self.stopping:
                    cause = getattr(e, "cause", None) or e
                    self.errors.append(f"a Ray worker failed: {type(cause).__name__}: "
                                       f"{first_line(cause)}")

    def stop(self, signum: int, grace: float = 60.0) -> None:
        """Cancel the loops still running (each stops at its next epoch, failing and queueing
        its trial again), wait for them, then end the actors."""
        self.stopping = True
        for ref in self.pending:
            self.ray.cancel(ref)
        if self.pending:
            done, self.pending = self.ray.wait(self.pending, num_returns=len(self.pending),
                                               timeout=grace)
            self._collect(done)
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)

    def failures(self) -> list[str]:
        return self.errors


def _worker_env() -> dict[str, str]:
    # The stores travel in the request; these are the process settings every worker runs with.
    return {**env.forwarded(), "PYTHONUNBUFFERED": "1"}


def _worker_count(resources: dict, cpus: float, gpus: float) -> int:
    """Workers that fit the cluster: by its GPUs when they ask for GPUs, else by its CPUs."""
    if gpus:
        return max(1, int(resources.get("GPU", 0) / gpus))
    return max(1, int(resources.get("CPU", 1) / cpus))


def _placement_line(places: list[dict], cpus: float, gpus: float) -> str:
    per_node: dict[str, int] = {}
    for place in places:
        per_node[place["node"][:6]] = per_node.get(place["node"][:6], 0) + 1
    nodes = ", ".join(f"node {node} ({count})" for node, count in per_node.items())
    each = f"{cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus else "") + " each"
    return f"{len(places)} trials at a time, {len(places)} Ray workers on {nodes}; {each}"


def run_on_ray(asked: SearchSpace, *, explicit_space: bool,
               make_request: Callable[[SearchSpace], SearchRequest], address: str,
               workers: int | None, cpus_per_worker: float, gpus_per_worker: float | None,
               echo=print) -> SearchOutcome:
    """Drive a search whose workers are Ray actors. ``workers``/``gpus_per_worker`` None: what
    the cluster fits (on GPUs, WORKERS_PER_GPU per GPU). The space falls back to its CPU space,
    unless named, when the cluster has no GPU; ``make_request`` makes the search of a space."""
    ray = import_ray()
    probe = make_request(asked)
    check_storages(probe.storage_url, probe.tracking_uri, address)
    check_reachable(address)
    # Ray's own notices (a local instance's token set-up, connecting) are not the user's business.
    logging.getLogger("ray").setLevel(logging.ERROR)
    # "local" always starts a new instance (no address would join one recorded on this machine).
    ray.init(address=address, logging_level="ERROR",
             log_to_driver=False, runtime_env={"env_vars": _worker_env()})
    try:
        resources = ray.cluster_resources()
        has_gpu = bool(resources.get("GPU"))
        space = space_for(asked, explicit=explicit_space, has_gpu=has_gpu, echo=echo)
        gpus = gpus_per_worker if gpus_per_worker is not None else (
            1 / WORKERS_PER_GPU if has_gpu else 0.0)
        count = workers or _worker_count(resources, cpus_per_worker, gpus)
        # Placed before the study is opened: a cluster that cannot hold them writes nothing.
        actor = _actor_class(ray).options(num_cpus=cpus_per_worker, num_gpus=gpus,
                                          scheduling_strategy="SPREAD")
        actors = [actor.remote() for _ in range(count)]
        try:
            places = ray.get([a.where.remote() for a in actors], timeout=PLACEMENT_SECONDS)
        except ray.exceptions.GetTimeoutError:
            raise RayError(f"the Ray cluster could not place {count} workers of "
                           f"{cpus_per_worker:g} CPU and {gpus:g} GPU each in "
                           f"{PLACEMENT_SECONDS}s (it has {resources.get('CPU', 0):g} CPU, "
                           f"{resources.get('GPU', 0):g} GPU): ask for fewer --workers or "
                           "smaller --cpus-per-worker / --gpus-per-worker") from None
        req = make_request(space)
        req = replace(req, storage_url=_absolute_journal(req.storage_url), workers=count,
                      device="cuda" if gpus else "cpu", threads=max(1, int(cpus_per_worker)))
        session = open_search(req, echo=echo)
        echo(f"space {req.space.path} ({req.space.fingerprint}); "
             f"{_placement_line(places, cpus_per_worker, gpus)}")
        return coordinate(session, RayWorkers(ray, actors, req), echo=echo)
    finally:
        ray.shutdown()


def _absolute_journal(url: str) -> str:
    """The workers run elsewhere: a journal's relative path would mean another file there."""
    if is_journal(url):
        return f"journal:///{os.path.abspath(local_file(url))}"
    return url
