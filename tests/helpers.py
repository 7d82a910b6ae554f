"""Running `pipeline` the ways the tests need: in this process (click's CliRunner: most tests) and
as a real process (what only a process shows: exit status, signals, no traceback on stderr)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


# Variables that would point a test's program at some other store than its own folder.
_STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "PIPELINE_STORAGE", "MLFLOW_REGISTRY_URI",
                    "PIPELINE_WORKERS")


def invoke(*args: str, cwd: Path, env: dict | None = None) -> Result:
    """Run a `pipeline` command in this process, in folder ``cwd`` with its default stores, as
    the real program would run it (the same group and error handling; no interpreter start-up).
    An exception that is not a user error escapes into the test, traceback and all."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    variables = {name: None for name in _STORE_VARIABLES}  # None: unset while it runs
    variables.update(env or {})
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, list(args), env=variables, catch_exceptions=False)
    finally:
        os.chdir(old)
    return Result(result.exit_code, result.stdout, result.stderr)


def cli_env(env: dict | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in _STORE_VARIABLES}
    return {**clean, "PYTHONUNBUFFERED": "1", **(env or {})}


# The folder each real process's output goes under: pytest's temporary folder of this session
# (tests/conftest.py sets it), which pytest prunes; the system's temporary folder outside pytest.
output_root: Path | None = None


class Background:
    """A real process, its output going to files (a pipe nobody reads fills up, and the
    program blocks on its next write). It runs in its own process group, so stopping it stops
    everything it started."""

    def __init__(self, command: list[str], *, cwd: Path | None, env: dict, name: str,
                 preexec_fn=None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=output_root))
        self._out = open(self.folder / "stdout", "w")
        self._err = open(self.folder / "stderr", "w")
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._out,
                                     stderr=self._err, text=True, start_new_session=True,
                                     preexec_fn=preexec_fn)
        self.pid = self.proc.pid
        # What signals this process ignored as it started the program (a child starts with the
        # ignored ones ignored): half of the story when the program will not stop.
        self.started_by = _signal_state(Path("/proc/self"))

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def poll(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.proc.kill()

    def output(self) -> tuple[str, str]:
        for stream in (self._out, self._err):
            if not stream.closed:
                stream.flush()
        return ((self.folder / "stdout").read_text(), (self.folder / "stderr").read_text())

    def communicate(self, timeout: float) -> tuple[str, str]:
        """Wait for it to end (killing its whole group after ``timeout``) and return its output."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            state = self.stuck_state()
            self.stop(signal.SIGKILL)
            out, err = self.output()
            raise AssertionError(f"still running after {timeout}s:\n{out[-2000:]}\n"
                                 f"{err[-4000:]}\n{state}") from None
        self._out.close()
        self._err.close()
        return self.output()

    def stuck_state(self) -> str:
        """What a process that does not end is doing: its threads' signal state (pending,
        blocked, ignored, caught), the test process's as it started it, and, for a `pipeline`
        process, every thread's Python stack (the program prints them to stderr on SIGUSR1)."""
        lines = [f"started by a process with {self.started_by}"]
        for task in sorted(Path(f"/proc/{self.pid}/task").glob("*")):
            lines.append(f"thread {task.name}: {_signal_state(task)}")
        try:
            os.kill(self.pid, signal.SIGUSR1)
            time.sleep(1)
        except ProcessLookupError:
            pass
        return "\n".join(lines)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stop the program and everything it started."""
        try:
            os.killpg(self.pid, signum)
            self.proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()


def _signal_state(proc: Path) -> str:
    """A process's or thread's state and signal masks, from /proc."""
    try:
        status = (proc / "status").read_text().splitlines()
    except OSError as e:
        return str(e)
    return " ".join(s.replace("\t", "") for s in status
                    if s.startswith(("Name", "State", "SigPnd", "SigBlk", "SigIgn", "SigCgt")))


def start_cli(*args: str, cwd: Path, env: dict | None = None, preexec_fn=None) -> Background:
    """The real program, started in the background (for tests that interrupt or kill it)."""
    return Background([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=cli_env(env),
                      name="pipeline", preexec_fn=preexec_fn)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> Result:
    """The real program, run to its end, with the stores of ``cwd``: for what only a process
    shows (its exit status, stderr with no traceback, signals)."""
    proc = start_cli(*args, cwd=cwd or Path.cwd(), env=env)
    stdout, stderr = proc.communicate(timeout=timeout)
    return Result(proc.returncode, stdout, stderr)


def start_server(command: list[str], *, cwd: Path, env: dict | None = None,
                 name: str) -> Background:
    """A server for a test (MLflow's), with the venv's bin on PATH (MLflow starts uvicorn by
    name, as it finds it when the venv is activated)."""
    full = cli_env(env)
    full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full.get('PATH', '')}"
    return Background(command, cwd=cwd, env=full, name=name)


def descendants(pid: int) -> list[int]:
    """Every living process started, directly or not, by ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def opened_once(open_study: Callable):
    """For a poll: the study ``open_study()`` opens, opened at the first call that succeeds and
    kept, so each later poll only reads it (opening costs about twenty reads: storage, engine,
    schema check). None while it cannot be opened: the study may not exist yet."""
    kept = []

    def study():
        if not kept:
            try:
                kept.append(open_study())
            except Exception:  # noqa: BLE001 - not created yet
                return None
        return kept[0]
    return study


def wait_for(predicate, *, timeout: float = 180, interval: float = 0.25, what: str = ""):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def wait_for_http(url: str, *, server: Background | None = None, timeout: float = 180,
                  what: str = "") -> None:
    """Wait until ``url`` answers 200; a ``server`` that exits first fails the test with its
    stderr."""
    import requests

    def up() -> bool:
        if server is not None and server.poll() is not None:
            raise AssertionError(f"{what or url}: the server exited: "
                                 f"{server.output()[1][-2000:]}")
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, timeout=timeout, what=what or url)


@contextmanager
def mlflow_model_server(folder: Path, model_uri: str, *, name: str) -> Iterator[str]:
    """`mlflow models serve` on ``model_uri`` of the store in ``folder``, on loopback, as a user
    would start it; yields its URL and stops it after."""
    port = free_port()
    server = start_server(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
         "--host", "127.0.0.1", "--port", str(port), "--env-manager", "local"],
        cwd=folder, env={"MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}, name=name)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", server=server, what="mlflow models serve")
        yield url
    finally:
        server.stop()


@contextmanager
def mlflow_scoring_app(model_uri: str, *, tracking_uri: str, monkeypatch) -> Iterator[str]:
    """MLflow's scoring app, the one `mlflow models serve` runs, on ``model_uri``, served by
    uvicorn from this process on loopback: real HTTP requests without a second interpreter's
    start-up (the shipping tests run the command itself). Yields its URL."""
    import threading

    import mlflow
    import uvicorn
    from mlflow.pyfunc import scoring_server

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    # The app marks the process as a serving environment; the mark goes when the test ends.
    monkeypatch.delenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", raising=False)
    app = scoring_server.init(mlflow.pyfunc.load_model(model_uri))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", what="MLflow's scoring app")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def port_is_closed(port: int) -> bool:
    import requests

    try:
        requests.get(f"http://127.0.0.1:{port}", timeout=1)
    except requests.ConnectionError:
        return True
    return False


def mlflow_client(folder: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db",
                        registry_uri=f"sqlite:///{folder}/mlflow.db")


def optuna_study(folder: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/optuna.db")


def runs_by_role(folder: Path, experiment: str, tracking: str | None = None) -> dict[str, list]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking) if tracking else mlflow_client(folder)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    roles: dict[str, list] = {}
    for run in runs:
        roles.setdefault(run.data.tags.get("pipeline.role"), []).append(run)
    return roles


def assert_one_line_error(result: Result, *fragments: str, code: int | None = None) -> str:
    """A user error: non-zero exit, no traceback, one 'Error:' line naming the problem."""
    assert result.returncode != 0, result
    if code is not None:
        assert result.returncode == code, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.error_lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_wrote_nothing(folder: Path, *kept: str) -> None:
    """A refused command left ``folder`` as it found it: only the test's own files (``kept``),
    no store, no report, nothing half-written."""
    assert sorted(p.name for p in Path(folder).iterdir()) == sorted(kept)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_system_tools(*tools: str, packages: str) -> None:
    """Tests that drive a real system service need it installed. Under CI (`.ci/run` installs
    them) a missing tool is a failure; on a developer's machine the test is skipped with the
    command that installs it."""
    import shutil

    import pytest

    missing = [tool for tool in tools if shutil.which(tool) is None and not Path(tool).exists()]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed: apt-get install {packages}"
    if os.environ.get("CI"):
        pytest.fail(message + " (.ci/run should have installed it)")
    pytest.skip(message)


def optuna_dashboard_study(storage: str, study_name: str, *, cwd: Path,
                           in_process: bool = False) -> dict:
    """What Optuna's own dashboard answers for ``study_name`` in ``storage``: the study, its
    trials and their attributes (its page and importances must answer too). By default the
    `optuna-dashboard STORAGE` command as the docs show it (on a free port); ``in_process``
    serves the same WSGI app from this process, without a second interpreter's start-up."""
    import requests

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if in_process:
        import threading
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from optuna_dashboard import wsgi

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args) -> None:
                pass

        httpd = make_server("127.0.0.1", port, wsgi(storage), handler_class=Quiet)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        server, stop = None, httpd.shutdown
    else:
        server = start_server(["optuna-dashboard", storage, "--port", str(port)], cwd=cwd,
                              name="optuna-dashboard")
        # Ctrl-C, as a user stops it: gunicorn's quick shutdown, 1.6 s. SIGTERM is its graceful
        # one, which here waited its full 30 s for the worker after the importances were read.
        def stop() -> None:
            server.stop(signal.SIGINT)
    try:
        wait_for_http(f"{url}/api/meta", server=server, what="optuna-dashboard")
        studies = requests.get(f"{url}/api/studies", timeout=30).json()["study_summaries"]
        (study_id,) = [s["study_id"] for s in studies if s["study_name"] == study_name]
        study = requests.get(f"{url}/api/studies/{study_id}", params={"after": 0},
                             timeout=60).json()
        assert requests.get(f"{url}/dashboard", timeout=30).status_code == 200
        importances = requests.get(f"{url}/api/studies/{study_id}/param_importances",
                                   timeout=60)
        assert importances.status_code == 200, importances.text
        return study
    finally:
        stop()


def chromium():
    """Headless Chromium (Debian's) driven by Selenium, with nothing it would fetch by itself."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver), options=options)


def keep_artifacts(name: str, *paths: Path) -> None:
    """Copies of files and folders under PIPELINE_TEST_ARTIFACTS/name, when that is set (CI
    keeps what a failed test leaves to read)."""
    import shutil

    keep = os.environ.get("PIPELINE_TEST_ARTIFACTS")
    if not keep:
        return
    for path in paths:
        target = Path(keep) / name / path.name
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.sock", "sockets"))
        elif path.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)


def keep_screenshot(browser, shot: Path) -> Path:
    """The browser's window as a PNG at ``shot``, and a copy under PIPELINE_TEST_ARTIFACTS when
    that is set (CI keeps what the browser tests saw)."""
    import shutil

    browser.save_screenshot(str(shot))
    keep = os.environ.get("PIPELINE_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    return shot
