"""Store maintenance, weekly: forget old snapshots by keep rules, collect what nothing uses, clear stale staging.

One ``RetentionOperator`` task on the default snapshot store and MLflow connection (the embedded stores
when none is configured). Keep rules are counted per dag_id/task_id that took the snapshots (per source
for snapshots taken outside Airflow); a snapshot is kept if any rule keeps it. Every snapshot upstream of
any registered model version (its training data, that data's ETL parents, its tuning run's inputs) is
kept whatever the rules say, read through lineage when the task runs; the task log shows each snapshot's
decision and why. Predict-staging folders idle for a day (left by killed batch predictions) are removed.

**Params** (the trigger form): ``keep_last``, ``keep_daily``, ``keep_weekly`` (0: rule not used; at
least one above 0), and ``dry_run`` to log the decisions without forgetting or deleting anything:
trigger with ``dry_run`` on first to see what the rules would do. The same as ``airflow-mlops forget``
then ``airflow-mlops gc`` in a shell.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_mlops.operators import RetentionOperator

with DAG(
    dag_id="store_maintenance",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    # No catchup: each run works on the store as it is now, so a missed week needs no run of its own
    # (unpausing after a pause would otherwise queue one identical run per missed week).
    catchup=False,
    # One run at a time: two collections on one store would only repeat each other's work.
    max_active_runs=1,
    # A retry helps a transient failure (MLflow or S3 away); forget and gc are idempotent, and nothing
    # is forgotten unless protection could be read first.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    params={
        "keep_last": Param(7, type="integer", minimum=0, description="keep the N newest snapshots of each task"),
        "keep_daily": Param(14, type="integer", minimum=0,
                            description="keep the newest snapshot of each of the N newest days (per task)"),
        "keep_weekly": Param(8, type="integer", minimum=0,
                             description="keep the newest snapshot of each of the N newest ISO weeks (per task)"),
        "dry_run": Param(False, type="boolean", description="log what would be forgotten and deleted, change nothing"),
    },
    tags=["airflow-mlops", "example", "maintenance"],
    doc_md=__doc__,
) as dag:
    RetentionOperator(
        task_id="apply_retention",
        keep_last="{{ params.keep_last }}",
        keep_daily="{{ params.keep_daily }}",
        keep_weekly="{{ params.keep_weekly }}",
        dry_run="{{ params.dry_run }}",
    )
