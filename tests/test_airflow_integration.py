"""The provider inside a real Airflow: registration, DAG parsing cost, and DAG runs via ``airflow dags test``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, VENV_BIN

HEAVY_MODULES = ("mlflow", "pyspark", "sklearn", "optuna", "pandas")


def airflow_env(home: Path) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    return env


def airflow(home: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(VENV_BIN / "airflow"), *args], capture_output=True, text=True, env=airflow_env(home), timeout=300
    )
    assert result.returncode == 0, f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def migrated_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("airflow")
    airflow(home, "db", "migrate")
    return home


def test_airflow_lists_the_provider(migrated_home):
    providers = json.loads(airflow(migrated_home, "providers", "list", "-o", "json").stdout)
    assert "airflow-mlops" in {provider["package_name"] for provider in providers}


@pytest.mark.parametrize("dag_file", sorted(p.name for p in (REPO / "dags").glob("*.py")))
def test_dag_files_parse_without_heavy_imports(dag_file):
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('dag_under_test', {str(REPO / 'dags' / dag_file)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_flagship_dag_snapshots_aggregates_tunes_trains_registers_and_scores_on_the_days_data(migrated_home):
    conf = {"rows": 2000, "seed": 3, "n_trials": 3}
    airflow(migrated_home, "dags", "test", "fraud_detection", "2026-01-02", "--conf", json.dumps(conf))

    store = migrated_home / "airflow_mlops" / "snapshots"
    log = subprocess.run(
        [str(VENV_BIN / "airflow-mlops"), "log", "--format", "json", "--store", str(store)],
        capture_output=True, text=True, check=True,
    )
    records = {record["airflow"]["task_id"]: record for record in json.loads(log.stdout)}
    assert set(records) == {"snapshot_raw", "customer_features", "score_customers"}
    record, features, scored = records["snapshot_raw"], records["customer_features"], records["score_customers"]
    assert record["source"] == str(migrated_home / "airflow_mlops" / "data" / "raw" / "2026-01-02")
    assert record["files"] == 1
    assert record["airflow"]["dag_id"] == "fraud_detection"
    assert record["airflow"]["try_number"] == 1
    assert record["airflow"]["logical_date"].startswith("2026-01-02")
    rows = (Path(record["source"]) / "transactions.csv").read_text().count("\n")
    assert rows == 2001  # header + the rows asked for in the trigger's params
    assert features["parents"] == [record["snapshot_id"]]  # lineage: raw transactions -> customer features
    assert features["extra"]["code"]["transform"] == "airflow_mlops.etl.fraud:customer_features"
    assert features["extra"]["spark"]["master"] == "local[*]"
    assert features["extra"]["tables"][""]["rows"] == 100  # 2000 transactions by rows/20 customers

    with sqlite3.connect(migrated_home / "airflow.db") as db:
        events = db.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
        ).fetchall()
    assert sorted((uri, json.loads(extra)["snapshot_id"]) for uri, extra in events) == [
        ("x-airflow-mlops-snapshot://fraud_detection/customer_features", features["snapshot_id"]),
        ("x-airflow-mlops-snapshot://fraud_detection/score_customers", scored["snapshot_id"]),
        ("x-airflow-mlops-snapshot://fraud_detection/snapshot_raw", record["snapshot_id"]),
    ]

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{migrated_home / 'airflow_mlops' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fraud_detection").experiment_id])
    # two mapped tuning tasks (tuning_workers) shared one study: n_trials complete trials in all
    studies = [r for r in runs if r.data.tags["airflow.task_id"] == "tune_fraud_model" and "mlflow.parentRunId" not in r.data.tags]
    assert len(studies) == 2 and {s.info.status for s in studies} == {"FINISHED"}
    (study_name,) = {s.data.tags["optuna.study_name"] for s in studies}
    assert study_name == f"fraud_detection.{record['airflow']['run_id']}"
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {s.info.run_id for s in studies}]
    assert len(trials) == 3  # n_trials from the trigger's params, each trial one nested run
    import optuna

    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{migrated_home / 'airflow_mlops' / 'optuna.db'}")
    assert [t.state.name for t in study.trials].count("COMPLETE") == 3
    (run,) = [r for r in runs if r.data.tags["airflow.task_id"] == "train_fraud_model"]
    assert run.info.status == "FINISHED"
    assert {key: run.data.params[key] for key in study.best_params} == {k: str(v) for k, v in study.best_params.items()}
    assert run.data.tags["airflow_mlops.snapshot_id"] == features["snapshot_id"]
    assert run.data.tags["airflow.run_id"] == record["airflow"]["run_id"]
    assert run.data.tags["mlflow.source.git.commit"]
    with sqlite3.connect(migrated_home / "airflow.db") as db:
        links = db.execute("SELECT task_id, map_index, value FROM xcom WHERE key = '_link_MlflowRunLink'").fetchall()
    by_task = {(task_id, map_index): json.loads(value) for task_id, map_index, value in links}
    assert by_task[("train_fraud_model", -1)].endswith(f"/runs/{run.info.run_id}")
    assert {url.rsplit("/", 1)[1] for (task_id, _), url in by_task.items() if task_id == "tune_fraud_model"} == {
        s.info.run_id for s in studies}
    with sqlite3.connect(migrated_home / "airflow.db") as db:
        (spark_ui,) = db.execute("SELECT value FROM xcom WHERE key = '_link_SparkUILink'").fetchone()
    assert json.loads(spark_ui).startswith("http://")

    # registered, gated (the first version is champion), and the champion scored the day's customers
    version = client.get_model_version_by_alias("fraud_detection", "champion")
    assert str(version.version) == "1" and version.run_id == run.info.run_id
    assert version.tags["airflow_mlops.gate.decision"] == "champion"
    assert scored["parents"] == [features["snapshot_id"]]
    assert scored["extra"]["model"] == {"model_uri": "models:/fraud_detection/1", "name": "fraud_detection",
                                        "version": "1", "run_id": run.info.run_id, "alias": "champion"}

    # lineage both ways through the same records, from the CLI
    env = {**os.environ, "AIRFLOW_HOME": str(migrated_home)}

    def lineage(ref: str) -> dict:
        shown = subprocess.run([str(VENV_BIN / "airflow-mlops"), "lineage", ref, "--format", "json"],
                               capture_output=True, text=True, env=env)
        assert shown.returncode == 0, shown.stderr
        return {node["id"]: node for node in json.loads(shown.stdout)["nodes"]}

    upstream = lineage("models:/fraud_detection@champion")
    assert {f"snapshot:{record['snapshot_id']}", f"snapshot:{features['snapshot_id']}", f"run:{run.info.run_id}",
            "model_version:fraud_detection/1"} <= set(upstream)
    downstream = lineage(record["snapshot_id"][:12])
    assert {"model_version:fraud_detection/1", f"snapshot:{scored['snapshot_id']}", *(f"run:{s.info.run_id}" for s in studies)} <= set(downstream)


def test_make_up_serves_both_uis_on_the_demo_stores_and_make_down_stops_every_process(tmp_path):
    """`make up` starts `airflow standalone` and `mlflow ui` (ports printed); `make down` leaves nothing running."""
    import psutil

    from tests.conftest import free_port

    home = tmp_path / "demo"
    ports = {"AIRFLOW_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())}
    make = ["make", "-C", str(REPO), f"DEMO_HOME={home}", *(f"{k}={v}" for k, v in ports.items())]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "MLFLOW_"))}
    try:
        up = subprocess.run([*make, "up"], capture_output=True, text=True, env=env, timeout=420)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert f"http://127.0.0.1:{ports['AIRFLOW_PORT']}" in up.stdout and f"http://127.0.0.1:{ports['MLFLOW_PORT']}" in up.stdout
        groups = [int((home / f"{name}.pid").read_text()) for name in ("standalone", "mlflow-ui")]
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{ports['AIRFLOW_PORT']}/api/v2/monitor/health", timeout=30) as health:
            parts = json.load(health)
        assert {part: parts[part]["status"] for part in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == {
            "metadatabase": "healthy", "scheduler": "healthy", "dag_processor": "healthy", "triggerer": "healthy"}
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['MLFLOW_PORT']}/health", timeout=30) as health:
            assert health.read() == b"OK"
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        landed = tmp_path / "landed.csv"
        landed.write_text("nameOrig,amount\nC1,10.5\n")
        run = _run_as_admin(f"http://127.0.0.1:{ports['AIRFLOW_PORT']}", password, "fraud_transactions_landed",
                            {"path": str(landed)})
        # the task supervisor reached the execution API on the chosen port: the task ran, on its first try
        assert (run["state"], run["tries"]) == ("success", {"snapshot": 1}), run
        assert "[airflow_mlops]\nmlflow_ui_url = http://127.0.0.1:" + ports["MLFLOW_PORT"] in (home / "airflow.cfg").read_text()
    finally:
        down = subprocess.run([*make, "down"], capture_output=True, text=True, env=env, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    left = [p.info for p in psutil.process_iter(["pid", "cmdline"]) if _in_groups(p, groups)]
    assert not left, left
    assert not list(home.glob("*.pid"))


def _run_as_admin(base: str, password: str, dag_id: str, conf: dict) -> dict:
    """As a user of `make up`: log in, wait for the DAG to be parsed, unpause it, trigger it with ``conf``
    through the REST API, and wait for the run to finish; its state and each task's try number."""
    import urllib.error
    import urllib.request

    def call(method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            base + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, {"detail": error.read().decode(errors="replace")}

    status, login = call("POST", "/auth/token", {"username": "admin", "password": password})
    assert status == 201, login
    token = login["access_token"]
    deadline = time.monotonic() + 180
    while call("GET", f"/api/v2/dags/{dag_id}", token=token)[0] != 200:  # the dag-processor's first parse
        assert time.monotonic() < deadline, f"{dag_id} was not parsed"
        time.sleep(1)
    assert call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}, token)[0] == 200
    status, run = call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}, token)
    assert status == 200, run
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}"
    deadline = time.monotonic() + 300
    while (run := call("GET", path, token=token)[1])["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, run
        time.sleep(1)
    tasks = call("GET", f"{path}/taskInstances", token=token)[1]["task_instances"]
    return {"state": run["state"], "tries": {ti["task_id"]: ti["try_number"] for ti in tasks}}


def _in_groups(process, groups: list[int]) -> bool:
    """A live process of one of ``groups`` (a zombie has exited: it only waits for init to reap it)."""
    import psutil

    try:
        return os.getpgid(process.pid) in groups and process.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
        return False
