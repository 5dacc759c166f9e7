"""Reproduce a training run, a tuning trial or an ETL snapshot from its record, triggered from the Airflow UI.

Give the MLflow run id (or the snapshot id) as ``run_id``. The task verifies the input snapshots, checks
the recorded code against the code deployed, trains or derives again, and logs the report (metrics side
by side with their differences, code and package differences) in the task log and, for runs, as
``reproduce/report.json`` on the new MLflow run, tagged ``airflow_mlops.reproduces``. The task fails when
anything differs beyond ``tolerance``, or when it refuses (damaged data, changed code without
``allow_code_drift``). The same as ``airflow-mlops reproduce RUN_ID`` in a shell.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

with DAG(
    dag_id="reproduce_run",
    schedule=None,  # on demand: triggered with the run to reproduce
    start_date=datetime(2026, 1, 1),
    catchup=False,  # nothing to catch up on without a schedule
    max_active_runs=4,  # reproductions are independent of each other
    # A retry helps a transient failure (a server away); a mismatch or a refusal fails at once.
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    doc_md=__doc__,
    params={
        "run_id": Param(
            type="string", pattern=r"^(\S+#)?[0-9a-f]{6,64}$",
            description="MLflow run id (training run or tuning trial), or ETL snapshot id (or <store>#<id>)",
        ),
        "tolerance": Param(0.0, type="number", minimum=0, description="largest absolute metric difference that matches"),
        "allow_code_drift": Param(False, type="boolean", description="reproduce even if the recorded code files changed"),
    },
    tags=["airflow-mlops", "example"],
) as dag:

    @task
    def reproduce(params: dict | None = None, **context) -> dict:
        """Reproduce ``params.run_id``; fails unless every value matches."""
        import logging

        from airflow.sdk.exceptions import AirflowFailException

        from airflow_mlops.config import default_snapshot_store
        from airflow_mlops.hooks.mlflow import MlflowHook
        from airflow_mlops.hooks.snapshot_store import SnapshotStoreHook
        from airflow_mlops.hooks.spark import SparkHook
        from airflow_mlops.reproduce import reproduce as reproduce_ref
        from airflow_mlops.utils.airflow_context import task_identity

        with MlflowHook().tracking_session() as client:
            report = reproduce_ref(
                params["run_id"], client=client, default_store=default_snapshot_store(),
                tolerance=float(params["tolerance"]), allow_code_drift=bool(params["allow_code_drift"]),
                open_store=lambda uri: SnapshotStoreHook(uri).get_conn(),
                spark_runner=lambda: SparkHook(app_name="reproduce_run.reproduce"),
                identity=task_identity(context),
            )
        logging.getLogger(__name__).info("Reproduction report:\n%s", report.render())
        if not report.ok:
            raise AirflowFailException(f"{report.kind} {report.reference} did not reproduce: see the report above")
        return report.to_dict()

    reproduce()
