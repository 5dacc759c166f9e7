"""Spark ETL: the fraud aggregation, reproducible output, bad input, and the operator on local[*] and a real cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from airflow_mlops.datasets.paysim import TYPES, write_paysim_csv
from airflow_mlops.etl.fraud import FEATURE_COLUMNS, customer_features
from airflow_mlops.etl.spark import EtlError, EtlInput, code_identity, derive_snapshot, spark_transform
from airflow_mlops.snapshots import SnapshotStore
from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.tracking.data import load_table
from tests.conftest import REPO, VENV_BIN
from tests.task_process import run_in_process

TRANSFORM = "airflow_mlops.etl.fraud:customer_features"
SPARK_SECRET = "s3cret-spark-s3a-key"


def raw_transactions(root: Path, rows: int = 3000) -> tuple[SnapshotStore, object]:
    """PaySim transactions snapshotted into a local store under ``root``."""
    write_paysim_csv(root / "raw", rows=rows, seed=11)
    store = SnapshotStore.open(str(root / "store"))
    return store, store.snapshot(root / "raw")


@pytest.fixture
def transactions(tmp_path):
    store, record = raw_transactions(tmp_path)
    item = EtlInput("transactions", store.materialize(record.snapshot_id, tmp_path / "restored"), record.snapshot_id, record.uri)
    return store, record, item


def derive(spark, store, item, tmp_path, transform=customer_features, **options):
    write = spark_transform(spark, [item], transform, **options)
    return derive_snapshot(store, [item], write, staging_root=tmp_path / "staging", code=code_identity(transform))


def test_customer_features_match_a_pandas_groupby_and_the_record_names_inputs_and_code(spark, transactions, tmp_path):
    store, raw, item = transactions
    record, tables = derive(spark, store, item, tmp_path)

    assert record.parents == [raw.snapshot_id] and record.source == f"spark:{TRANSFORM}"
    fraud_module = REPO / "airflow_mlops" / "etl" / "fraud.py"
    assert record.extra["code"] == {"transform": TRANSFORM, "code_file": str(fraud_module),
                                    "code_digest": digest_bytes(fraud_module.read_bytes())}
    assert record.extra["inputs"] == {"transactions": {"snapshot_id": raw.snapshot_id, "uri": raw.uri}}
    features = load_table(store.materialize(record.snapshot_id, tmp_path / "out")).set_index("nameOrig")
    assert list(features.columns) == [*FEATURE_COLUMNS, "isFraud"]
    assert tables[""]["rows"] == len(features) and tables[""]["schema"]["isFraud"] == "int32"

    raw_frame = load_table(item.path)
    grouped = raw_frame.groupby("nameOrig")
    assert len(features) == raw_frame["nameOrig"].nunique()
    assert (features["n_transactions"] == grouped.size()).all()
    assert (features["isFraud"] == grouped["isFraud"].max()).all()
    assert features["total_amount"].to_numpy() == pytest.approx(grouped["amount"].sum().to_numpy(), abs=1e-6)
    assert features["mean_amount"].to_numpy() == pytest.approx(grouped["amount"].mean().to_numpy())
    delta = (raw_frame["newbalanceOrig"] - raw_frame["oldbalanceOrg"]).groupby(raw_frame["nameOrig"]).sum()
    assert features["orig_balance_delta"].to_numpy() == pytest.approx(delta.to_numpy(), abs=1e-6)
    for kind in TYPES:
        of_kind = raw_frame[raw_frame["type"] == kind].groupby("nameOrig")["amount"]
        counts = of_kind.size().reindex(features.index, fill_value=0)
        assert (features[f"n_{kind.lower()}"] == counts).all()
        sums = of_kind.sum().reindex(features.index, fill_value=0.0)
        assert features[f"amount_{kind.lower()}"].to_numpy() == pytest.approx(sums.to_numpy(), abs=1e-6)
    assert 0 < features["isFraud"].sum() < len(features)  # both classes, so the example can train on it


def test_the_output_snapshot_does_not_depend_on_how_spark_splits_the_input(spark, transactions, tmp_path):
    store, _raw, item = transactions

    def split_seven_ways(spark, inputs):
        return customer_features(spark, {"transactions": inputs["transactions"].repartition(7)})

    first, _ = derive(spark, store, item, tmp_path)
    again, _ = derive(spark, store, item, tmp_path, transform=split_seven_ways)
    assert again.snapshot_id == first.snapshot_id

    three, tables = derive(spark, store, item, tmp_path, partitions=3)
    assert [entry.path for entry in store.manifest(three.snapshot_id)] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert tables[""]["files"] == 3 and tables[""]["rows"] == first.extra["tables"][""]["rows"]
    assert not list((tmp_path / "staging").iterdir())  # staging is cleaned up after success too


def _drop_amount(path: Path) -> None:
    import pandas as pd

    pd.read_csv(path / "transactions.csv").drop(columns=["amount"]).to_csv(path / "transactions.csv", index=False)


def _header_only(path: Path) -> None:
    text = (path / "transactions.csv").read_text()
    (path / "transactions.csv").write_text(text.splitlines()[0] + "\n")


def _not_parquet(path: Path) -> None:
    (path / "transactions.csv").unlink()
    (path / "transactions.parquet").write_bytes(b"PAR1 this is not a parquet file")


@pytest.mark.parametrize(
    ("damage", "message"),
    [(_drop_amount, "lacks PaySim columns ['amount']"), (_header_only, "has no rows"), (_not_parquet, "Spark failed")],
    ids=["missing-column", "empty-input", "unreadable-file"],
)
def test_bad_input_fails_with_one_clear_error_and_records_nothing(spark, tmp_path, damage, message):
    write_paysim_csv(tmp_path / "raw", rows=200, seed=1)
    damage(tmp_path / "raw")
    store = SnapshotStore.open(str(tmp_path / "store"))
    item = EtlInput("transactions", tmp_path / "raw")

    with pytest.raises(EtlError, match=message.replace("[", r"\[").replace("]", r"\]")) as failure:
        derive(spark, store, item, tmp_path)

    assert "\n" not in str(failure.value)
    assert not (tmp_path / "store" / "records").exists()
    assert not list((tmp_path / "staging").iterdir())


def run_operator(tmp_path: Path, name: str, env_extra: dict | None = None, **operator) -> dict:
    """One SparkETLOperator task attempt in its own process (as on a worker); its outcome and log."""
    config = {
        "dag_id": "fraud_features", "run_id": "scheduled__2026-01-01", "task_id": "customer_features", "try_number": 1,
        "operator_class": "SparkETLOperator", "output": str(tmp_path / f"{name}.json"), "operator": operator,
    }
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env_extra or {})}
    process = run_in_process(config, env)
    log = tmp_path / f"{name}.log"
    assert process.wait(timeout=300) == 0, log.read_text()[-4000:]
    return {**json.loads((tmp_path / f"{name}.json").read_text()), "log": log.read_text()}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The fraud aggregation through the operator on the default master, local[*]."""
    root = tmp_path_factory.mktemp("etl_local")
    store, raw = raw_transactions(root)
    outcome = run_operator(root, "local", {"AIRFLOW_HOME": str(root / "airflow")},
                           inputs={"transactions": raw.uri}, transform=TRANSFORM, store=str(root / "output_store"))
    return {"root": root, "store": store, "raw": raw, **outcome}


def test_the_operator_on_local_records_a_derived_snapshot_and_keeps_data_out_of_xcom(local_run):
    result, raw = local_run["result"], local_run["raw"]
    output_store = SnapshotStore.open(str(local_run["root"] / "output_store"))
    (record,) = output_store.records()

    assert result["snapshot_id"] == record.snapshot_id and result["parents"] == [raw.snapshot_id]
    assert set(result) == {"snapshot_id", "uri", "files", "bytes", "parents", "tables"}
    assert result["tables"][""]["rows"] == 150 and "isFraud" in result["tables"][""]["schema"]
    assert record.airflow["dag_id"] == "fraud_features" and record.airflow["task_id"] == "customer_features"
    assert record.extra["spark"]["master"] == "local[*]"
    assert record.extra["spark"]["application_id"].startswith("local-")
    assert record.extra["code"]["transform"] == TRANSFORM
    assert local_run["asset_events"] == {"x-airflow-mlops-snapshot://fraud_features/customer_features": {
        "snapshot_id": record.snapshot_id, "uri": record.uri, "parents": [raw.snapshot_id]}}
    assert local_run["xcom"]["spark_ui_url"].startswith("http://")
    assert not list((local_run["root"] / "airflow" / "airflow_mlops" / "etl-staging").iterdir())


def test_a_standalone_cluster_gives_the_same_snapshot_as_local_for_a_transform_and_an_application(local_run, spark_cluster, tmp_path):
    connection = {"conn_type": "spark", "host": spark_cluster["host"], "port": spark_cluster["port"],
                  "extra": {"spark.hadoop.fs.s3a.secret.key": SPARK_SECRET, "spark.executor.memory": "512m"}}
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW_CONN_SPARK_CLUSTER": json.dumps(connection)}
    common = {"inputs": {"transactions": local_run["raw"].uri}, "store": str(tmp_path / "store"), "spark_conn_id": "spark_cluster"}

    on_cluster = run_operator(tmp_path, "cluster", env, transform=TRANSFORM, **common)
    submitted = run_operator(tmp_path, "submitted", env, application=str(REPO / "tests" / "spark_app.py"), **common)

    expected = local_run["result"]["snapshot_id"]
    assert on_cluster["result"]["snapshot_id"] == expected
    assert submitted["result"]["snapshot_id"] == expected
    records = SnapshotStore.open(str(tmp_path / "store")).records(expected)
    masters = sorted(record.extra["spark"]["master"] for record in records)
    assert masters == [spark_cluster["master"]] * 2
    (app_record,) = [record for record in records if "application" in record.extra["spark"]]
    assert app_record.extra["code"]["code_digest"] == digest_bytes((REPO / "tests" / "spark_app.py").read_bytes())
    (session_record,) = [record for record in records if "application_id" in record.extra["spark"]]
    assert session_record.extra["spark"]["application_id"].startswith("app-")  # a standalone-cluster application
    for outcome in (on_cluster, submitted):
        assert SPARK_SECRET not in outcome["log"]
    assert not any(SPARK_SECRET in json.dumps(record.to_dict()) for record in records)


def test_on_kill_cancels_the_running_job_and_records_nothing(tmp_path, markers):
    import signal
    import time

    _store, raw = raw_transactions(tmp_path, rows=200)
    config = {
        "dag_id": "fraud_features", "run_id": "manual__1", "task_id": "endless", "try_number": 1,
        "operator_class": "SparkETLOperator", "output": str(tmp_path / "endless.json"),
        "operator": {"inputs": {"transactions": raw.uri}, "transform": "tests.spark_transforms:endless_aggregation",
                     "store": str(tmp_path / "output_store")},
    }
    process = run_in_process(config, {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")})
    deadline = time.monotonic() + 120
    while not (markers / "started").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # the job is running on the executors now
    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=120) != 0
    log = (tmp_path / "endless.log").read_text()
    assert "EtlError: Spark failed" in log and "cancel" in log.lower()
    assert not (tmp_path / "output_store" / "records").exists()
    assert not list((tmp_path / "airflow" / "airflow_mlops" / "etl-staging").iterdir())


def test_bad_arguments_are_refused_before_spark_starts(tmp_path):
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowNotFoundException

    from airflow_mlops.errors import MlopsError
    from airflow_mlops.operators import SparkETLOperator

    with DAG("checks", schedule=None):
        both = SparkETLOperator(task_id="both", inputs={"x": str(tmp_path)}, transform=TRANSFORM, application="app.py")
        no_inputs = SparkETLOperator(task_id="no_inputs", inputs={}, transform=TRANSFORM)
        missing = SparkETLOperator(task_id="missing", inputs={"x": str(tmp_path / "nowhere")}, transform=TRANSFORM)
        unknown_snapshot = SparkETLOperator(task_id="unknown", inputs={"x": "abcdef012345"}, transform=TRANSFORM,
                                            store=str(tmp_path / "empty_store"))
        unknown_connection = SparkETLOperator(task_id="unknown_conn", inputs={"x": str(tmp_path)}, transform=TRANSFORM,
                                              spark_conn_id="spark_typo")
    for operator, message in [(both, "either transform"), (no_inputs, "non-empty mapping"),
                              (missing, "neither an existing path"), (unknown_snapshot, "no snapshot store")]:
        with pytest.raises(MlopsError, match=message):
            operator.execute({"ti": None, "outlet_events": {}})
    # The provider's hook would quietly submit to yarn for an unknown connection id.
    with pytest.raises(AirflowNotFoundException, match="spark_typo"):
        unknown_connection.execute({"ti": None, "outlet_events": {}})
