"""docker-compose.yaml's topology without containers: Airflow (api-server, scheduler, dag-processor) with
two Celery workers on Redis and its metadata DB on PostgreSQL; an MLflow tracking server with a
PostgreSQL backend store and its artifacts in S3 (moto's server); Optuna studies in PostgreSQL; a
Spark standalone master and worker; snapshots in S3. The connections are the compose file's
``AIRFLOW_CONN_*`` ids (``mlflow_default``, ``optuna_default``, ``spark_default``, ``aws_default``).

The fraud DAGs run there as users run them: the daily run the scheduler makes when the DAG appears,
a backfill of two dates at once (the mapped tuning tasks of a run share one study from both
workers), and data-driven retraining when new transactions land.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest

from tests.airflow_cluster import AirflowCluster, airflow_cluster  # noqa: F401 - the fixture
from tests.conftest import REPO, VENV_BIN, _pg_user, free_port, require_service, stop_process, wait_for_port

DAG_FILES = [REPO / "dags" / "fraud_detection.py"]
CELERY_WORKERS = 2
SERVICES_FIXTURE = "compose_services"
pytestmark = [pytest.mark.scheduler, pytest.mark.postgres, pytest.mark.s3]
CONF = {"rows": 2000, "n_trials": 4, "tuning_workers": 2}
AWS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def compose_services(moto_s3, postgres_databases, spark_cluster, tmp_path_factory):
    """The compose stack's servers on loopback, and the environment that points Airflow at them."""
    import boto3

    bucket = f"airflow-mlops-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_s3, **{k.lower(): v for k, v in AWS.items() if k != "AWS_DEFAULT_REGION"},
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("mlflow_on_s3")
    port = free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", postgres_databases("mlflow_s3"),
         "--artifacts-destination", f"s3://{bucket}/mlflow-artifacts", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, env={**os.environ, **AWS, "MLFLOW_S3_ENDPOINT_URL": moto_s3},
    )
    optuna_db = postgres_databases("optuna").rsplit("/", 1)[1]
    try:
        require_service(wait_for_port(port, timeout=90, process=server),
                        f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        yield {
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": "127.0.0.1", "port": port, "schema": "http"}),
            "AIRFLOW_CONN_OPTUNA_DEFAULT": json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": 5432,
                                                       "schema": optuna_db, "login": _pg_user()}),
            "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": spark_cluster["host"], "port": spark_cluster["port"]}),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": AWS["AWS_ACCESS_KEY_ID"],
                                                    "password": AWS["AWS_SECRET_ACCESS_KEY"],
                                                    "extra": {"endpoint_url": moto_s3, "region_name": "us-east-1"}}),
            "AIRFLOW_MLOPS_STORE": f"s3://{bucket}/snapshots",
            "PYSPARK_PYTHON": str(VENV_BIN / "python"),  # the executors' Python, with MLflow (the image's, in compose)
            "_BUCKET": bucket, "_MLFLOW_URL": f"http://127.0.0.1:{port}", "_SPARK_MASTER": spark_cluster["master"],
        }
    finally:
        stop_process(server)
        log.close()


@pytest.fixture(scope="module")
def cluster(airflow_cluster: AirflowCluster) -> AirflowCluster:  # noqa: F811
    airflow_cluster.wait_for_dags("fraud_detection", "fraud_transactions_landed", "fraud_detection_on_new_data")
    return airflow_cluster


def _store(cluster: AirflowCluster):
    """The cluster's S3 snapshot store, opened through the same ``aws_default`` connection its tasks use."""
    from airflow_mlops.hooks.snapshot_store import SnapshotStoreHook

    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = cluster.env["AIRFLOW_CONN_AWS_DEFAULT"]
    try:
        return SnapshotStoreHook(cluster.env["AIRFLOW_MLOPS_STORE"], "aws_default").get_conn()
    finally:
        del os.environ["AIRFLOW_CONN_AWS_DEFAULT"]


def _credentials() -> dict:
    return {"aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"]}


def test_scheduled_run_and_a_backfill_of_two_dates_share_studies_across_workers_and_end_consistent(cluster):
    from mlflow import MlflowClient

    backfill = cluster.backfill("fraud_detection", "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", max_active_runs=2,
                                dag_run_conf=CONF)
    deadline = time.monotonic() + 60
    while len(backfilled := [r for r in cluster.dag_runs("fraud_detection") if r["run_type"] == "backfill"]) < 2:
        assert time.monotonic() < deadline, f"backfill {backfill['id']} made {len(backfilled)} runs"
        time.sleep(1)
    (scheduled,) = [r["dag_run_id"] for r in cluster.dag_runs("fraud_detection") if r["run_type"] == "scheduled"]
    run_ids = [scheduled, *(r["dag_run_id"] for r in backfilled)]
    runs = {run["dag_run_id"]: run for run in cluster.wait_for_runs("fraud_detection", run_ids, timeout=1200)}

    records = [r for r in _store(cluster).records() if r.airflow["dag_id"] == "fraud_detection"]
    by_task = {task: {r.airflow["run_id"]: r for r in records if r.airflow["task_id"] == task}
               for task in ("snapshot_raw", "customer_features", "score_customers")}
    assert all(set(found) == set(run_ids) for found in by_task.values()), {t: sorted(f) for t, f in by_task.items()}
    client = MlflowClient(cluster.env["_MLFLOW_URL"])
    experiment = client.get_experiment_by_name("fraud_detection")
    every_run = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r.info.run_id for r in every_run if r.info.status == "RUNNING"]
    versions = {v.tags["airflow.run_id"]: v for v in client.search_model_versions("name = 'fraud_detection'")}
    assert set(versions) == set(run_ids)  # one version per run, none twice

    for run_id in run_ids:
        run = runs[run_id]
        date = (run["logical_date"] or run["run_after"])[:10]
        raw, features, scored = (by_task[task][run_id] for task in ("snapshot_raw", "customer_features", "score_customers"))
        assert raw.source.endswith(f"/data/raw/{date}")  # each date its own data version
        assert features.parents == [raw.snapshot_id] and features.extra["spark"]["master"] == cluster.env["_SPARK_MASTER"]
        assert scored.parents == [features.snapshot_id] and scored.extra["prediction"]["master"] == cluster.env["_SPARK_MASTER"]
        assert scored.extra["model"]["alias"] == "champion"

        # the run's mapped tuning tasks ran at once and shared one study: n_trials complete trials in all
        tuning = [ti for ti in cluster.task_instances("fraud_detection", run_id) if ti["task_id"] == "tune_fraud_model"]
        assert sorted(ti["map_index"] for ti in tuning) == [0, 1]
        parents = [r for r in every_run if r.data.tags.get("airflow.run_id") == run_id
                   and r.data.tags["airflow.task_id"] == "tune_fraud_model" and "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 2 and {p.data.tags["optuna.study_name"] for p in parents} == {f"fraud_detection.{run_id}"}
        trials = [r for r in every_run if r.data.tags.get("mlflow.parentRunId") in {p.info.run_id for p in parents}]
        finished = [t for t in trials if t.info.status == "FINISHED"]
        n_trials = int(parents[0].data.params["n_trials"])  # the trigger's, or the DAG's default for the scheduled run
        assert n_trials == (CONF["n_trials"] if run["run_type"] == "backfill" else 8)
        assert len(finished) == n_trials
        assert len({t.data.tags["optuna.trial_number"] for t in finished}) == n_trials  # none run twice
        (train,) = [r for r in every_run if r.data.tags.get("airflow.run_id") == run_id
                    and r.data.tags["airflow.task_id"] == "train_fraud_model"]
        assert train.data.tags["airflow_mlops.snapshot_id"] == features.snapshot_id
        assert versions[run_id].run_id == train.info.run_id
        link = cluster.extra_links("fraud_detection", run_id, "register_fraud_model")["MLflow model version"]
        assert link.endswith(f"/#/models/fraud_detection/versions/{versions[run_id].version}")

    for worker in ("celery-worker-1", "celery-worker-2"):  # both workers ran tasks
        log = (cluster.root / "logs" / f"{worker}.log").read_text()
        assert any(run_id in log for run_id in run_ids), f"{worker} ran no task:\n{log[-3000:]}"
    import boto3

    s3 = boto3.client("s3", endpoint_url=json.loads(cluster.env["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]["endpoint_url"],
                      region_name="us-east-1", **_credentials())
    artifacts = s3.list_objects_v2(Bucket=cluster.env["_BUCKET"], Prefix="mlflow-artifacts/")
    assert any(obj["Key"].endswith("MLmodel") for obj in artifacts.get("Contents", []))  # models went to S3

    from airflow_mlops.registry.history import history

    moves = [entry for entry in history(client, "fraud_detection") if entry["alias"] == "champion"]
    assert [entry["from_version"] for entry in moves] == [None] + [entry["to_version"] for entry in moves[:-1]]
    assert str(client.get_model_version_by_alias("fraud_detection", "champion").version) == moves[-1]["to_version"]


def test_transactions_landing_trigger_retraining_on_their_data_version(cluster, tmp_path):
    """Files land, an API call snapshots them, and the Asset event starts a retraining run on that version."""
    from airflow_mlops.datasets.paysim import write_paysim_csv

    landed = tmp_path / "landed"
    write_paysim_csv(str(landed), rows=2000, seed=11)
    before = {run["dag_run_id"] for run in cluster.dag_runs("fraud_detection_on_new_data")}
    status, _ = cluster.api("POST", "/api/v2/dags/fraud_transactions_landed/dagRuns", {"logical_date": None, "conf": {}})
    assert status == 400, "a trigger without the landed path is refused before any run exists"
    snapshot_run = cluster.trigger("fraud_transactions_landed", conf={"path": str(landed)})
    cluster.wait_for_runs("fraud_transactions_landed", [snapshot_run], timeout=300)

    deadline = time.monotonic() + 120
    while not (new := [r["dag_run_id"] for r in cluster.dag_runs("fraud_detection_on_new_data") if r["dag_run_id"] not in before]):
        assert time.monotonic() < deadline, "the Asset event started no retraining run"
        time.sleep(2)
    (retrain,) = new
    (run,) = cluster.wait_for_runs("fraud_detection_on_new_data", [retrain], timeout=900)
    assert run["run_type"] == "asset_triggered"

    records = _store(cluster).records()
    (landed_snapshot,) = [r for r in records if r.airflow["run_id"] == snapshot_run]
    assert landed_snapshot.source == str(landed)
    (features,) = [r for r in records if r.airflow["run_id"] == retrain and r.airflow["task_id"] == "customer_features"]
    assert features.parents == [landed_snapshot.snapshot_id]  # retrained on exactly the data version that landed
    (scored,) = [r for r in records if r.airflow["run_id"] == retrain and r.airflow["task_id"] == "score_customers"]
    assert scored.parents == [features.snapshot_id]
