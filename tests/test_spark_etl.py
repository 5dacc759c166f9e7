"""Spark ETL: the fraud aggregation, reproducible output, bad input, and the operator on local[*] and a real cluster."""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.request
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest

from airflow_mlops.datasets.paysim import TYPES, write_paysim_csv
from airflow_mlops.etl.fraud import FEATURE_COLUMNS, customer_features
from airflow_mlops.etl.spark import EtlError, EtlInput, code_identity, derive_snapshot, input_path, spark_transform
from airflow_mlops.snapshots import SnapshotStore
from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.tracking.data import load_table
from tests.conftest import REPO, VENV_BIN, free_port
from tests.spark_transforms import ENDLESS_JOB
from tests.task_process import run_in_process

TRANSFORM = "airflow_mlops.etl.fraud:customer_features"
APP_NAME = "fraud_features.customer_features"


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


class ProcessWatch:
    """What /proc shows while a task runs: the command lines of its processes, and any showing a secret.

    The task's descendants are spark-submit, the JVM it starts and the Python driver; every process
    on the machine (cluster executors too) is checked for the secrets. A properties file named on a
    command line is looked at when first seen: its mode and its folder's, while the task runs.
    """

    def __init__(self, secrets):
        self.secrets = [secret.encode() for secret in secrets]
        self.commands: set[tuple[str, ...]] = set()
        self.leaks: list[str] = []
        self.properties_files: dict[str, tuple[int, int] | None] = {}

    @contextmanager
    def following(self, root: int):
        stop = threading.Event()
        poller = threading.Thread(target=self._poll, args=(root, stop), daemon=True)
        poller.start()
        try:
            yield
        finally:
            stop.set()
            poller.join()

    def _poll(self, root: int, stop: threading.Event) -> None:
        while not stop.wait(0.1):
            parents, lines = {}, {}
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    lines[entry.name] = Path(entry.path, "cmdline").read_bytes()
                    parents[entry.name] = Path(entry.path, "stat").read_bytes().rpartition(b")")[2].split()[1].decode()
                except OSError:
                    continue  # the process ended meanwhile
            for pid, line in lines.items():
                argv = tuple(part.decode(errors="replace") for part in line.split(b"\0") if part)
                if any(secret in line for secret in self.secrets):
                    self.leaks.append(f"{pid}: {' '.join(argv)}")
                ancestor = pid
                while ancestor not in (str(root), "0", None):
                    ancestor = parents.get(ancestor)
                if ancestor == str(root):
                    self.commands.add(argv)
                    if "--properties-file" in argv:
                        self._look_at(argv[argv.index("--properties-file") + 1])

    def _look_at(self, path: str) -> None:
        if path not in self.properties_files:
            try:
                self.properties_files[path] = (os.stat(path).st_mode & 0o777, os.stat(Path(path).parent).st_mode & 0o777)
            except OSError:
                self.properties_files[path] = None


def run_operator(tmp_path: Path, name: str, env_extra: dict | None = None, watch: ProcessWatch | None = None,
                 **operator) -> dict:
    """One SparkETLOperator task attempt in its own process (as on a worker); its outcome and log."""
    config = {
        "dag_id": "fraud_features", "run_id": "scheduled__2026-01-01", "task_id": "customer_features", "try_number": 1,
        "operator_class": "SparkETLOperator", "output": str(tmp_path / f"{name}.json"), "operator": operator,
    }
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env_extra or {})}
    process = run_in_process(config, env)
    log = tmp_path / f"{name}.log"
    with watch.following(process.pid) if watch else nullcontext():
        assert process.wait(timeout=300) == 0, log.read_text()[-4000:]
    return {**json.loads((tmp_path / f"{name}.json").read_text()), "log": log.read_text()}


def link_urls(outcome: dict) -> dict[str, str | None]:
    """The URL the task pushed for each of the operator's extra links, by the link's name in the UI."""
    from airflow_mlops.operators import SparkETLOperator

    return {link.name: outcome["xcom"].get(link.xcom_key) for link in SparkETLOperator.operator_extra_links}


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
    assert not list((local_run["root"] / "airflow" / "airflow_mlops" / "etl-staging").iterdir())


def test_on_local_the_link_is_the_driver_ui_named_as_live_only_while_running(local_run):
    links = link_urls(local_run)

    assert links.pop("Spark driver UI (while running)").startswith("http://")
    assert links == {"Spark application": None}  # no cluster manager keeps a page for local[*]


@pytest.fixture(scope="module")
def cluster_runs(local_run, spark_cluster, tmp_path_factory):
    """The fraud aggregation as a transform and as an application on the standalone cluster, processes watched.

    Spark properties come from the connection (a secret key), the operator's ``conf`` (a secret
    token) and spark-defaults.conf; the connection names the master's web UI. The job reports which
    properties it got.
    """
    root = tmp_path_factory.mktemp("etl_cluster")
    secrets = {"spark.hadoop.fs.s3a.secret.key": f"s3cret-{uuid.uuid4().hex}",
               "spark.airflow_mlops.test.token": f"t0ken {uuid.uuid4().hex} =:#!\\ ü"}  # each escaped in a properties file
    (root / "spark-conf").mkdir()
    (root / "spark-conf" / "spark-defaults.conf").write_text("spark.airflow_mlops.test.from_defaults yes\n")
    connection = {"conn_type": "spark", "host": spark_cluster["host"], "port": spark_cluster["port"],
                  "extra": {"spark.hadoop.fs.s3a.secret.key": secrets["spark.hadoop.fs.s3a.secret.key"],
                            "spark.executor.memory": "512m", "master-web-ui": spark_cluster["ui"]}}
    expected = {**secrets, "spark.airflow_mlops.test.from_defaults": "yes"}
    env = {"AIRFLOW_HOME": str(root / "airflow"), "AIRFLOW_CONN_SPARK_CLUSTER": json.dumps(connection),
           "SPARK_CONF_DIR": str(root / "spark-conf"), "EXPECTED_SPARK_CONF": json.dumps(expected)}
    common = {"inputs": {"transactions": local_run["raw"].uri}, "store": str(root / "store"), "spark_conn_id": "spark_cluster",
              "conf": {"spark.airflow_mlops.test.token": secrets["spark.airflow_mlops.test.token"]}}
    jobs = {
        "transform": {"transform": "tests.spark_transforms:features_reporting_conf",
                      "transform_kwargs": {"report": str(root / "transform-conf.json")}},
        "application": {"application": str(REPO / "tests" / "spark_app.py"),
                        "application_args": ["--conf-report", str(root / "application-conf.json")]},
    }
    runs = {}
    for name, job in jobs.items():
        watch = ProcessWatch(secrets.values())
        outcome = run_operator(root, name, env, watch=watch, **common, **job)
        runs[name] = {**outcome, "watch": watch, "conf": json.loads((root / f"{name}-conf.json").read_text())}
    return {"store": SnapshotStore.open(str(root / "store")), "secrets": secrets, "expected": expected, **runs}


def test_a_standalone_cluster_gives_the_same_snapshot_as_local_for_a_transform_and_an_application(
        local_run, spark_cluster, cluster_runs):
    expected = local_run["result"]["snapshot_id"]
    assert cluster_runs["transform"]["result"]["snapshot_id"] == expected
    assert cluster_runs["application"]["result"]["snapshot_id"] == expected
    records = cluster_runs["store"].records(expected)
    masters = sorted(record.extra["spark"]["master"] for record in records)
    assert masters == [spark_cluster["master"]] * 2
    (app_record,) = [record for record in records if "application" in record.extra["spark"]]
    assert app_record.extra["code"]["code_digest"] == digest_bytes((REPO / "tests" / "spark_app.py").read_bytes())
    (session_record,) = [record for record in records if "application_id" in record.extra["spark"]]
    assert session_record.extra["spark"]["application_id"].startswith("app-")  # a standalone-cluster application


def test_spark_properties_reach_the_job_through_a_private_file_never_a_command_line(cluster_runs):
    secrets = cluster_runs["secrets"].values()
    for name in ("application", "transform"):
        run, watch = cluster_runs[name], cluster_runs[name]["watch"]
        assert run["conf"] == dict.fromkeys(cluster_runs["expected"], True), name  # connection, conf, spark-defaults.conf
        assert watch.leaks == [], name
        jvms = [command for command in watch.commands if "org.apache.spark.deploy.SparkSubmit" in command]
        assert jvms and all("--properties-file" in command for command in jvms), (name, watch.commands)
        assert watch.properties_files and set(watch.properties_files.values()) == {(0o600, 0o700)}, name
        assert not any(Path(path).parent.exists() for path in watch.properties_files), name
        assert not any(secret in run["log"] for secret in secrets), name
    records = cluster_runs["store"].records()
    assert not any(secret in json.dumps(record.to_dict()) for record in records for secret in secrets)


def test_a_standalone_run_links_its_page_on_the_masters_web_ui_which_outlives_it(cluster_runs, spark_cluster):
    with urllib.request.urlopen(f"{spark_cluster['ui']}/json/", timeout=10) as response:
        finished = {app["id"] for app in json.load(response)["completedapps"] if app["name"] == APP_NAME}
    (session_record,) = [record for record in cluster_runs["store"].records() if "application_id" in record.extra["spark"]]
    links = {name: link_urls(cluster_runs[name]) for name in ("transform", "application")}

    page = f"{spark_cluster['ui']}/app/?appId={{}}".format
    assert links["transform"]["Spark application"] == page(session_record.extra["spark"]["application_id"])
    assert {links[name]["Spark application"] for name in links} == {page(app) for app in finished}
    for name in links:
        with urllib.request.urlopen(links[name]["Spark application"], timeout=10) as response:
            body = response.read().decode()
        assert response.status == 200 and APP_NAME in body and "FINISHED" in body, name
    assert links["transform"]["Spark driver UI (while running)"].startswith("http://")


def wait_for_running_job(ui: str, description: str, process, timeout: float = 180) -> set[int]:
    """Ids of the jobs Spark's driver reports RUNNING with ``description`` and tasks on executors, once there are any."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{ui}/api/v1/applications", timeout=5) as response:
                (application,) = json.load(response)
            with urllib.request.urlopen(f"{ui}/api/v1/applications/{application['id']}/jobs?status=running", timeout=5) as response:
                running = {job["jobId"] for job in json.load(response)
                           if job.get("description") == description and job["numActiveTasks"] > 0}
            if running:
                return running
        except (OSError, ValueError):
            pass  # the driver UI is not up yet
        time.sleep(0.2)
    raise AssertionError(f"no running {description!r} job (task exit code {process.poll()})")


def test_on_kill_cancels_the_running_job_and_records_nothing(tmp_path):
    import signal

    _store, raw = raw_transactions(tmp_path, rows=200)
    port = free_port()
    config = {
        "dag_id": "fraud_features", "run_id": "manual__1", "task_id": "endless", "try_number": 1,
        "operator_class": "SparkETLOperator", "output": str(tmp_path / "endless.json"),
        "operator": {"inputs": {"transactions": raw.uri}, "transform": "tests.spark_transforms:endless_aggregation",
                     "store": str(tmp_path / "output_store"), "conf": {"spark.ui.port": str(port)}},
    }
    process = run_in_process(config, {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")})
    running = wait_for_running_job(f"http://127.0.0.1:{port}", ENDLESS_JOB, process)
    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=120) != 0
    log = (tmp_path / "endless.log").read_text()
    assert "EtlError: Spark failed" in log, log[-4000:]
    cancelled = {int(job) for job in re.findall(r"Job (\d+) cancelled as part of cancellation of all jobs", log)}
    assert cancelled & running, (running, log[-4000:])  # Spark cancelled the job it reported running
    assert not (tmp_path / "output_store" / "records").exists()
    assert not list((tmp_path / "airflow" / "airflow_mlops" / "etl-staging").iterdir())


def test_an_input_is_a_path_or_a_snapshot_never_a_guess(tmp_path, monkeypatch):
    """Snapshots: a task's result, ``<store>#<id>``, a bare hex id; paths: a Path or existing text. Text
    reading both ways (a folder named like an id, a file with ``#``) is refused naming both readings."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deadbeef").mkdir()
    (tmp_path / "a#b.csv").write_text("x\n1\n")
    (tmp_path / "data").mkdir()

    assert input_path("x", {"uri": "store#abcdef"}) is None
    assert input_path("x", "store#abcdef") is None
    assert input_path("x", "abcdef012345") is None  # no such path: the id of a snapshot
    assert input_path("x", "data") == tmp_path / "data"
    assert input_path("x", "./deadbeef") == tmp_path / "deadbeef"
    assert input_path("x", str(tmp_path / "deadbeef")) == tmp_path / "deadbeef"
    assert input_path("x", Path("deadbeef")) == tmp_path / "deadbeef"
    assert input_path("x", Path("a#b.csv")) == tmp_path / "a#b.csv"
    with pytest.raises(EtlError, match=r"inputs\['x'\]: 'deadbeef' names both the existing path .*deadbeef and a snapshot id; "
                                       r"give './deadbeef' for the path or '<store>#deadbeef' for the snapshot"):
        input_path("x", "deadbeef")
    with pytest.raises(EtlError, match=r"'a#b.csv' names both the existing path .* and a snapshot URI; give a pathlib.Path"):
        input_path("x", "a#b.csv")
    with pytest.raises(EtlError, match=r"inputs\['x'\]: nowhere is neither an existing path nor a snapshot id or URI"):
        input_path("x", "nowhere")
    with pytest.raises(EtlError, match=r"inputs\['x'\]: .*nowhere is not an existing path"):
        input_path("x", Path("nowhere"))


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
