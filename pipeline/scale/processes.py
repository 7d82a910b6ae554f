"""`pipeline search --workers K`: K worker processes on one study, watched from one place.

The coordinating process opens the study (and its MLflow experiment and parent run) and fetches
MNIST once, so workers never race to create them; then it starts K worker processes (scale.worker,
each given the search's request), each with its own device: one GPU each while GPUs last, then
several per GPU, and on a CPU the cores split between them. It draws one progress view from the
study itself, forwards Ctrl-C and SIGTERM to the workers, and writes the report when they are done.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace

import torch

from pipeline.data.sources import ensure_mnist
from pipeline.scale.coordinator import WorkerGroup, coordinate
from pipeline.search.loop import SearchOutcome
from pipeline.search.request import SearchRequest
from pipeline.search.session import open_search

# Trials that run at once on one GPU when the user does not say (--workers): small MNIST
# networks leave a GPU mostly idle, so several processes share it. On an H100 the 50-trial
# default search ran 4 at a time in 2 min 52 s; docs/benchmarks.md says what was and was not
# measured.
WORKERS_PER_GPU = 4


@dataclass(frozen=True)
class Placement:
    device: str
    threads: int | None


def gpu_count(device: str) -> int:
    """GPUs the workers may use: all CUDA devices for auto/cuda, none for anything else."""
    return torch.cuda.device_count() if device in ("auto", "cuda") else 0


def default_worker_count(device: str, gpus: int | None = None) -> int:
    """How many trials run at once when --workers is not given: WORKERS_PER_GPU per GPU, else
    one (on a CPU the trainer already uses every core)."""
    gpus = gpu_count(device) if gpus is None else gpus
    return WORKERS_PER_GPU * gpus if gpus else 1


def place_workers(count: int, device: str, *, gpus: int | None = None,
                  cores: int | None = None) -> list[Placement]:
    """Where each worker trains, and with how many CPU threads.

    ``auto`` with GPUs: worker i gets cuda:(i mod GPUs), so K > GPUs puts several small-model
    workers on each GPU. The cores are split between the workers either way, so their CPU work
    (the CPU's training; a GPU worker's model export and diagnostics) does not oversubscribe.
    """
    gpus = gpu_count(device) if gpus is None else gpus
    threads = max(1, (cores or os.cpu_count() or 1) // count)
    if gpus:
        return [Placement(f"cuda:{i % gpus}", threads) for i in range(count)]
    if device.startswith("cuda") or device == "mps":
        return [Placement(device, threads) for _ in range(count)]
    return [Placement("cpu", threads) for _ in range(count)]


def worker_requests(req: SearchRequest, placements: list[Placement]) -> list[str]:
    """The request each worker process gets: the search's own, on its device and threads, quiet
    (the coordinator draws the progress and writes the report)."""
    return [replace(req, device=place.device, threads=place.threads, quiet=True).to_json()
            for place in placements]


class WorkerProcesses(WorkerGroup):
    """Worker processes of this machine, each ``python -m pipeline.scale.worker`` reading its
    request from its standard input (a storage password never shows in a process list)."""

    COMMAND = (sys.executable, "-m", "pipeline.scale.worker")

    def __init__(self, requests: list[str]) -> None:
        self.processes = []
        for text in requests:
            process = subprocess.Popen(self.COMMAND, stdin=subprocess.PIPE, text=True)
            process.stdin.write(text)
            process.stdin.close()
            self.processes.append(process)

    def running(self) -> bool:
        return any(p.poll() is None for p in self.processes)

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def stop(self, signum: int, grace: float = 60.0) -> None:
        """Signal the workers still running (they fail and requeue their trials), then wait;
        one that does not stop within ``grace`` seconds is killed."""
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signum)
        deadline = time.monotonic() + grace
        for p in self.processes:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def failures(self) -> list[str]:
        return [f"worker {i} exited {p.returncode}" for i, p in enumerate(self.processes)
                if p.returncode != 0]


def run_workers(req: SearchRequest, *, echo=print) -> SearchOutcome:
    session = open_search(req, echo=echo)
    ensure_mnist(req.data_dir, log=echo)  # once here, so workers never race to fetch it
    placements = place_workers(req.workers, req.device)
    where = ", ".join(p.device + (f" ({p.threads} threads)" if p.threads else "")
                      for p in placements)
    echo(f"space {req.space.path} ({req.space.fingerprint}); {req.workers} trials at a time, "
         f"{req.workers} worker processes: {where}")
    workers = WorkerProcesses(worker_requests(req, placements))
    return coordinate(session, workers, echo=echo)
