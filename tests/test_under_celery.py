"""Under the CeleryExecutor: two workers on a Redis broker, as a scaled-out deployment runs them,
sharing one machine's embedded stores: the parallel test DAG, and the flagship DAG on its schedule
(the daily run the scheduler makes as soon as the DAG appears) and triggered without a logical date."""

from __future__ import annotations

import pytest

from tests.airflow_cluster import AirflowCluster, airflow_cluster  # noqa: F401 - the fixture
from tests.conftest import REPO

DAG_FILES = [REPO / "tests" / "scheduler_dags" / "mlops_scheduler_dags.py", REPO / "dags" / "mlops_retrain.py"]
CELERY_WORKERS = 2
pytestmark = [pytest.mark.scheduler, pytest.mark.postgres]


def test_parallel_tasks_spread_over_two_celery_workers_all_succeed_on_their_first_try(airflow_cluster):  # noqa: F811
    cluster: AirflowCluster = airflow_cluster
    cluster.wait_for_dags("first_use", "mlops_retrain")
    run_id = cluster.trigger("first_use", conf={"n_trials": 2}, logical_date="2026-03-01T00:00:00Z")
    cluster.wait_for_runs("first_use", [run_id], timeout=600)

    instances = cluster.task_instances("first_use", run_id)
    assert sorted(ti["task_id"] for ti in instances) == ["generate", "snapshot", "train_a", "train_b", "tune_a", "tune_b"]
    assert {ti["try_number"] for ti in instances} == {1}
    assert {ti["queue"] for ti in instances} == {cluster.env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]}
    for worker in ("celery-worker-1", "celery-worker-2"):  # both workers ran tasks of this run
        log = (cluster.root / "logs" / f"{worker}.log").read_text()
        assert run_id in log, f"{worker} ran none of the run's tasks:\n{log[-3000:]}"


def test_flagship_runs_on_schedule_and_without_a_logical_date_each_on_its_own_days_data(airflow_cluster):  # noqa: F811
    """The daily run the scheduler made when the DAG appeared, and a run triggered through the API with
    no logical date (as an Asset or an API client makes one), each snapshot their own day's data."""
    from airflow_mlops.snapshots import SnapshotStore

    cluster: AirflowCluster = airflow_cluster
    cluster.wait_for_dags("mlops_retrain")
    undated = cluster.trigger("mlops_retrain", conf={"rows": 2000, "n_trials": 2})
    (scheduled,) = [run["dag_run_id"] for run in cluster.dag_runs("mlops_retrain") if run["run_type"] == "scheduled"]
    runs = {run["dag_run_id"]: run for run in cluster.wait_for_runs("mlops_retrain", [scheduled, undated], timeout=900)}
    assert runs[undated]["logical_date"] is None

    store = SnapshotStore.open(str(cluster.home / "airflow_mlops" / "snapshots"))
    raw = {r.airflow["run_id"]: r for r in store.records() if r.airflow["task_id"] == "snapshot_raw"}
    assert raw[scheduled].source.endswith(f"/data/raw/{runs[scheduled]['logical_date'][:10]}")
    assert raw[undated].source.endswith(f"/data/raw/{runs[undated]['run_after'][:10]}")
    assert raw[undated].snapshot_id != raw[scheduled].snapshot_id  # each date its own data version

    # Each run registered its model and went through the gate; the predictions name the version that scored.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{cluster.home / 'airflow_mlops' / 'mlflow.db'}")
    versions = {v.tags["airflow.run_id"]: v for v in client.search_model_versions("name = 'fraud_detection'")}
    assert set(versions) == {scheduled, undated}
    assert {v.tags["airflow_mlops.gate.decision"] for v in versions.values()} <= {"champion", "challenger"}
    assert client.get_model_version_by_alias("fraud_detection", "champion").version in {v.version for v in versions.values()}
    features = {r.airflow["run_id"]: r for r in store.records() if r.airflow["task_id"] == "customer_features"}
    predictions = {r.airflow["run_id"]: r for r in store.records() if r.airflow["task_id"] == "score_customers"}
    for run_id in (scheduled, undated):
        assert predictions[run_id].parents == [features[run_id].snapshot_id]
        assert predictions[run_id].extra["model"]["alias"] == "champion"
        link = cluster.extra_links("mlops_retrain", run_id, "register_fraud_model")["MLflow model version"]
        assert link.endswith(f"/#/models/fraud_detection/versions/{versions[run_id].version}")
