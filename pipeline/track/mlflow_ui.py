"""`pipeline ui`: MLflow's own UI for the configured tracking store, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from urllib.parse import urlparse

import mlflow

from pipeline.core import env
from pipeline.core.errors import UsageError
from pipeline.core.signals import interrupt_on_signals


def _absolute(uri: str) -> str:
    """sqlite:///mlflow.db is relative to the working folder; the server gets it absolute."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri.removeprefix("sqlite:///"))
    return uri


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ui_command(host: str, port: int) -> tuple[list[str] | None, str]:
    """The command that serves the UI and its URL; no command when the store is a server."""
    uri = mlflow.get_tracking_uri()
    if urlparse(uri).scheme in ("http", "https"):
        return None, uri  # a tracking server already serves the UI
    if not port_is_free(host, port):
        raise UsageError(f"port {port} on {host} is in use; choose another with --port")
    # One person browsing needs one server process. MLflow's default is 4 request workers plus
    # a job runner and 7 task consumers (GenAI jobs `pipeline` never submits): 14 processes,
    # ~25 s to answer on 2 cores instead of ~8 s with 2 (measured: docs/mlflow.md).
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", _absolute(uri),
               "--host", host, "--port", str(port), "--workers", "1"]
    return command, f"http://{host}:{port}"


def ui_env() -> dict[str, str]:
    """The server's environment: ours, without MLflow's job runner (see ui_command)."""
    return {**os.environ, **{d.name: d.value for d in env.UI_SERVER_DEFAULTS}}


def run_ui(host: str, port: int, echo=print) -> int:
    command, url = ui_command(host, port)
    if command is None:
        echo(f"MLFLOW_TRACKING_URI is a tracking server; its UI is at {url}")
        return 0
    echo(f"MLflow UI for {mlflow.get_tracking_uri()} at {url}  (Ctrl-C to stop)")
    # The server runs in its own process group: its workers are grandchildren, and stopping
    # only the direct child would leave them serving the port.
    server = subprocess.Popen(command, start_new_session=True, env=ui_env())
    try:
        with interrupt_on_signals():
            return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server)


def _stop_group(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
