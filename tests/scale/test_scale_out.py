"""Scale-out: PostgreSQL-backed studies shared by several worker processes, a real MLflow
tracking server, crash recovery through heartbeats, and the docker-compose stack."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import (
    assert_one_line_error,
    free_port,
    invoke,
    require_system_tools,
)
from spaces import tiny_space

REPO = Path(__file__).resolve().parents[2]

TINY = tiny_space(train_subset=1000, lowest_lr="1.0e-3", sampler_startup=4, pruner_startup=3)
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

    from pipeline.study.storage import open_storage

    study = optuna.load_study(study_name="mnist-tiny",
                              storage=open_storage(f"journal:///{journal}"))
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]


def test_workers_on_one_machine_share_the_default_sqlite_study(tmp_path):
    """No --storage: the default SQLite file serves the worker processes of one machine (it is
    what `pipeline search` uses when it finds a GPU and packs several trials on it)."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke("search", "--space", "tiny.yaml", "--trials", "4", "--workers", "2",
                    "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 trials at a time" in result.stdout
    import optuna

    study = optuna.load_study(study_name="mnist-tiny", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert sorted(t.number for t in study.trials) == list(range(4))
    assert all(t.state.is_finished() for t in study.trials)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2


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
    assert {"postgres", "mlflow", "ray-head", "ray-worker", "ray-worker-cpu"} <= set(services)
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data:rw") for v in postgres["volumes"])
    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--allowed-hosts=" in command and "--serve-artifacts" in command
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]
    for name in ("postgres", "mlflow", "ray-head"):  # published on this machine only
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"])
    head = services["ray-head"]
    assert head["build"] and "--head" in head["command"] and "--num-cpus=0" in head["command"]
    published = {p.removesuffix("/tcp") for p in head["ports"]}
    assert {"127.0.0.1:10001:10001", "127.0.0.1:8265:8265"} <= published
    for name in ("ray-worker", "ray-worker-cpu"):
        worker = services[name]
        assert worker["build"] and "--address=ray-head:6379" in worker["command"]
        env = worker["environment"]
        assert env["PIPELINE_NODE_TRACKING_URI"] == "http://mlflow:5000"
        assert env["PIPELINE_NODE_STORAGE"].startswith("postgresql://")
        assert "@postgres:5432/optuna" in env["PIPELINE_NODE_STORAGE"]
        # Scalable: no fixed names or host ports.
        assert "container_name" not in worker and "ports" not in worker
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    cpu = services["ray-worker-cpu"]
    assert "deploy" not in cpu and cpu["profiles"] == ["cpu"]


def test_the_kuberay_manifest_describes_a_ray_cluster_without_a_secret():
    documents = list(yaml.safe_load_all((REPO / "deploy" / "kuberay.yaml").read_text()))
    assert [d["kind"] for d in documents] == ["RayCluster"]
    cluster = documents[0]
    assert cluster["apiVersion"] == "ray.io/v1"
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = cluster["spec"]["workerGroupSpecs"]
    containers = [head["template"]["spec"]["containers"][0]] + [
        g["template"]["spec"]["containers"][0] for g in groups]
    assert {c["image"] for c in containers} == {"pipeline:latest"}  # docker-compose's image
    assert groups[0]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] == 1
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        # The storage URL holds a password: it comes from a Secret, never from this file.
        assert env["PIPELINE_NODE_STORAGE"]["valueFrom"]["secretKeyRef"]["name"]
        assert "value" not in env["PIPELINE_NODE_STORAGE"]
    text = (REPO / "deploy" / "kuberay.yaml").read_text()
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            assert not re.search(r"postgresql://[^@\s]*:[^@\s]*@", line), line


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
    from pipeline.scale.processes import WORKERS_PER_GPU, default_worker_count, place_workers

    placed = place_workers(6, "auto", gpus=2, cores=12)
    assert [p.device for p in placed] == ["cuda:0", "cuda:1"] * 3
    assert {p.threads for p in placed} == {2}
    assert [p.device for p in place_workers(2, "cpu", gpus=0, cores=2)] == ["cpu", "cpu"]
    assert place_workers(3, "cpu", gpus=0, cores=2)[0].threads == 1  # never 0 threads
    # Without --workers: WORKERS_PER_GPU trials at once on each GPU, one on a CPU.
    assert default_worker_count("auto", gpus=2) == 2 * WORKERS_PER_GPU
    assert default_worker_count("auto", gpus=0) == 1
    assert default_worker_count("cpu", gpus=0) == 1
