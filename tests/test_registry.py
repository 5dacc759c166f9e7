"""RegisterModelOperator and the registry core against a real MLflow server (PostgreSQL backend, basic auth).

Models of known quality on the ``classification_snapshot`` table: logistic regressions on feature
subsets (held-out roc_auc: f4 ≈ 0.51, f3 ≈ 0.84, f0 ≈ 0.93, f1 ≈ 0.96, f0+f1 ≈ 0.97, f1+f2+f3 ≈ 0.97).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import (
    MLFLOW_ADMIN,
    MLFLOW_ADMIN_PASSWORD,
    classification_snapshot,
    mlflow_connection_env,
    run_cli,
    wait_until,
)
from tests.task_process import attempt_config, run_attempt, run_in_process

FEATURE_SETS = {"f0": ["f0"], "f4": ["f4"], "f3": ["f3"], "f1": ["f1"], "f01": ["f0", "f1"], "f123": ["f1", "f2", "f3"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_server):
    """The snapshot and one finished MlflowTrainOperator run per feature set, shared by the module (training is slow).

    Returns (store, record, {feature set name: the operator's result}).
    """
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_HOME", str(root / "airflow_home"))
        for name, value in mlflow_connection_env(mlflow_server).items():
            patch.setenv(name, value)
        store, record = classification_snapshot(root)
        runs = {}
        for name, features in FEATURE_SETS.items():
            config = attempt_config(root, record.uri, 1, estimator="sklearn.linear_model.LogisticRegression",
                                    hyperparams={"max_iter": 500}, features=features, mlflow_conn_id="mlflow_test")
            config["task_id"] = f"train_{name}"
            runs[name] = run_attempt(config)["result"]
    return store, record, runs


def register_config(tmp_path, model_name, training, mlflow_conn, n, try_number=1, **gate) -> dict:
    """An attempt of task ``register`` in its own DAG run ``n``."""
    return {
        "dag_id": "retrain", "run_id": f"scheduled__{n}", "task_id": "register", "try_number": try_number,
        "logical_date": "2026-01-01T00:00:00+00:00", "output": str(tmp_path / f"register-{n}-{try_number}.json"),
        "operator_class": "RegisterModelOperator",
        "operator": {"model_name": model_name, "training": training, "mlflow_conn_id": mlflow_conn, "floor": 0.7, **gate},
    }


def own_score(store, record, model_uri, tmp_path) -> float:
    """roc_auc of a model on the held-out split of the snapshot, computed here independently."""
    import mlflow
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(store.materialize(record.snapshot_id, tmp_path / "own") / "train.csv")
    X, y = frame.drop(columns=["label"]), frame["label"]
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)
    model = mlflow.sklearn.load_model(model_uri)
    return float(roc_auc_score(y_test, model.predict_proba(X_test[list(model.feature_names_in_)])[:, 1]))


@pytest.fixture
def model_name() -> str:
    return f"fraud-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(mlflow_conn):
    from airflow_mlops.hooks.mlflow import MlflowHook

    with MlflowHook(mlflow_conn).tracking_session() as session:
        yield session


def test_the_gate_rule_on_scores():
    from airflow_mlops.registry.gate import GateRule, decide

    rule = GateRule("root_mean_squared_error", min_improvement=0.1, relative=True, guard_metrics={"max_error": 0.5})
    assert decide(rule, {"root_mean_squared_error": 0.95, "max_error": 3.0}, {"root_mean_squared_error": 1.0, "max_error": 3.0}).decision == "challenger"
    assert decide(rule, {"root_mean_squared_error": 0.8, "max_error": 3.0}, {"root_mean_squared_error": 1.0, "max_error": 3.0}).decision == "champion"
    guarded = decide(rule, {"root_mean_squared_error": 0.8, "max_error": 4.0}, {"root_mean_squared_error": 1.0, "max_error": 3.0})
    assert guarded.decision == "challenger" and "max_error gets worse by 1" in guarded.reason
    floor = GateRule("roc_auc", floor=0.7)
    assert decide(floor, {"roc_auc": 0.69}, None).decision == "rejected"
    assert decide(floor, {"roc_auc": 0.71}, None).decision == "champion"
    assert decide(floor, {"roc_auc": 0.8}, {"roc_auc": 0.8}).decision == "challenger"  # a tie keeps the champion


@pytest.mark.postgres
def test_gate_decisions_history_rollback_and_promote(tmp_path, trained, mlflow_server, mlflow_conn, client, model_name):
    from airflow_mlops.registry.history import history

    store, record, runs = trained

    def register(name, n):
        outcome = run_attempt(register_config(tmp_path, model_name, runs[name], mlflow_conn, n))
        return outcome["result"], outcome["xcom"]

    first, xcom = register("f0", 1)
    assert first["decision"] == "champion" and first["aliases"] == ["champion"] and first["champion_score"] is None
    assert xcom["_link_MlflowModelVersionLink"] == f"{mlflow_server['url']}/#/models/{model_name}/versions/1"
    tags = client.get_model_version(model_name, "1").tags
    assert tags["airflow_mlops.training_run_id"] == runs["f0"]["run_id"]
    assert tags["airflow_mlops.snapshot_id"] == record.snapshot_id
    assert tags["airflow.dag_id"] == "retrain" and tags["airflow.task_id"] == "register"
    assert record.snapshot_id in client.get_model_version(model_name, "1").description

    below_floor, _ = register("f4", 2)
    assert below_floor["decision"] == "rejected" and below_floor["aliases"] == [] and "floor" in below_floor["reason"]

    worse, _ = register("f3", 3)
    assert worse["decision"] == "challenger" and worse["aliases"] == ["challenger"]
    # the champion was re-scored on the challenger's held-out rows, with the same metric definition
    assert worse["champion_score"] == pytest.approx(own_score(store, record, f"models:/{model_name}/1", tmp_path), abs=1e-12)
    assert worse["challenger_score"] == pytest.approx(own_score(store, record, f"models:/{model_name}/3", tmp_path), abs=1e-12)
    tags = client.get_model_version(model_name, "3").tags
    assert tags["airflow_mlops.gate.decision"] == "challenger" and tags["airflow_mlops.gate.champion_version"] == "1"
    evaluation = json.loads(tags["airflow_mlops.gate.evaluation_data"])
    assert evaluation["snapshot_id"] == record.snapshot_id and evaluation["split"] == "test" and evaluation["rows"] == 80

    better, _ = register("f01", 4)
    assert better["decision"] == "champion" and better["challenger_score"] > better["champion_score"]
    assert client.get_model_version_by_alias(model_name, "champion").version == "4"
    assert client.get_model_version_by_alias(model_name, "previous-champion").version == "1"

    entries = history(client, model_name)
    assert [(e["alias"], e["from_version"], e["to_version"]) for e in entries] == [
        ("champion", None, "1"), ("challenger", None, "3"), ("champion", "1", "4")
    ]
    assert entries[2]["by"] == "retrain/scheduled__4/register#1" and entries[2]["scores"]["metric"] == "roc_auc"

    env = {**os.environ, "MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN, "MLFLOW_TRACKING_PASSWORD": MLFLOW_ADMIN_PASSWORD}
    run_cli("rollback", model_name, "--reason", "alerts on version 4", "--tracking-uri", mlflow_server["url"], env=env, check=True)
    assert client.get_model_version_by_alias(model_name, "champion").version == "1"
    shown = run_cli("history", model_name, "--format", "json", "--tracking-uri", mlflow_server["url"], env=env, check=True)
    entries = json.loads(shown.stdout)
    assert len(entries) == 4 and entries[-1]["action"] == "rollback"
    assert (entries[-1]["from_version"], entries[-1]["to_version"], entries[-1]["reason"]) == ("4", "1", "alerts on version 4")
    assert entries[-1]["by"].startswith("cli:")
    again = run_cli("rollback", model_name, "--reason", "twice", "--tracking-uri", mlflow_server["url"], env=env)
    assert again.returncode == 2 and "no 'previous-champion' alias" in again.stderr

    run_cli("promote", model_name, "3", "--reason", "validated by hand", "--tracking-uri", mlflow_server["url"],
            env=env, check=True)
    assert client.get_model_version_by_alias(model_name, "champion").version == "3"
    assert client.get_model_version_by_alias(model_name, "previous-champion").version == "1"
    entry = history(client, model_name)[-1]
    assert (entry["action"], entry["from_version"], entry["to_version"], entry["reason"]) == ("promote", "1", "3", "validated by hand")
    twice = run_cli("promote", model_name, "3", "--reason", "again", "--tracking-uri", mlflow_server["url"], env=env)
    assert twice.returncode == 2 and "already the champion" in twice.stderr
    assert len(history(client, model_name)) == 5


@pytest.mark.postgres
def test_a_retry_after_the_version_was_created_finishes_the_promotion(tmp_path, trained, mlflow_conn, client, model_name):
    from airflow_mlops.registry.history import history
    from airflow_mlops.registry.registration import register

    weak, strong = trained[2]["f0"], trained[2]["f01"]
    run_attempt(register_config(tmp_path, model_name, weak, mlflow_conn, 1))

    version, created = register(client, model_name, strong)  # attempt 1 died right after this step
    assert created and version.version == "2" and not client.get_model_version(model_name, "2").aliases

    retried = run_attempt(register_config(tmp_path, model_name, strong, mlflow_conn, 2, try_number=2))["result"]
    assert retried["version"] == "2" and retried["decision"] == "champion"
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 2
    again = run_attempt(register_config(tmp_path, model_name, strong["run_id"], mlflow_conn, 2, try_number=3))["result"]
    assert again == retried  # the decision recorded on the version, not a second gate
    assert len(history(client, model_name)) == 2


@pytest.mark.postgres
def test_concurrent_promotions_end_with_the_best_as_champion(
    tmp_path, trained, mlflow_conn, client, model_name, postgres_url, monkeypatch
):
    from airflow_mlops.registry.history import history

    monkeypatch.setenv("AIRFLOW_CONN_REGISTRY_LOCK", json.dumps({"conn_type": "postgres", "extra": {"url": postgres_url}}))
    runs = [trained[2][name] for name in ("f3", "f0", "f1", "f01", "f123")]
    configs = [register_config(tmp_path, model_name, run, mlflow_conn, n, lock_conn_id="registry_lock")
               for n, run in enumerate(runs)]
    processes = [run_in_process(config) for config in configs]
    deadline = time.monotonic() + 300
    for process in processes:
        process.wait(timeout=max(1, deadline - time.monotonic()))
    assert [p.returncode for p in processes] == [0] * 5, [
        (tmp_path / f"register-{n}-1.log").read_text()[-2000:] for n, p in enumerate(processes) if p.returncode
    ]
    results = [json.loads((tmp_path / f"register-{n}-1.json").read_text())["result"] for n in range(5)]
    best = max(results, key=lambda result: result["challenger_score"])
    assert best["challenger_score"] == max(r["challenger_score"] for r in results)
    champion = client.get_model_version_by_alias(model_name, "champion")
    assert champion.tags["airflow_mlops.training_run_id"] == runs[4]["run_id"]
    assert champion.version == best["version"]
    assert len(history(client, model_name)) == 5
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 5


def waiting_for_promotion_lock(model_name: str, lock_url: str) -> bool:
    """Whether a contender is blocked on the model's promotion lock: a waiting advisory lock on its key in
    PostgreSQL's ``pg_locks``, or (file lock) a blocked ``flock`` of this process on a registry lock file in
    the kernel's ``/proc/locks``."""
    if lock_url:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        from airflow_mlops.registry.locks import lock_key

        key = lock_key(model_name) & 0xFFFF_FFFF_FFFF_FFFF  # pg_locks shows a bigint key as two unsigned halves
        engine = create_engine(lock_url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                return bool(connection.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1"),
                    {"high": key >> 32, "low": key & 0xFFFF_FFFF}).scalar())
        finally:
            engine.dispose()
    from airflow_mlops.config import mlops_home

    inodes = {path.stat().st_ino for path in (mlops_home() / "locks").glob("registry-*.lock")}
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "7: -> FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF" for a waiter
        if fields[1] == "->" and fields[2] == "FLOCK" and int(fields[5]) == os.getpid():
            if int(fields[6].rsplit(":", 1)[1]) in inodes:
                return True
    return False


@pytest.mark.parametrize("kind", ["file", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_promotion_lock_keeps_other_processes_out_until_released(kind, tmp_path, request):
    """Another process holds the lock: this one waits, and gets it once the other lets go."""
    import subprocess
    import sys
    import threading

    from airflow_mlops.registry.locks import promotion_lock

    url = request.getfixturevalue("postgres_url") if kind == "postgres" else ""
    acquired, release = tmp_path / "acquired", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, sys, time\n"
        "from airflow_mlops.registry.locks import promotion_lock\n"
        "with promotion_lock('model-a', sys.argv[1] or None):\n"
        "    pathlib.Path(sys.argv[2]).touch()\n"
        "    while not pathlib.Path(sys.argv[3]).exists():\n"
        "        time.sleep(0.05)\n"
    ), url, str(acquired), str(release)])
    try:
        deadline = time.monotonic() + 60
        while not acquired.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.05)
        got = threading.Event()

        def take() -> None:
            with promotion_lock("model-a", url or None):
                got.set()

        with promotion_lock("model-b", url or None):  # another model's lock is free
            pass
        waiter = threading.Thread(target=take)
        waiter.start()
        assert wait_until(lambda: got.is_set() or waiting_for_promotion_lock("model-a", url), timeout=60)
        assert not got.is_set(), "took a lock another process holds"
        release.touch()
        assert got.wait(30), "never got the lock after the holder released it"
        waiter.join()
    finally:
        release.touch()
        holder.wait(timeout=30)


def test_a_lock_connection_becomes_the_sqlalchemy_url_its_provider_builds(monkeypatch):
    from sqlalchemy.engine import make_url

    from airflow_mlops.errors import MlopsError
    from airflow_mlops.hooks.base import connection_database_url

    monkeypatch.setenv("AIRFLOW_CONN_LOCK_FIELDS", json.dumps({
        "conn_type": "postgres", "host": "db.internal", "port": 5433, "login": "gate", "password": "p@ss word",
        "schema": "registry"}))
    url = make_url(connection_database_url("lock_fields"))
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "postgresql+psycopg2", "gate", "p@ss word", "db.internal", 5433, "registry")
    monkeypatch.setenv("AIRFLOW_CONN_LOCK_PSYCOPG", json.dumps({
        "conn_type": "postgres", "host": "db.internal", "schema": "registry", "extra": {"sqlalchemy_scheme": "postgresql+psycopg"}}))
    assert connection_database_url("lock_psycopg") == "postgresql+psycopg://db.internal/registry"
    monkeypatch.setenv("AIRFLOW_CONN_LOCK_URL", json.dumps({"conn_type": "generic", "extra": {"url": "postgresql://a@h/d"}}))
    assert connection_database_url("lock_url") == "postgresql://a@h/d"
    monkeypatch.setenv("AIRFLOW_CONN_LOCK_HTTP", json.dumps({"conn_type": "http", "host": "h"}))
    with pytest.raises(MlopsError, match="connection lock_http: no SQLAlchemy URL for type 'http'.*give it an extra 'url'"):
        connection_database_url("lock_http")
    assert connection_database_url(None) is None
