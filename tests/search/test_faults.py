"""Infrastructure faults are not trial outcomes: a real MLflow tracking server and a real
PostgreSQL go away for a while (a proxy in front of each refuses and resets their connections on
cue), and a real disk fills up; the search waits, says so once, loses nothing, or stops in one
line and resumes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from helpers import (
    assert_one_line_error,
    free_port,
    invoke,
    optuna_study,
    require_system_tools,
    runs_by_role,
    start_server,
    wait_for,
    wait_for_http,
)
from optuna.trial import TrialState
from proxy import FlakyProxy
from spaces import tiny_space

from pipeline.track.mlflow_ui import ui_env

SPACE = tiny_space(train_subset=1000)
SEARCH = ("search", "--space", "tiny.yaml", "--no-report")
# The tracking tests share one server: each names its own study (and so its own experiment).


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A real MLflow tracking server (SQLite behind it, artifacts served) behind a proxy."""
    folder = tmp_path_factory.mktemp("tracking-server")
    port = free_port()
    server = start_server(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{folder}/mlflow.db", "--serve-artifacts", "--artifacts-destination",
         str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env=ui_env(), cwd=folder, name="mlflow-faults")
    wait_for_http(f"http://127.0.0.1:{port}/health", server=server, what="the MLflow server")
    proxy = FlakyProxy(port)
    yield proxy
    proxy.down()
    # A response the proxy could not pass on (its client gone) holds uvicorn's graceful stop;
    # this throwaway server need not stop gracefully.
    server.stop(timeout=5)


# A running trial that has reported, read from Optuna's tables without opening an Optuna storage
# (which would create the tables as the search creates them: two creators race).
MID_TRAINING = ("SELECT COUNT(DISTINCT t.trial_id) FROM trials t JOIN trial_intermediate_values "
                "v ON v.trial_id = t.trial_id WHERE t.state = 'RUNNING'")


def _mid_training(connect: callable, trials: int = 1):
    """A check: ``trials`` trials are running and have reported an epoch."""
    def check():
        try:
            with contextlib.closing(connect()) as connection:
                return connection.execute(MID_TRAINING).fetchone()[0] >= trials
        except Exception:  # noqa: BLE001 - no database, or no tables yet
            return None
    return check


def _sqlite(folder: Path):
    return lambda: sqlite3.connect(f"file:{folder / 'optuna.db'}?mode=ro", uri=True)


def _outage(proxy: FlakyProxy, when, seconds: float | None) -> threading.Thread:
    """In the background: once ``when()`` holds, the proxy goes down, and comes back ``seconds``
    after the search first met it (None: it stays down). Counted from that first failed contact,
    not from the start: on a slow machine the search may not call the server for a while, and an
    outage that ends before it does is never seen."""
    def run() -> None:
        wait_for(when, timeout=300, what="trials in their second epoch")
        proxy.down()
        if seconds is not None:
            wait_for(lambda: proxy.turned_away, timeout=300,
                     what="the search to meet the outage")
            time.sleep(seconds)
            proxy.up()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _lines(text: str, words: str) -> list[str]:
    return [line for line in text.splitlines() if words in line]


def test_a_tracking_server_away_mid_trial_is_waited_out_and_nothing_is_lost(tmp_path, tracking):
    """The server goes away in a trial's second epoch and stays away past its end: the epoch's
    metrics are held, the trained network waits for the server, and every trial completes."""
    (tmp_path / "tiny.yaml").write_text(SPACE)
    uri = f"http://127.0.0.1:{tracking.port}"
    outage = _outage(tracking, _mid_training(_sqlite(tmp_path)), 5)
    # MLflow's own retries off: they could outlast the outage, and the search's wait is tested.
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    result = invoke(*SEARCH, "--study", "held", "--trials", "3", cwd=tmp_path, env=env)
    outage.join()
    assert result.returncode == 0, result.stderr
    down = _lines(result.stdout, "unreachable since")
    assert len(down) == 1 and down[0].startswith(f"MLflow tracking server {uri} unreachable "
                                                 "since "), result.stdout
    assert "Ctrl-C stops, the next search resumes" in down[0]
    assert len(_lines(result.stdout, f"MLflow tracking server {uri} is back after")) == 1
    trials = optuna_study(tmp_path, "held").trials
    assert len(trials) == 3 and {t.state for t in trials} <= {TrialState.COMPLETE,
                                                               TrialState.PRUNED}
    roles = runs_by_role(tmp_path, "held", tracking=uri)
    assert len(roles["study"]) == 1 and len(roles["trial"]) == 3
    assert not [r for r in roles["trial"] + roles["study"] if r.info.status == "RUNNING"]
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    for trial in trials:  # every epoch's metrics reached the run, those held included
        history = client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val_accuracy")
        assert [m.step for m in history] == sorted(trial.intermediate_values)


def test_a_tracking_server_away_past_the_timeout_stops_in_one_line_and_the_search_resumes(
        tmp_path, tracking):
    (tmp_path / "tiny.yaml").write_text(SPACE)
    uri = f"http://127.0.0.1:{tracking.port}"
    env = {"MLFLOW_TRACKING_URI": uri}
    outage = _outage(tracking, _mid_training(_sqlite(tmp_path)), None)
    stopped = invoke(*SEARCH, "--study", "cut", "--trials", "2", "--outage-timeout", "4",
                     cwd=tmp_path, env=env)
    outage.join()
    assert_one_line_error(stopped, f"MLflow tracking server {uri} unreachable for",
                          "--outage-timeout 4s", "it resumes", code=75)
    cut = optuna_study(tmp_path, "cut").get_trials(states=(TrialState.FAIL,))
    assert [t.user_attrs["outcome"] for t in cut] == ["infrastructure"]
    tracking.up()
    resumed = invoke(*SEARCH, "--study", "cut", "--trials", "2", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    study = optuna_study(tmp_path, "cut")
    counted = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(counted) == 2  # the cut trial ran again, and did not count
    (retry,) = [t for t in counted if t.system_attrs.get("failed_trial") == cut[0].number]
    assert retry.params == cut[0].params
    runs = runs_by_role(tmp_path, "cut", tracking=uri)["trial"]
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the cut run closed on resume
    (closed,) = [r for r in runs if r.info.run_id == cut[0].user_attrs["mlflow_run_id"]]
    assert (closed.info.status, closed.data.tags["pipeline.state"]) == ("KILLED",
                                                                         "infrastructure")


def test_a_tracking_server_that_answers_but_refuses_uploads_stops_after_three_trials_and_resumes(
        tmp_path, tracking, monkeypatch):
    """A server that answers its health check but resets every artifact upload (MLflow's does
    when its artifact disk is full) is not waited for without end: each trial tries a few times
    and ends as an infrastructure fault, its configuration queued again; three in a row stop the
    search in one line; once the server is mended the same command finishes the study."""
    from pipeline.search import outage

    monkeypatch.setattr(outage, "FIRST_PAUSE", 0.1)  # the pauses between tries, not their count
    (tmp_path / "tiny.yaml").write_text(SPACE)
    uri = f"http://127.0.0.1:{tracking.port}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
    tracking.refuse("/mlflow-artifacts/artifacts/")
    try:
        stopped = invoke(*SEARCH, "--study", "refused", "--trials", "2", cwd=tmp_path, env=env)
    finally:
        tracking.refuse(None)
    assert_one_line_error(stopped, f"3 trials in a row failed on MLflow tracking server {uri}",
                          "answers but refuses their requests", "it resumes", code=75)
    study = optuna_study(tmp_path, "refused")
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.user_attrs["outcome"] for t in failed] == ["infrastructure"] * 3
    assert len({tuple(sorted(t.params.items())) for t in failed}) == 1  # one configuration, kept
    resumed = invoke(*SEARCH, "--study", "refused", "--trials", "2", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    counted = optuna_study(tmp_path, "refused").get_trials(
        states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(counted) == 2 and counted[0].params == failed[0].params
    runs = runs_by_role(tmp_path, "refused", tracking=uri)["trial"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.info.status for r in runs if r.info.run_id in
            {t.user_attrs["mlflow_run_id"] for t in failed}} == {"KILLED"}


def test_a_database_restart_under_two_workers_loses_nothing_and_kills_no_live_trial(
        tmp_path, postgres):
    """PostgreSQL away for longer than the heartbeats' grace period while both workers train a
    trial: the coordinator says so once and waits, the workers hold their reports and heartbeats,
    and when it is back every trial finishes: none fails, none runs twice, no traceback."""
    url = postgres.database("restart")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    proxy = FlakyProxy(port)
    storage = url.replace(f":{port}/", f":{proxy.port}/")
    (tmp_path / "tiny.yaml").write_text(tiny_space(epochs=3))
    import psycopg

    outage = _outage(proxy, _mid_training(lambda: psycopg.connect(url), trials=2), 8)
    result = invoke(*SEARCH, "--trials", "4", "--workers", "2", "--storage", storage,
                    "--heartbeat-interval", "1", "--grace-period", "3", cwd=tmp_path)
    outage.join()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    down = _lines(result.stdout, "unreachable since")
    assert len(down) == 1 and down[0].startswith("study storage postgresql://"), result.stdout
    trials = optuna.load_study(study_name="mnist-tiny", storage=url).trials
    assert len(trials) == 4  # no trial failed and ran again
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({t.user_attrs["worker"] for t in trials}) == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs at ``tmp_path/small``, nearly full: where the runs' artifacts go."""
    require_system_tools("mount", packages="mount")
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_trial_clearly_leaves_nothing_trusted_and_stops_the_search(
        tmp_path, small_disk):
    (tmp_path / "tiny.yaml").write_text(SPACE)
    (tmp_path / "mlruns").symlink_to(small_disk)  # MLflow's local artifact root
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (2 * 1024 * 1024 - 16 * 1024))  # 16 KiB left: no model fits
    stopped = invoke(*SEARCH, "--trials", "2", cwd=tmp_path)
    assert_one_line_error(stopped, "no space left on device in", "free some space",
                          "it resumes", code=75)
    study = optuna_study(tmp_path, "mnist-tiny")
    (trial,) = study.get_trials(states=(TrialState.FAIL,))
    assert trial.user_attrs["outcome"] == "disk-full"
    assert trial.user_attrs["reason"].startswith("disk full: ")
    assert "model_uri" not in trial.user_attrs
    assert [t.params for t in study.get_trials(states=(TrialState.WAITING,))] == [trial.params]
    from helpers import mlflow_client

    client = mlflow_client(tmp_path)
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert (run.info.status, run.data.tags["pipeline.state"]) == ("FAILED", "disk-full")
    experiment = client.get_experiment_by_name("mnist-tiny").experiment_id
    models = client.search_logged_models(experiment_ids=[experiment])
    assert all(m.status.name != "READY" for m in models)  # a half-written model is not trusted
    assert_one_line_error(invoke("promote", "best", cwd=tmp_path), "no complete trial", code=1)
    filler.unlink()
    resumed = invoke(*SEARCH, "--trials", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(optuna_study(tmp_path, "mnist-tiny").get_trials(
        states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2

