"""The provider inside a real Airflow: registration, DAG parsing cost, and DAG runs via ``airflow dags test``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
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
    airflow(migrated_home, "dags", "test", "mlops_retrain", "2026-01-02", "--conf", json.dumps(conf))

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
    assert record["airflow"]["dag_id"] == "mlops_retrain"
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
        ("x-airflow-mlops-snapshot://mlops_retrain/customer_features", features["snapshot_id"]),
        ("x-airflow-mlops-snapshot://mlops_retrain/score_customers", scored["snapshot_id"]),
        ("x-airflow-mlops-snapshot://mlops_retrain/snapshot_raw", record["snapshot_id"]),
    ]

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{migrated_home / 'airflow_mlops' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fraud_detection").experiment_id])
    (study,) = [r for r in runs if r.data.tags["airflow.task_id"] == "tune_fraud_model" and "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
    assert study.info.status == "FINISHED" and len(trials) == 3  # n_trials from the trigger's params
    (run,) = [r for r in runs if r.data.tags["airflow.task_id"] == "train_fraud_model"]
    assert run.info.status == "FINISHED"
    best = {key.removeprefix("best."): value for key, value in study.data.params.items() if key.startswith("best.")}
    assert {key: run.data.params[key] for key in best} == best  # best_params went straight into training
    assert run.data.tags["airflow_mlops.snapshot_id"] == features["snapshot_id"]
    assert run.data.tags["airflow.run_id"] == record["airflow"]["run_id"]
    assert run.data.tags["mlflow.source.git.commit"]
    with sqlite3.connect(migrated_home / "airflow.db") as db:
        links = dict(db.execute("SELECT task_id, value FROM xcom WHERE key = '_link_MlflowRunLink'").fetchall())
    assert json.loads(links["train_fraud_model"]).endswith(f"/runs/{run.info.run_id}")
    assert json.loads(links["tune_fraud_model"]).endswith(f"/runs/{study.info.run_id}")
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
    assert {"model_version:fraud_detection/1", f"snapshot:{scored['snapshot_id']}", f"run:{study.info.run_id}"} <= set(downstream)

    # the training run re-created from its record alone gives the same metrics
    reproduced = subprocess.run([str(VENV_BIN / "airflow-mlops"), "reproduce", run.info.run_id],
                                capture_output=True, text=True, env=env)
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr[-3000:]
    (again,) = client.search_runs([run.info.experiment_id], f"tags.`airflow_mlops.reproduces` = '{run.info.run_id}'")
    assert again.data.metrics == run.data.metrics
