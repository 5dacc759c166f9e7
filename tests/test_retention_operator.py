"""RetentionOperator on the embedded MLflow store (no connection configured), and the weekly maintenance DAG."""

from __future__ import annotations

import os
import time

import pytest

from airflow_mlops.operators.retention import RetentionOperator
from airflow_mlops.snapshots import SnapshotStore
from airflow_mlops.tracking.tags import SNAPSHOT_TAG
from tests.task_process import run_task
from tests.test_example_dags import load_dag_module, resolved_params
from tests.test_retention import take


def test_the_operator_forgets_collects_and_clears_stale_staging_keeping_what_a_version_trains_on(
        tmp_path, embedded_client, capsys):
    store = SnapshotStore.open(str(tmp_path / "store"))
    trained_on = take(store, tmp_path, "trained_on", "snapshot")
    old = take(store, tmp_path, "old", "snapshot")
    newest = take(store, tmp_path, "newest", "snapshot")
    run = embedded_client.create_run(embedded_client.create_experiment("m"), tags={SNAPSHOT_TAG: trained_on}).info.run_id
    embedded_client.create_registered_model("m")
    embedded_client.create_model_version("m", f"runs:/{run}/model", run_id=run)
    stale = tmp_path / "staging" / "killed"
    stale.mkdir(parents=True)
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    task = {"dag_id": "store_maintenance", "task_id": "apply_retention", "keep_last": "1", "store": store.uri,
            "staging_dir": str(tmp_path / "staging"), "gc_grace_seconds": 0}

    dry = run_task(RetentionOperator, run_id="m1", dry_run="True", **task)["result"]
    assert dry["dry_run"] is True and (dry["kept"], dry["forgotten"], dry["staging_removed"]) == (2, 1, 1)
    assert store.forgotten() == {} and stale.exists() and store.snapshot_ids() == {trained_on, old, newest}
    logged = capsys.readouterr().out  # the task log: the decision table
    assert f"keep    {trained_on[:12]}" in logged and "model m v1 trains on it" in logged and "would delete" in logged

    done = run_task(RetentionOperator, run_id="m2", dry_run=False, **task)["result"]

    assert done["dry_run"] is False and (done["kept"], done["forgotten"], done["deleted_snapshots"]) == (2, 1, 1)
    assert store.snapshot_ids() == {trained_on, newest} and not stale.exists()
    assert store.verify() == []


def test_the_operator_refuses_bad_rules_before_touching_the_store_and_has_nothing_to_do_on_a_new_one(tmp_path):
    from airflow_mlops.errors import MlopsError

    task = {"dag_id": "d", "run_id": "r", "task_id": "t", "store": str(tmp_path / "s"),
            "staging_dir": str(tmp_path / "staging")}
    with pytest.raises(MlopsError, match="^keep_daily must be a whole number of at least 0, got -2$"):
        run_task(RetentionOperator, keep_daily="-2", **task)
    with pytest.raises(MlopsError, match="dry_run must be true or false"):
        run_task(RetentionOperator, keep_last=1, dry_run="maybe", **task)
    assert not (tmp_path / "s").exists()

    result = run_task(RetentionOperator, keep_last=1, **task)["result"]  # no MLflow needed: nothing to protect
    assert result == {"kept": 0, "forgotten": 0, "unforgotten": 0, "deleted_snapshots": 0, "deleted_objects": 0,
                      "deleted_packs": 0, "freed_bytes": 0, "staging_removed": 0, "dry_run": False}


def test_maintenance_dag_is_weekly_without_catchup_with_retries_docs_and_rule_params():
    module = load_dag_module("store_maintenance")
    dag = module.dag

    assert dag.dag_id == "store_maintenance" and not dag.catchup and dag.max_active_runs == 1
    assert dag.schedule == "@weekly" and dag.default_args["retries"] >= 1
    assert dag.doc_md == module.__doc__ and "dry_run" in dag.doc_md
    task = dag.get_task("apply_retention")
    assert isinstance(task, RetentionOperator) and {"keep_last", "dry_run"} <= set(task.template_fields)
    assert resolved_params(dag, {}) == {"keep_last": 7, "keep_daily": 14, "keep_weekly": 8, "dry_run": False}
    from airflow.sdk.definitions.param import ParamValidationError

    for conf in ({"keep_last": -1}, {"keep_daily": 1.5}, {"dry_run": "yes"}):
        with pytest.raises(ParamValidationError):
            resolved_params(dag, conf)
