"""Scale-out: PostgreSQL-backed studies shared by several worker processes, a real MLflow
tracking server, crash recovery through heartbeats, and the docker-compose stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import (
    assert_one_line_error,
    free_port,
    invoke,
    require_system_tools,
    start_cli,
    start_server,
    wait_for,
    wait_for_http,
)
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parent.parent

TINY = textwrap.dedent("""\
    study:
      sampler: {seed: 0, n_startup_trials: 4}
      pruner: {n_startup_trials: 3, n_warmup_steps: 0}
    data: {val_size: 500, train_subset: 1000}
    fixed: {epochs: 2, depth: 1, fc_width: 16, batch_size: 64}
    params:
      width: {type: categorical, choices: [4, 8]}
      lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
""")
SLOW = TINY.replace("train_subset: 1000", "train_subset: 3000").replace("epochs: 2", "epochs: 5")


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    """An MLflow tracking server with a PostgreSQL backend, serving artifacts, on loopback."""
    port = free_port()
    artifacts = tmp_path_factory.mktemp("artifacts")
    server = start_server(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         postgres.database("mlflow"), "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port)], cwd=artifacts, name="mlflow-server")
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health", server=server, what="the MLflow tracking server")
    yield url
    server.stop()


def _study(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


def _runs(tracking: str, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_three_workers_share_one_study_for_exactly_its_total(postgres, tracking_server,
                                                             tmp_path):
    storage = postgres.database("optuna")
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke("search", "--space", "tiny.yaml", "--trials", "12", "--workers", "3",
                    "--storage", storage, "--no-report", cwd=tmp_path,
                    env={"MLFLOW_TRACKING_URI": tracking_server})
    assert result.returncode == 0, result.stderr
    assert "3 worker processes" in result.stdout

    study = _study(storage, "mnist-tiny")
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(12))  # exactly 12, each number once
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 3  # every worker process took part

    _, runs = _runs(tracking_server, "mnist-tiny")
    children = [r for r in runs if r.data.tags.get("pipeline.role") == "trial"]
    parents = [r for r in runs if r.data.tags.get("pipeline.role") == "study"]
    assert len(children) == 12 and len(parents) == 1
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.data.tags["pipeline.trial_number"] for r in children} == {str(n) for n in
                                                                         range(12)}
    # The same PostgreSQL study reports and promotes like a local one.
    report = invoke("report", "--storage", storage, cwd=tmp_path,
                    env={"MLFLOW_TRACKING_URI": tracking_server})
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "reports" / "mnist-tiny" / "index.html").exists()
    promoted = invoke("promote", "best", "--storage", storage, "--name", "pg-model",
                      cwd=tmp_path, env={"MLFLOW_TRACKING_URI": tracking_server})
    assert promoted.returncode == 0, promoted.stderr
    assert "pg-model@champion -> version 1" in promoted.stdout


def test_a_killed_worker_is_failed_after_the_grace_period_and_retried(postgres,
                                                                      tracking_server,
                                                                      tmp_path):
    """Two workers as if on two machines; one is SIGKILLed in the middle of a trial."""
    storage = postgres.database("optuna")
    (tmp_path / "slow.yaml").write_text(SLOW)
    args = ("search", "--space", "slow.yaml", "--trials", "4", "--storage", storage,
            "--heartbeat-interval", "1", "--grace-period", "3", "--no-report")
    env = {"MLFLOW_TRACKING_URI": tracking_server}
    doomed = start_cli(*args, cwd=tmp_path, env=env)
    survivor = start_cli(*args, cwd=tmp_path, env=env)

    def doomed_mid_trial():
        try:
            study = _study(storage, "mnist-slow")
        except Exception:  # noqa: BLE001 - not created yet
            return None
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if f":{doomed.pid}:" in t.user_attrs.get("worker", "") and t.intermediate_values:
                return t
        return None

    victim = wait_for(doomed_mid_trial, what="the doomed worker's trial to report an epoch")
    doomed.kill()
    doomed.communicate(timeout=60)
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err

    study = _study(storage, "mnist-slow")
    failed = study.trials[victim.number]
    assert failed.state == TrialState.FAIL  # failed by the heartbeat check, not left RUNNING
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1
    assert retries[0].params == victim.params and retries[0].state == TrialState.COMPLETE
    counted = [t for t in study.trials if t.state.is_finished() and t.number != victim.number]
    assert len(counted) == 4  # the study still reached its total
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))

    client, runs = _runs(tracking_server, "mnist-slow")
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    retry_run = client.get_run(retries[0].user_attrs["mlflow_run_id"])
    assert retry_run.data.tags["pipeline.retry_of"] == str(victim.number)
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_workers_on_one_machine_share_a_journal_storage(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    journal = tmp_path / "optuna.journal"
    result = invoke("search", "--space", "tiny.yaml", "--trials", "4", "--workers", "2",
                    "--storage", f"journal:///{journal}", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    threads = max(1, (os.cpu_count() or 1) // 2)  # the cores split between the two
    assert (f"2 worker processes: cpu ({threads} threads), cpu ({threads} threads)"
            in result.stdout)
    import optuna

    from pipeline.studies import open_storage

    study = optuna.load_study(study_name="mnist-tiny",
                              storage=open_storage(f"journal:///{journal}"))
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]


def test_workers_on_one_machine_share_the_default_sqlite_study(tmp_path):
    """No --storage: the default SQLite file serves the worker processes of one machine (it is
    what `pipeline search` uses when it finds a GPU and packs several trials on it)."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke("search", "--space", "tiny.yaml", "--trials", "6", "--workers", "3",
                    "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 trials at a time" in result.stdout
    import optuna

    study = optuna.load_study(study_name="mnist-tiny", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state.is_finished() for t in study.trials)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 3


def test_an_unreachable_postgres_is_one_line_without_the_password(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    url = f"postgresql://pipeline:s3cret@127.0.0.1:{free_port()}/optuna"
    result = invoke("search", "--space", "tiny.yaml", "--storage", url, cwd=tmp_path)
    line = assert_one_line_error(result, "cannot open storage", code=2)
    assert "s3cret" not in result.stderr and "pipeline:***@" in line


@pytest.fixture
def compose():
    require_system_tools("docker-compose", packages="docker-compose")
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "--env-file", ".env.example", "config"],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout), (REPO / "docker-compose.yml").read_text()


def test_docker_compose_validates_and_has_the_stack(compose):
    resolved, _ = compose
    services = resolved["services"]
    assert {"postgres", "mlflow", "worker", "worker-cpu"} <= set(services)
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data:rw") for v in postgres["volumes"])
    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--allowed-hosts=" in command and "--serve-artifacts" in command
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]
    for name in ("postgres", "mlflow"):  # published on this machine only
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"])
    worker = services["worker"]
    assert worker["build"] and "pipeline" in worker["command"]
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    cpu = services["worker-cpu"]
    assert "deploy" not in cpu and cpu["profiles"] == ["cpu"] and "--device" in cpu["command"]
    for service in ("worker", "worker-cpu"):  # scalable: no fixed names or host ports
        assert "container_name" not in services[service] and "ports" not in services[service]


def test_no_secret_is_written_in_the_compose_file(compose):
    _, raw = compose
    example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text()
                   .splitlines() if line and not line.startswith("#"))
    assert example["POSTGRES_PASSWORD"] not in raw
    # Every password the file mentions is a reference to the environment (.env).
    for match in re.finditer(r"^\s*\w*PASSWORD\w*:\s*(\S+)", raw, flags=re.MULTILINE):
        assert match.group(1).strip("\"'").startswith("${"), match.group(0)
    for url in re.findall(r"postgresql\S*://[^@\s]+@", raw):
        assert "${POSTGRES_PASSWORD" in url, url
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
    without_env = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"],
                                 cwd=REPO, capture_output=True, text=True,
                                 env={k: v for k, v in os.environ.items()
                                      if k != "POSTGRES_PASSWORD"})
    if not (REPO / ".env").exists():
        assert without_env.returncode != 0
        assert "set POSTGRES_PASSWORD in .env" in without_env.stderr


def test_workers_are_placed_round_robin_on_gpus_with_the_cores_split():
    from pipeline.workers import WORKERS_PER_GPU, default_worker_count, place_workers

    placed = place_workers(6, "auto", gpus=2, cores=12)
    assert [p.device for p in placed] == ["cuda:0", "cuda:1"] * 3
    assert {p.threads for p in placed} == {2}
    assert [p.device for p in place_workers(2, "cpu", gpus=0, cores=2)] == ["cpu", "cpu"]
    assert place_workers(3, "cpu", gpus=0, cores=2)[0].threads == 1  # never 0 threads
    # Without --workers: WORKERS_PER_GPU trials at once on each GPU, one on a CPU.
    assert default_worker_count("auto", gpus=2) == 2 * WORKERS_PER_GPU
    assert default_worker_count("auto", gpus=0) == 1
    assert default_worker_count("cpu", gpus=0) == 1
