"""Where an MLflow connection's secrets may go: the server they belong to, and nowhere else.

Not the process environment (every child process inherits it), not another host (a separate model
registry), not the task's log output, not the run's params or tags.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from airflow_mlops.hooks.mlflow import MlflowHook
from tests.conftest import MLFLOW_ADMIN, MLFLOW_ADMIN_PASSWORD
from tests.task_process import attempt_config, run_in_process

BASIC_CREDENTIALS = base64.b64encode(f"{MLFLOW_ADMIN}:{MLFLOW_ADMIN_PASSWORD}".encode()).decode()
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def child_environment() -> str:
    """The environment a child process started now inherits, as ``env`` prints it."""
    return subprocess.run(["env"], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def mlflow_uris_unset(monkeypatch):
    """MLflow's tracking and registry URI not set, neither in its globals nor in the environment."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    for name in URI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.postgres
def test_a_password_in_the_tracking_uri_stays_out_of_the_environment_and_mlflow_is_restored(
    mlflow_server, mlflow_uris_unset, monkeypatch
):
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    uri = mlflow_server["url"].replace("http://", f"http://{MLFLOW_ADMIN}:{MLFLOW_ADMIN_PASSWORD}@")
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_URI", json.dumps({"conn_type": "mlflow", "extra": {"tracking_uri": uri}}))
    hook = MlflowHook("mlflow_uri")
    assert hook.settings.tracking_uri == mlflow_server["url"]  # the password moved into the header
    assert MLFLOW_ADMIN_PASSWORD not in (hook.run_url("1", "abc") or "")
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_URI")  # a deployment keeps connections in its metadata DB or secrets backend
    environment = dict(os.environ)
    uris = mlflow.get_tracking_uri(), mlflow.get_registry_uri()

    with hook.tracking_session():
        experiment_id = mlflow.create_experiment(f"uri-{uuid.uuid4().hex[:8]}")  # the fluent API reaches the server
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_param("alpha", "0.5")
        during = child_environment()

    assert mlflow.MlflowClient(uri).get_run(run.info.run_id).data.params == {"alpha": "0.5"}
    after = child_environment()
    for seen_by_child in (during, after):
        assert MLFLOW_ADMIN_PASSWORD not in seen_by_child
        assert not any(name in seen_by_child for name in URI_VARIABLES)
    assert dict(os.environ) == environment
    assert tracking_utils._tracking_uri is None and registry_utils._registry_uri is None  # "not set", as before
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == uris


@pytest.fixture
def registry_server():
    """A real HTTP server on loopback playing a separate model registry: records each request's
    headers and answers registered-model searches. Yields its URL and the requests it received."""
    received: list[dict[str, str]] = []

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            received.append({"path": self.path, **{name.lower(): value for name, value in self.headers.items()}})
            found = self.path.split("?")[0].endswith("/registered-models/search")
            body = json.dumps({"registered_models": []} if found else {"error_code": "ENDPOINT_NOT_FOUND"}).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_port}", "received": received}
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def split_connection(monkeypatch, mlflow_server, registry_uri: str) -> str:
    """A connection to the test server, with its credentials, and a separate registry; returns its id."""
    conn = {
        "conn_type": "mlflow", "host": "127.0.0.1", "port": mlflow_server["port"], "schema": "http",
        "login": MLFLOW_ADMIN, "password": MLFLOW_ADMIN_PASSWORD, "extra": {"registry_uri": registry_uri},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_SPLIT", json.dumps(conn))
    return "mlflow_split"


@pytest.mark.postgres
def test_credentials_go_to_the_tracking_server_only_not_to_a_separate_registry(
    mlflow_server, registry_server, monkeypatch
):
    import mlflow

    conn_id = split_connection(monkeypatch, mlflow_server, registry_server["url"])
    with MlflowHook(conn_id).tracking_session() as client:
        assert list(client.search_registered_models()) == []
        assert list(mlflow.search_registered_models()) == []  # the fluent API goes to the registry too
        experiment_id = client.create_experiment(f"split-{uuid.uuid4().hex[:8]}")  # the server demands credentials
        name = f"fluent-{uuid.uuid4().hex[:8]}"
        assert client.get_experiment(mlflow.create_experiment(name)).name == name

    received = registry_server["received"]
    assert len(received) == 2 and all(r["path"].startswith("/api/2.0/mlflow/registered-models/search") for r in received)
    assert not any("authorization" in request for request in received), received
    anonymous = requests.get(f"{mlflow_server['url']}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id})
    assert anonymous.status_code == 401  # so the experiment was created with the session's credentials


@pytest.mark.postgres
@pytest.mark.parametrize("given_in", ["uri", "netrc"])
def test_a_separate_registry_keeps_credentials_of_its_own(
    given_in, tmp_path, mlflow_server, registry_server, monkeypatch
):
    registry_uri = registry_server["url"]
    if given_in == "uri":
        registry_uri = registry_uri.replace("http://", "http://registry:registry-pw@")
    else:
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login registry password registry-pw\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))

    with MlflowHook(split_connection(monkeypatch, mlflow_server, registry_uri)).tracking_session() as client:
        client.search_registered_models()
        client.create_experiment(f"own-{uuid.uuid4().hex[:8]}")

    registry_credentials = "Basic " + base64.b64encode(b"registry:registry-pw").decode()
    assert [request.get("authorization") for request in registry_server["received"]] == [registry_credentials]


@pytest.mark.postgres
def test_a_training_process_on_an_auth_server_writes_the_password_nowhere(tmp_path, snapshot, mlflow_server, mlflow_conn,
                                                                           markers):
    """A run on a server with basic auth and a PostgreSQL backend, as teams run it: recorded in full,
    and the password in neither the task's output (MLflow at DEBUG) nor the run's params and tags."""
    _, record = snapshot
    config = attempt_config(
        tmp_path, record.uri, 1, train_fn="tests.train_functions:counting_train",
        hyperparams={"C": 0.5}, mlflow_conn_id=mlflow_conn,
    )
    process = run_in_process(config, env={**os.environ, "MLFLOW_LOGGING_LEVEL": "DEBUG"})
    assert process.wait(timeout=300) == 0, Path(tmp_path / "attempt-1.log").read_text()[-3000:]
    log = Path(tmp_path / "attempt-1.log").read_text()
    result = json.loads(Path(config["output"]).read_text())["result"]

    endpoint = f"{mlflow_server['url']}/api/2.0/mlflow/runs/get"
    assert requests.get(endpoint, params={"run_id": result["run_id"]}).status_code == 401  # it demands credentials
    run = requests.get(endpoint, params={"run_id": result["run_id"]}, auth=(MLFLOW_ADMIN, MLFLOW_ADMIN_PASSWORD)).json()["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {p["key"]: p["value"] for p in run["data"]["params"]}["C"] == "0.5"
    assert "train_rows" in {m["key"] for m in run["data"]["metrics"]}
    assert run["inputs"]["dataset_inputs"][0]["dataset"]["digest"] == record.snapshot_id[:32]
    recorded = json.dumps([run["data"].get("params", []), run["data"].get("tags", [])])
    assert "airflow.task_id" in recorded  # the run's tags really are there to check
    for secret in (MLFLOW_ADMIN_PASSWORD, BASIC_CREDENTIALS):
        assert secret not in log
        assert secret not in recorded


@pytest.mark.postgres
def test_get_conn_is_a_client_with_the_connections_credentials_and_leaves_them_nowhere(
    tmp_path, mlflow_server, mlflow_conn, mlflow_uris_unset, caplog, monkeypatch
):
    """As Airflow users expect of ``get_conn``: an MlflowClient that works on the server as the connection
    logs in, artifacts (through the server's proxy) included, with nothing set in the environment."""
    import logging

    import mlflow

    hook = MlflowHook(mlflow_conn)
    assert hook.settings.auth_header  # read now: the connection goes away, as in a deployment's secrets backend
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_TEST")
    environment = dict(os.environ)
    caplog.set_level(logging.DEBUG)
    client = hook.get_conn()
    assert isinstance(client, mlflow.MlflowClient)
    experiment_id = client.create_experiment(f"get-conn-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    (tmp_path / "note.txt").write_text("logged through get_conn")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run.info.run_id)
    assert dict(os.environ) == environment  # between calls the credentials are nowhere
    assert MLFLOW_ADMIN_PASSWORD not in child_environment()

    anonymous = requests.get(f"{mlflow_server['url']}/api/2.0/mlflow/runs/get", params={"run_id": run.info.run_id})
    assert anonymous.status_code == 401  # so the client's calls carried the connection's credentials
    assert client.get_run(run.info.run_id).data.params == {"alpha": "0.5"}
    assert [item.path for item in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    downloaded = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "back"))
    assert Path(downloaded).read_text() == "logged through get_conn"
    for secret in (MLFLOW_ADMIN_PASSWORD, BASIC_CREDENTIALS):
        assert secret not in repr(client)
        assert secret not in caplog.text


def test_the_ui_links_of_a_run_and_a_model_version_come_from_the_hook(monkeypatch):
    conn = {"conn_type": "mlflow", "host": "mlflow.example.com", "schema": "https",
            "extra": {"ui_url": "https://ui.example.com/"}}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_LINKS", json.dumps(conn))
    hook = MlflowHook("mlflow_links")
    assert hook.run_url("3", "abc") == "https://ui.example.com/#/experiments/3/runs/abc"
    assert hook.model_version_url("fraud detection", 7) == "https://ui.example.com/#/models/fraud%20detection/versions/7"
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_LINKS", json.dumps({"conn_type": "mlflow", "extra": {"tracking_uri": "sqlite:///x.db"}}))
    assert MlflowHook("mlflow_links").model_version_url("m", 1) is None  # no UI to link to
