"""Faults on cue: what a search loses when its stores or its processes fail, measured.

A real MLflow tracking server (SQLite behind it, artifacts served) and a real PostgreSQL study,
each behind a TCP proxy that refuses and resets connections on cue; the same 8-trial search
(3 epochs on 6,000 images) run once without a fault, then once per fault, each injected when a
trial is in its second epoch:

    tracking-30s         the tracking server away for 30 s
    tracking-5min        the tracking server away for 5 minutes
    postgres-restart     PostgreSQL stopped for 20 s and started again (two workers)
    worker-killed        one of two worker processes SIGKILLed
    coordinator-sigterm  the search's own process SIGTERMed, then the same command resumed
    disk-full            the server's artifact disk (a small tmpfs) full; space freed, resumed

For each: trials asked and finished, trials lost (asked, never finished), duplicated (the same
parameters run twice to completion), MLflow runs left RUNNING, whether the search completed or
stopped resumably, and the wall time against the run without a fault (the outage's own length
included: a search cannot train past a server that is down). The test harness's proxy and
throwaway PostgreSQL (tests/) run it.

    python bench/faults.py                        # every fault, about 17 minutes on 2 cores
    python bench/faults.py --faults tracking-30s,worker-killed
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test harness's proxy and PostgreSQL

SPACE = """\
study:
  sampler: {seed: 0, n_startup_trials: 4}
  pruner: {n_startup_trials: 3, n_warmup_steps: 0}
data: {val_size: 1000, train_subset: 6000}
fixed: {epochs: 3, depth: 2, width: 16, fc_width: 64, batch_size: 128}
params:
  lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
  dropout: {type: float, low: 0.0, high: 0.3}
"""
TRIALS = 8
MID_TRAINING = ("SELECT COUNT(DISTINCT t.trial_id) FROM trials t JOIN trial_intermediate_values "
                "v ON v.trial_id = t.trial_id WHERE t.state = 'RUNNING'")
FAULTS = ("none", "tracking-30s", "tracking-5min", "postgres-restart", "worker-killed",
          "coordinator-sigterm", "disk-full")


@dataclass
class Row:
    fault: str
    asked: int
    finished: int
    lost: int
    duplicated: int
    running_runs: int
    how: str
    wall: float


class Stack:
    """The stores of the bench: PostgreSQL and an MLflow server, each behind a proxy."""

    def __init__(self, folder: Path, artifacts: Path) -> None:
        from helpers import free_port, start_server, wait_for_http
        from postgres import PostgresServer
        from proxy import FlakyProxy

        from pipeline.track.mlflow_ui import ui_env

        self.postgres = PostgresServer()
        self.pg_proxy = FlakyProxy(self.postgres.port)
        port = free_port()
        self.mlflow = start_server(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{folder}/mlflow.db", "--serve-artifacts", "--artifacts-destination",
             str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=ui_env(), cwd=folder, name="bench-mlflow")
        wait_for_http(f"http://127.0.0.1:{port}/health", server=self.mlflow, timeout=300)
        self.mlflow_proxy = FlakyProxy(port)
        self.tracking = f"http://127.0.0.1:{self.mlflow_proxy.port}"

    def storage(self, name: str) -> tuple[str, str]:
        """A new database: its URL, and the URL through the proxy."""
        url = self.postgres.database(name)
        return url, url.replace(f":{self.postgres.port}/", f":{self.pg_proxy.port}/")

    def close(self) -> None:
        self.mlflow_proxy.down()
        self.mlflow.stop(timeout=5)  # a response the proxy could not pass on holds a graceful stop
        self.postgres.stop()


def mid_training(url: str, trials: int = 1) -> bool:
    import psycopg

    try:
        with contextlib.closing(psycopg.connect(url)) as connection:
            return connection.execute(MID_TRAINING).fetchone()[0] >= trials
    except Exception:  # noqa: BLE001 - no tables yet
        return False


def search(folder: Path, study: str, storage: str, tracking: str, *extra: str):
    command = [sys.executable, "-m", "pipeline", "search", "--space", "bench.yaml", "--study",
               study, "--trials", str(TRIALS), "--storage", storage, "--no-report",
               "--heartbeat-interval", "2", "--grace-period", "6", *extra]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PYTHONUNBUFFERED": "1"}
    log = open(folder / f"{study}.log", "a")
    return subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=log,
                            start_new_session=True)


def inject(fault: str, stack: Stack, url: str, process: subprocess.Popen) -> None:
    """Wait for a trial in its second epoch, then do the fault."""
    while not mid_training(url, 2 if fault in ("postgres-restart", "worker-killed") else 1):
        if process.poll() is not None:
            return
        time.sleep(0.5)
    if fault.startswith("tracking-"):
        stack.mlflow_proxy.down()
        time.sleep(30 if fault == "tracking-30s" else 300)
        stack.mlflow_proxy.up()
    elif fault == "postgres-restart":
        stack.postgres.restart(20)
    elif fault == "worker-killed":
        workers = [int(p.name) for p in Path("/proc").glob("[0-9]*")
                   if b"pipeline.scale.worker" in _cmdline(p)]
        os.kill(workers[0], signal.SIGKILL)
    elif fault == "coordinator-sigterm":
        os.killpg(process.pid, signal.SIGTERM)


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def run(fault: str, stack: Stack, folder: Path) -> Row:
    url, storage = stack.storage(fault.replace("-", "_"))
    tracking = stack.tracking
    extra = ("--workers", "2") if fault in ("postgres-restart", "worker-killed") else ()
    start = time.monotonic()
    process = search(folder, fault, storage, tracking, *extra)
    injector = threading.Thread(target=inject, args=(fault, stack, url, process))
    if fault != "none":
        injector.start()
    codes = [process.wait()]
    if injector.is_alive():
        injector.join()
    if fault == "disk-full":
        stack.free_disk()
    if codes[-1] != 0:  # stopped: the same command resumes it
        codes.append(search(folder, fault, storage, tracking, *extra).wait())
    wall = time.monotonic() - start
    return measure(fault, url, tracking, codes, wall)


def measure(fault: str, url: str, tracking: str, codes: list[int], wall: float) -> Row:
    import optuna
    from mlflow import MlflowClient

    study = optuna.load_study(study_name=fault, storage=url)
    counted = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    params = [tuple(sorted(t.params.items())) for t in counted]
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(fault)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    how = "completed" if codes == [0] else (
        f"stopped ({codes[0]}), resumed, completed" if codes[-1] == 0 else f"exits {codes}")
    return Row(fault, TRIALS, len(counted), TRIALS - len(counted), len(params) - len(set(params)),
               sum(r.info.status == "RUNNING" for r in runs), how, wall)


def table(rows: list[Row]) -> str:
    base = next((r.wall for r in rows if r.fault == "none"), None)
    lines = ["| fault | trials asked | finished | lost | duplicated | runs left RUNNING | "
             "the search | wall time | vs no fault |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        extra = f"+{r.wall - base:.0f} s" if base is not None and r.fault != "none" else ""
        lines.append(f"| {r.fault} | {r.asked} | {r.finished} | {r.lost} | {r.duplicated} | "
                     f"{r.running_runs} | {r.how} | {r.wall:.0f} s | {extra} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args()
    faults = args.faults.split(",")
    folder = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    (folder / "bench.yaml").write_text(SPACE)
    disk = folder / "artifacts"
    disk.mkdir()
    if "disk-full" in faults:  # the server's artifacts on a disk that will fill
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
                       check=True)
    stack = Stack(folder, disk)
    filler = disk / "filler"

    def fill() -> None:
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 64 * 1024))

    stack.free_disk = lambda: filler.unlink(missing_ok=True)
    rows = []
    try:
        for fault in faults:
            if fault == "disk-full":
                fill()
            rows.append(run(fault, stack, folder))
            print(table(rows), flush=True)
            print(flush=True)
    finally:
        stack.close()
        if "disk-full" in faults:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    print(f"logs: {folder}")


if __name__ == "__main__":
    main()
