"""The same parallel DAG under the CeleryExecutor: two workers on a Redis broker, as a scaled-out
deployment runs it, sharing one machine's embedded stores."""

from __future__ import annotations

import pytest

from tests.airflow_cluster import AirflowCluster, airflow_cluster  # noqa: F401 - the fixture
from tests.conftest import REPO

DAGS_FOLDER = REPO / "tests" / "scheduler_dags"
CELERY_WORKERS = 2
pytestmark = [pytest.mark.scheduler, pytest.mark.postgres]


def test_parallel_tasks_spread_over_two_celery_workers_all_succeed_on_their_first_try(airflow_cluster):  # noqa: F811
    cluster: AirflowCluster = airflow_cluster
    cluster.wait_for_dags("first_use")
    run_id = cluster.trigger("first_use", conf={"n_trials": 2}, logical_date="2026-03-01T00:00:00Z")
    cluster.wait_for_runs("first_use", [run_id], timeout=600)

    instances = cluster.task_instances("first_use", run_id)
    assert sorted(ti["task_id"] for ti in instances) == ["generate", "snapshot", "train_a", "train_b", "tune_a", "tune_b"]
    assert {ti["try_number"] for ti in instances} == {1}
    assert {ti["queue"] for ti in instances} == {cluster.env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]}
    for worker in ("celery-worker-1", "celery-worker-2"):  # both workers ran tasks of this run
        log = (cluster.root / "logs" / f"{worker}.log").read_text()
        assert run_id in log, f"{worker} ran none of the run's tasks:\n{log[-3000:]}"
