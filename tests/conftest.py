"""Shared fixtures: real services on loopback (moto's S3 server, PostgreSQL), and a clean AIRFLOW_HOME.

A service that is missing skips the test with the reason locally, and fails it under CI=true.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


#: ``make test-floor`` runs the tests marked ``floor`` against the lowest versions pyproject.toml allows:
#: those of these modules that need no service (by marker or fixture) and no pipeline run.
FLOOR_MODULES = ("test_packaging", "test_snapshot_store", "test_training", "test_tuning", "test_registry",
                 "test_openlineage")
SERVICE_MARKERS = {"postgres", "s3", "scheduler", "packaging"}
SERVICE_FIXTURES = {"moto_s3", "s3_store", "postgres_databases", "postgres_url", "optuna_postgres", "mlflow_server",
                    "mlflow_conn", "spark", "spark_cluster", "cluster", "pipeline", "migrated_home"}
#: Tests of those modules that check the locked environment itself, not the code's floors.
LOCK_ONLY = {"test_a_run_records_data_code_params_environment_and_airflow_context"}  # scikit-learn==<lock>


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``floor`` marker on the floor environment's tests."""
    for item in items:
        if (item.path.stem in FLOOR_MODULES and item.name not in LOCK_ONLY
                and not SERVICE_MARKERS & {mark.name for mark in item.iter_markers()}
                and not SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.floor)


def require_service(ok: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a real service the test needs is not there."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def wait_until(condition: Callable[[], bool], timeout: float = 120.0, interval: float = 0.01) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False): a bounded wait on an event,
    generous so that a slow machine only waits longer, never fails."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate a service started by a fixture, and kill it if it does not stop in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(autouse=True)
def airflow_home(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own AIRFLOW_HOME, so default stores and stat caches never leak between tests."""
    home = tmp_path_factory.mktemp("airflow_home")
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.delenv("AIRFLOW_MLOPS_STORE", raising=False)
    return home


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 server as a real HTTP endpoint on 127.0.0.1, in its own process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        require_service(wait_for_port(port, process=process), "moto's S3 server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


@pytest.fixture
def s3_store(moto_s3, monkeypatch):
    """A fresh bucket on moto, an Airflow AWS connection pointing at it, and its store URI."""
    import boto3

    conn = {
        "conn_type": "aws",
        "login": "testing-key-id",
        "password": "testing-secret-key",
        "extra": {"endpoint_url": moto_s3, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_TEST", json.dumps(conn))
    bucket = f"snapshots-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=moto_s3, region_name="us-east-1",
        aws_access_key_id="testing-key-id", aws_secret_access_key="testing-secret-key",
    )
    client.create_bucket(Bucket=bucket)
    return {"uri": f"s3://{bucket}/team/store", "conn_id": "aws_test", "client": client, "bucket": bucket}


@pytest.fixture(scope="session")
def postgres_databases():
    """Creates databases of its own on the local PostgreSQL, one per call, dropped after the session."""
    try:
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=5432, dbname="postgres", user=_pg_user(), connect_timeout=5)
    except Exception as error:  # noqa: BLE001 - any failure means the service is not usable
        require_service(False, f"PostgreSQL on 127.0.0.1:5432 is not reachable: {error}")
    admin.autocommit = True
    created: list[str] = []

    def create(purpose: str) -> str:
        name = f"airflow_mlops_{purpose}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg2://{_pg_user()}@127.0.0.1:5432/{name}"

    try:
        yield create
    finally:
        with admin.cursor() as cursor:
            for name in created:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def postgres_url(postgres_databases) -> str:
    """The MLflow server's backend store database for this test session."""
    return postgres_databases("mlflow")


def _pg_user() -> str:
    return os.environ.get("PGUSER") or "postgres"


def run_cli(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the installed ``airflow-mlops`` console script."""
    result = subprocess.run(
        [str(VENV_BIN / "airflow-mlops"), *args], capture_output=True, text=True, env=env or os.environ.copy()
    )
    if check and result.returncode != 0:
        raise AssertionError(f"airflow-mlops {' '.join(args)} failed: {result.stderr}")
    return result


MLFLOW_ADMIN = "admin"
MLFLOW_ADMIN_PASSWORD = "s3cret-Passw0rd-for-tests"


@pytest.fixture(scope="session")
def mlflow_server(postgres_url, tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a PostgreSQL backend store and basic auth, as teams run it."""
    root = tmp_path_factory.mktemp("mlflow_server")
    auth_config = root / "basic_auth.ini"
    auth_config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {MLFLOW_ADMIN}\nadmin_password = {MLFLOW_ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # As a team would run it: without this cache the server checks the password hash (scrypt, by
        # design slow) on every request, and a training run sends dozens.
        "auth_cache_ttl_seconds = 600\n"
    )
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config), "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex}
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [
            str(VENV_BIN / "mlflow"), "server", "--app-name", "basic-auth",
            "--backend-store-uri", postgres_url, "--artifacts-destination", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
    )
    try:
        started = wait_for_port(port, timeout=90, process=process)
        require_service(started, f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "log": root / "server.log"}
    finally:
        stop_process(process)
        log.close()


def mlflow_connection_env(mlflow_server) -> dict[str, str]:
    """The environment variable defining Airflow connection ``mlflow_test``: the test server, with its credentials."""
    conn = {
        "conn_type": "mlflow", "host": "127.0.0.1", "port": mlflow_server["port"], "schema": "http",
        "login": MLFLOW_ADMIN, "password": MLFLOW_ADMIN_PASSWORD,
    }
    return {"AIRFLOW_CONN_MLFLOW_TEST": json.dumps(conn)}


@pytest.fixture
def mlflow_conn(mlflow_server, monkeypatch) -> str:
    """An Airflow ``mlflow`` connection to the test server, with its credentials; returns the conn id."""
    for name, value in mlflow_connection_env(mlflow_server).items():
        monkeypatch.setenv(name, value)
    return "mlflow_test"


@pytest.fixture(scope="session")
def spark():
    """One local[2] Spark session for the whole test run (JVM start-up is slow), stopped at the end."""
    from pyspark.sql import SparkSession

    # py4j logs at interpreter exit, after pytest closed its streams: keep its INFO chatter out.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    session = (
        SparkSession.builder.master("local[2]").appName("airflow-mlops-tests")
        .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4").getOrCreate()
    )
    yield session
    session.stop()


def classification_snapshot(root: Path):
    """A 400-row, 5-feature classification table snapshotted into a local store under ``root``: (store, record)."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    from airflow_mlops.snapshots import SnapshotStore

    X, y = make_classification(n_samples=400, n_features=5, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)]).assign(label=y)
    frame["f0"] = np.round(frame["f0"], 6)
    data = root / "data"
    data.mkdir()
    frame.to_csv(data / "train.csv", index=False)
    store = SnapshotStore.open(str(root / "store"))
    return store, store.snapshot(data)


@pytest.fixture
def snapshot(tmp_path):
    """A classification table snapshotted into a local store; returns (store, record)."""
    return classification_snapshot(tmp_path)


@pytest.fixture
def markers(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    monkeypatch.setenv("TRAIN_MARKER_DIR", str(path))
    return path


@pytest.fixture
def embedded_client(airflow_home, monkeypatch):
    """A client on the embedded store (the default with no connection); MLflow points there meanwhile.

    Sets MLflow's global rather than calling ``mlflow.set_tracking_uri``, which would also export
    MLFLOW_TRACKING_URI and leave it pinned afterwards.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from airflow_mlops.embedded import embedded_tracking_store

    uri = embedded_tracking_store()
    monkeypatch.setattr(tracking_utils, "_tracking_uri", uri)
    return mlflow.MlflowClient(uri)


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A real Spark standalone cluster on loopback, one master and one worker, from the installed pyspark;
    one for the session (the ETL tests and the compose topology), as its start-up is slow."""
    import shutil
    import urllib.request

    spark_class = VENV_BIN / "spark-class"
    require_service(spark_class.exists() and shutil.which("java") is not None, "spark-class or java is not installed")
    root = tmp_path_factory.mktemp("spark_cluster")
    import pyspark

    env = {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(root), "SPARK_WORKER_DIR": str(root / "work"),
           "SPARK_LOCAL_DIRS": str(root / "local")}
    port, master_ui, worker_port, worker_ui = free_port(), free_port(), free_port(), free_port()
    log = open(root / "cluster.log", "w")
    daemons = [subprocess.Popen(
        [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(master_ui)], stdout=log, stderr=subprocess.STDOUT, env=env)]

    def alive_workers() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{master_ui}/json/", timeout=2) as response:
                return json.load(response).get("aliveworkers", 0)
        except OSError:
            return 0

    try:
        started = wait_for_port(port, timeout=90, process=daemons[0])
        if started:
            daemons.append(subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(worker_port),
                 "--webui-port", str(worker_ui), "--cores", "2", "--memory", "2g", f"spark://127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT, env=env))
            deadline = time.monotonic() + 90
            while alive_workers() < 1 and time.monotonic() < deadline and daemons[1].poll() is None:
                time.sleep(0.5)
            started = alive_workers() >= 1
        require_service(started, f"Spark standalone cluster did not start: {(root / 'cluster.log').read_text()[-2000:]}")
        yield {"master": f"spark://127.0.0.1:{port}", "host": "spark://127.0.0.1", "port": port, "ui": f"http://127.0.0.1:{master_ui}"}
    finally:
        for daemon in reversed(daemons):
            stop_process(daemon, timeout=30)
        log.close()
