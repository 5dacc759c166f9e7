"""The operators under a real scheduler: parallel first use of the embedded stores, SIGKILLed training
and tuning that retries pick up, and a backfill of several dates at once whose registration and
prediction are killed once each.

One Airflow (api-server + scheduler + dag-processor, LocalExecutor, metadata DB on PostgreSQL) serves
the whole module; DAGs come from ``tests/scheduler_dags``. Tests run in file order: the first one
needs the embedded stores still absent.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.airflow_cluster import AirflowCluster, airflow_cluster  # noqa: F401 - the fixture
from tests.conftest import REPO
from tests.scheduler_tasks import marker_path

DAG_FILES = [REPO / "tests" / "scheduler_dags" / "mlops_scheduler_dags.py"]
pytestmark = [pytest.mark.scheduler, pytest.mark.postgres]


@pytest.fixture(scope="module")
def cluster(airflow_cluster: AirflowCluster) -> AirflowCluster:  # noqa: F811
    airflow_cluster.wait_for_dags("first_use", "train_killed", "tune_killed", "backfilled")
    return airflow_cluster


def _top_level_runs(client, dag_id: str, run_id: str, task_id: str) -> list:
    experiment = client.get_experiment_by_name(dag_id)
    runs = client.search_runs([experiment.experiment_id], max_results=1000,
                              filter_string=f"tags.`airflow.run_id` = '{run_id}' and tags.`airflow.task_id` = '{task_id}'")
    return [run for run in runs if "mlflow.parentRunId" not in run.data.tags]


def _wait_for_fault_point(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str, timeout: float = 300) -> dict:
    """What the task process reported (pid, where it is) once it reached the point where it waits to be killed."""
    marker = marker_path(cluster.home, dag_id, run_id, task_id)
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert time.monotonic() < deadline, f"{task_id} never reached its fault point\n{cluster.failure_report(dag_id, run_id)}"
        time.sleep(0.5)
    return json.loads(marker.read_text())


def _kill_at_fault_point(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str) -> dict:
    info = _wait_for_fault_point(cluster, dag_id, run_id, task_id)
    os.kill(info["pid"], signal.SIGKILL)
    return info


def test_parallel_tasks_on_fresh_embedded_stores_all_succeed_on_their_first_try(cluster):
    home = cluster.home / "airflow_mlops"
    assert not (home / "mlflow.db").exists() and not (home / "optuna.db").exists(), "stores must start fresh"

    run_id = cluster.trigger("first_use", conf={"n_trials": 2}, logical_date="2026-02-01T00:00:00Z")
    cluster.wait_for_runs("first_use", [run_id], timeout=600)

    instances = {ti["task_id"]: ti for ti in cluster.task_instances("first_use", run_id)}
    assert {task: ti["try_number"] for task, ti in instances.items()} == {
        "generate": 1, "snapshot": 1, "train_a": 1, "train_b": 1, "tune_a": 1, "tune_b": 1}
    parallel = [instances[t] for t in ("train_a", "train_b", "tune_a", "tune_b")]
    assert max(ti["start_date"] for ti in parallel) < min(ti["end_date"] for ti in parallel), "they ran at once"

    client = cluster.mlflow_client()
    for task_id in ("train_a", "train_b", "tune_a", "tune_b"):
        (run,) = _top_level_runs(client, "first_use", run_id, task_id)
        assert run.info.status == "FINISHED"
    (study,) = _top_level_runs(client, "first_use", run_id, "tune_a")
    assert study.data.params["n_trials"] == "2"  # the trigger's conf reached the task


def test_training_killed_mid_run_is_retried_into_exactly_one_finished_run(cluster):
    run_id = cluster.trigger("train_killed", logical_date="2026-02-02T00:00:00Z")
    killed = _wait_for_fault_point(cluster, "train_killed", run_id, "train")
    # the "MLflow run" extra link already answers while the task is running, as the UI reads it
    running_link = cluster.extra_links("train_killed", run_id, "train")["MLflow run"]
    os.kill(killed["pid"], signal.SIGKILL)
    cluster.wait_for_runs("train_killed", [run_id])

    (train,) = [ti for ti in cluster.task_instances("train_killed", run_id) if ti["task_id"] == "train"]
    assert train["try_number"] == 2
    first_attempt = cluster.task_log("train_killed", run_id, "train", 1)
    assert "signal" in first_attempt and "-9" in first_attempt, first_attempt[-3000:]  # the SIGKILL happened
    runs = _top_level_runs(cluster.mlflow_client(), "train_killed", run_id, "train")
    by_try = {run.data.tags["airflow.try_number"]: run for run in runs}
    assert sorted(by_try) == ["1", "2"]
    assert by_try["1"].info.status == "FAILED" and "abandoned" in by_try["1"].data.tags["airflow_mlops.error"]
    assert by_try["2"].info.status == "FINISHED"
    assert killed["stage"] == "training"
    assert running_link.endswith(f"/runs/{by_try['1'].info.run_id}")
    finished_link = cluster.extra_links("train_killed", run_id, "train")["MLflow run"]
    assert finished_link.endswith(f"/runs/{by_try['2'].info.run_id}")  # the retry's run, once it ran


def test_study_killed_mid_way_keeps_its_trials_and_ends_with_n_trials_complete(cluster):
    import optuna

    run_id = cluster.trigger("tune_killed", logical_date="2026-02-03T00:00:00Z")
    killed = _kill_at_fault_point(cluster, "tune_killed", run_id, "tune")
    cluster.wait_for_runs("tune_killed", [run_id])

    (tune,) = [ti for ti in cluster.task_instances("tune_killed", run_id) if ti["task_id"] == "tune"]
    assert tune["try_number"] == 2
    client = cluster.mlflow_client()
    (parent,) = _top_level_runs(client, "tune_killed", run_id, "tune")
    assert parent.info.status == "FINISHED"
    study = optuna.load_study(study_name=parent.data.tags["optuna.study_name"],
                              storage=f"sqlite:///{cluster.home / 'airflow_mlops' / 'optuna.db'}")
    states = [trial.state.name for trial in study.trials]
    assert states.count("COMPLETE") == 6 and "RUNNING" not in states
    before_kill = {int(number): value for number, value in killed["complete"].items()}
    assert len(before_kill) == 3
    assert {t.number: t.value for t in study.trials if t.number in before_kill} == before_kill  # kept, not re-run
    assert study.trials[killed["killed_trial"]].state.name == "FAIL"  # the trial in flight at the kill

    experiment = client.get_experiment_by_name("tune_killed")
    every_run = client.search_runs([experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = '{run_id}'")
    assert not [run.info.run_id for run in every_run if run.info.status == "RUNNING"]


def test_backfill_of_three_dates_with_kills_in_registration_and_prediction_ends_consistent(cluster):
    """Three dates at once, each killed once after its model version exists (before the aliases move) and
    once mid-write of its predictions: the retries finish every run, with one snapshot, one FINISHED
    training run, one model version and one predictions snapshot per date, and a champion the
    serialized gate chose."""
    from airflow_mlops.registry.history import history

    backfill = cluster.backfill("backfilled", "2026-01-05T00:00:00Z", "2026-01-07T00:00:00Z", max_active_runs=3)
    deadline = time.monotonic() + 60
    while len(runs := [r for r in cluster.dag_runs("backfilled") if r["run_type"] == "backfill"]) < 3:
        assert time.monotonic() < deadline, f"backfill {backfill['id']} made {len(runs)} runs"
        time.sleep(1)
    finished = cluster.wait_for_runs("backfilled", [run["dag_run_id"] for run in runs], timeout=600)
    dates = sorted(run["logical_date"][:10] for run in finished)
    assert dates == ["2026-01-05", "2026-01-06", "2026-01-07"]
    for run in finished:  # each was killed once in registration and once in prediction, then retried
        tries = {ti["task_id"]: ti["try_number"] for ti in cluster.task_instances("backfilled", run["dag_run_id"])}
        assert tries == {"generate": 1, "snapshot": 1, "train": 1, "register": 2, "predict": 2}
        for task_id in ("register", "predict"):
            marker = json.loads(marker_path(cluster.home, "backfilled", run["dag_run_id"], task_id).read_text())
            assert "signal" in cluster.task_log("backfilled", run["dag_run_id"], task_id, 1), marker

    store = cluster.snapshot_store()
    records = [r for r in store.records() if r.airflow["dag_id"] == "backfilled"]
    snapshots = {r.airflow["logical_date"][:10]: r.snapshot_id for r in records if r.airflow["task_id"] == "snapshot"}
    assert sorted(snapshots) == dates and len(set(snapshots.values())) == 3  # each date its own data version
    predictions = [r for r in records if r.airflow["task_id"] == "predict"]
    assert sorted(r.airflow["logical_date"][:10] for r in predictions) == dates  # no partial or second one
    assert all(r.airflow["try_number"] == 2 and r.parents == [snapshots[r.airflow["logical_date"][:10]]] for r in predictions)
    assert store.verify() == []  # every recorded object whole

    client = cluster.mlflow_client()
    experiment = client.get_experiment_by_name("backfilled")
    trained = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
    assert sorted(run.data.tags["airflow.logical_date"][:10] for run in trained) == dates
    assert {run.data.tags["airflow.logical_date"][:10]: run.data.tags["airflow_mlops.snapshot_id"] for run in trained} == snapshots

    versions = {v.run_id: v for v in client.search_model_versions("name = 'backfilled'")}
    assert set(versions) == {run.info.run_id for run in trained}  # one version per training run, none twice
    decisions = {str(v.version): v.tags["airflow_mlops.gate.decision"] for v in versions.values()}
    moves = [entry for entry in history(client, "backfilled") if entry["alias"] == "champion"]
    assert [entry["from_version"] for entry in moves] == [None] + [entry["to_version"] for entry in moves[:-1]]  # no lost move
    champion = client.get_model_version_by_alias("backfilled", "champion")
    assert str(champion.version) == moves[-1]["to_version"]
    assert {v for v, decision in decisions.items() if decision == "champion"} == {entry["to_version"] for entry in moves}
    for entry in moves[1:]:  # each promotion beat the champion of its time on the same rows
        metric = entry["scores"]["metric"]
        assert entry["scores"]["challenger"][metric] > entry["scores"]["champion"][metric]
    for version in (v for v in versions.values() if v.tags["airflow_mlops.gate.decision"] == "challenger"):
        # a challenger lost against a version that was champion when it was judged
        assert version.tags["airflow_mlops.gate.champion_version"] in {entry["to_version"] for entry in moves}
        assert float(version.tags["airflow_mlops.gate.challenger_score"]) <= float(version.tags["airflow_mlops.gate.champion_score"])
