"""`pipeline search --ray` on a real multi-node Ray cluster on this machine (each node with its own
resources), a real PostgreSQL study and a real MLflow tracking server: exact totals, workers on
every node, and a node lost mid-trial without losing the trial."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import (
    assert_one_line_error,
    assert_wrote_nothing,
    free_port,
    invoke,
    keep_artifacts,
    opened_once,
    optuna_dashboard_study,
    start_cli,
    wait_for,
)
from mlflow import MlflowClient
from optuna.trial import TrialState
from spaces import tiny_space

TINY = tiny_space(epochs=3, train_subset=1000, lowest_lr="1.0e-3", sampler_startup=4,
                  pruner_startup=3)
# Logical CPUs. The search spreads its two workers, one on each node; the head alone can hold
# both once the second node is lost, so losing it costs one worker, restarted on the head.
HEAD_CPUS, SECOND_NODE_CPUS = 2, 1
OBJECT_STORE = 80 * 2**20  # small: this machine has 24 GiB for everything
TRIALS = 4  # two rounds of the two workers


@pytest.fixture(scope="module")
def cluster():
    """Two nodes: the head and one more, each with its own CPUs. Workers run on both; the
    second can be removed (the head cannot)."""
    from ray.cluster_utils import Cluster

    # A lost node is declared dead after 3 missed 1-second health checks, not Ray's default of
    # about 20 seconds: the test waits less, and nothing else changes.
    # Ray runs its workers at niceness 15 to keep its own daemons responsive; beside the other
    # tests of a busy 2-core CI machine they would then starve (minutes to start an actor).
    system_config = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000,
                   "health_check_failure_threshold": 3, "worker_niceness": 0}
    ray_cluster = Cluster(initialize_head=True,
                          # No dashboard: nothing here reads it, and it is 3 more processes.
                          head_node_args={"num_cpus": HEAD_CPUS, "include_dashboard": False,
                                          "object_store_memory": OBJECT_STORE,
                                          "_system_config": system_config})
    ray_cluster.add_node(num_cpus=SECOND_NODE_CPUS, object_store_memory=OBJECT_STORE)
    yield ray_cluster
    ray_cluster.shutdown()


def _args(folder, storage, address, trials=TRIALS):
    (folder / "tiny.yaml").write_text(TINY)
    return ("search", "--space", "tiny.yaml", "--trials", str(trials), "--workers", "2",
            "--ray", address, "--storage", storage, "--heartbeat-interval", "1",
            "--grace-period", "3", "--no-report")


def _node_of(trial) -> str:
    """The Ray node a trial's worker ran on: its worker id is "<host>/ray-<node>:<pid>:..."."""
    return trial.user_attrs["worker"].split(":")[0].split("/ray-")[1]


def _lost_in_their_claim(lost) -> set[int]:
    """Trials whose worker died inside the claim, before it named itself (search.claim): they
    never trained or opened a run, and are failed and retried like the others."""
    claimed = {t.number for t in lost if "worker" not in t.user_attrs}
    for t in lost:
        if t.number in claimed:
            assert not t.intermediate_values and "mlflow_run_id" not in t.user_attrs, t
    return claimed


def _runs(tracking: str, experiment: str):
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def lost_node_search(cluster, postgres, tracking_server, tmp_path_factory, request):
    """One search of 4 trials by 2 workers spread over the two nodes. Once a trial on the
    second node is in its second epoch, that node is removed (its raylet and workers killed, as
    a machine that dies); the search is left to finish. When any test of the module fails, the
    driver's output and Ray's logs are kept (PIPELINE_TEST_ARTIFACTS)."""
    failed_before = request.session.testsfailed
    folder = tmp_path_factory.mktemp("ray")
    (node,) = cluster.worker_nodes
    storage = postgres.database("optuna")  # the plain postgresql:// URL, as the docs have it
    env = {"MLFLOW_TRACKING_URI": tracking_server}
    driver = start_cli(*_args(folder, storage, cluster.address), cwd=folder, env=env)
    study = opened_once(lambda: optuna.load_study(study_name="mnist-tiny", storage=storage))

    def a_trial_mid_training():
        if driver.poll() is not None:  # the search ended first: say why, at once
            out, err = driver.output()
            raise AssertionError(f"the search ended (exit {driver.returncode}) before a trial "
                                 f"ran on the second node:\n{out[-2000:]}\n{err[-2000:]}")
        if (opened := study()) is None:
            return None
        for trial in opened.get_trials(states=(TrialState.RUNNING,)):
            if trial.intermediate_values and node.node_id.startswith(_node_of(trial)):
                return trial
        return None

    try:
        victim = wait_for(a_trial_mid_training, timeout=300,
                          what="a trial in its second epoch on the second node")
        cluster.remove_node(node, allow_graceful=False)
        stdout, stderr = driver.communicate(timeout=400)
        study = optuna.load_study(study_name="mnist-tiny", storage=storage)
    except BaseException as e:
        _keep_logs(cluster, driver)
        raise AssertionError(f"{e}\n{_worker_stacks(cluster)}") from None
    yield {"code": driver.returncode, "stdout": stdout, "stderr": stderr, "victim": victim,
           "study": study, "storage": storage, "env": env, "folder": folder}
    if request.session.testsfailed > failed_before:
        _keep_logs(cluster, driver)


def _worker_stacks(cluster) -> str:
    """What the search's Ray workers are doing: each prints its threads' stacks on SIGUSR1 into
    its log; the ends of those logs."""
    import signal

    for stat in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"SearchWorker" in stat.read_bytes():
                os.kill(int(stat.parent.name), signal.SIGUSR1)
        except (OSError, ValueError):
            continue
    time.sleep(2)
    logs = Path(cluster.head_node.get_logs_dir_path())
    return "\n".join(f"--- {err.name}\n{err.read_text(errors='replace')[-3000:]}"
                     for err in sorted(logs.glob("worker-*.err")) if err.stat().st_size)


def _keep_logs(cluster, driver) -> None:
    """The driver's output and the cluster's logs, kept under PIPELINE_TEST_ARTIFACTS."""
    keep_artifacts("ray-lost-node", driver.folder, Path(cluster.head_node.get_logs_dir_path()))


def test_two_workers_across_two_nodes_run_exactly_the_studys_total(lost_node_search,
                                                                    tracking_server):
    search = lost_node_search
    assert search["code"] == 0, search["stderr"]
    assert "Traceback" not in search["stderr"]
    assert "2 trials at a time, 2 Ray workers on node" in search["stdout"]
    study, victim = search["study"], search["victim"]
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers)))  # each number once
    # Every trial the lost node was running is lost (failed), and only those.
    lost = study.get_trials(states=(TrialState.FAIL,))
    assert victim.number in {t.number for t in lost}
    claimed = _lost_in_their_claim(lost)
    assert {_node_of(t) for t in lost if t.number not in claimed} == {_node_of(victim)}
    counted = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == TRIALS  # exactly the total, the lost trials' retries included
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    named = [t for t in study.trials if t.number not in claimed]
    assert len({_node_of(t) for t in named}) == 2  # workers ran on both nodes
    _, runs = _runs(tracking_server, "mnist-tiny")
    children = [r for r in runs if r.data.tags.get("pipeline.role") == "trial"]
    assert len(children) == len(named)  # one run per trial: 4, and the lost ones
    assert len([r for r in runs if r.data.tags.get("pipeline.role") == "study"]) == 1
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_node_lost_mid_trial_loses_no_trial(lost_node_search, tracking_server):
    """Ray restarted the lost node's workers elsewhere; the trial's heartbeat went stale, it
    was failed and retried with the same parameters, and its run was closed KILLED."""
    study, victim = lost_node_search["study"], lost_node_search["victim"]
    assert study.trials[victim.number].state == TrialState.FAIL  # not left RUNNING
    client, _ = _runs(tracking_server, "mnist-tiny")
    lost_trials = study.get_trials(states=(TrialState.FAIL,))
    claimed = _lost_in_their_claim(lost_trials)
    for lost in lost_trials:  # the victim, and any neighbour
        if lost.number in claimed:
            continue  # nothing was sampled: any fresh trial takes its place
        retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == lost.number]
        assert len(retries) == 1
        assert retries[0].params == lost.params
        assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
        run = client.get_run(lost.user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED" and run.data.tags["pipeline.state"] == "dead-worker"


def test_the_shared_study_reports_promotes_and_predicts_like_a_local_one(
        lost_node_search, mnist, tmp_path, monkeypatch):
    """From a tracking server, whatever is downloaded (the report's pictures, the model to
    promote or to predict with) goes to folders that are removed, not left in the system's
    temporary folder."""
    import gc
    import tempfile

    from PIL import Image

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    search = lost_node_search
    report = invoke("report", "--storage", search["storage"], cwd=search["folder"],
                    env=search["env"])
    assert report.returncode == 0, report.stderr
    promoted = invoke("promote", "best", "--storage", search["storage"], "--name",
                      "ray-model", cwd=search["folder"], env=search["env"])
    assert promoted.returncode == 0, promoted.stderr
    assert "ray-model@champion -> version 1" in promoted.stdout
    digit = tmp_path / "digit.png"
    Image.fromarray(mnist.test.images[0].numpy()).save(digit)
    predicted = invoke("predict", "--model", "models:/ray-model@champion", str(digit),
                       cwd=search["folder"], env=search["env"])
    assert predicted.returncode == 0, predicted.stderr
    assert "digit.png" in predicted.stdout
    gc.collect()
    # torch keeps its compile cache there on purpose (torchinductor_<user>), as it always does.
    left = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_")]
    assert not left, left


def test_ray_with_a_sqlite_study_is_refused_in_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke("search", "--space", "tiny.yaml", "--ray", cwd=tmp_path)
    assert_one_line_error(result, "SQLite file of this machine", "postgresql://", code=2)
    assert_wrote_nothing(tmp_path, "tiny.yaml")


def test_ray_at_an_unreachable_address_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    address = f"127.0.0.1:{free_port()}"
    result = invoke("search", "--space", "tiny.yaml", "--ray", address, "--storage",
                    f"journal:///{tmp_path}/optuna.journal", cwd=tmp_path,
                    env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    assert_one_line_error(result, f"the Ray cluster at {address} is unreachable", code=2)
    assert_wrote_nothing(tmp_path, "tiny.yaml")


def test_ray_at_a_cluster_with_a_local_mlflow_store_is_refused(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke("search", "--space", "tiny.yaml", "--ray", "10.0.0.1:6379", "--storage",
                    "postgresql://u@10.0.0.1/optuna", cwd=tmp_path)
    assert_one_line_error(result, "needs an MLflow tracking server every node reaches",
                          "MLFLOW_TRACKING_URI=http://", code=2)
    assert_wrote_nothing(tmp_path, "tiny.yaml")


def test_ray_missing_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as without the extra
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke("search", "--space", "tiny.yaml", "--ray", cwd=tmp_path)
    assert_one_line_error(result, "--ray needs Ray", 'pip install -e ".[ray]"', code=2)
    assert_wrote_nothing(tmp_path, "tiny.yaml")


def test_per_worker_resources_go_with_ray(tmp_path):
    result = invoke("search", "--gpus-per-worker", "0.25", cwd=tmp_path)
    assert_one_line_error(result, "--gpus-per-worker go with --ray", code=2)


def test_optunas_own_dashboard_reads_the_shared_postgresql_study(lost_node_search):
    """The docs' plain postgresql:// URL, read by optuna-dashboard's own app: every trial,
    the lost ones too, each with the MLflow run it logged to. (test_shipping runs the command.)"""
    search = lost_node_search
    study = optuna_dashboard_study(search["storage"], "mnist-tiny", cwd=search["folder"],
                                   in_process=True)
    assert len(study["trials"]) == len(search["study"].trials)
    assert "Fail" in {t["state"] for t in study["trials"]}  # the node lost mid-trial
    for trial in study["trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert len(attrs["mlflow_run_id"]) == 32
