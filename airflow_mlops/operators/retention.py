"""RetentionOperator: apply keep rules to a snapshot store, collect what is forgotten, clear stale staging."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.snapshot_store import SnapshotStoreHook
from airflow_mlops.operators._input import bad_input_fails_at_once
from airflow_mlops.utils.templated import as_flag


class RetentionOperator(BaseOperator):
    """Forget the snapshots no keep rule keeps, then garbage-collect the store; never what a model needs.

    Keep rules as restic's, counted per dag_id/task_id (else per source): see
    :mod:`airflow_mlops.retention`. Every snapshot upstream of any registered model version
    (all versions, aliased or not) is kept, read through lineage from the MLflow connection; gc
    recomputes that right before it deletes. The decision table (id, time, group, reason) is logged.
    Also removes predict-staging folders idle for a day (left behind by killed batch predictions).

    :param keep_last: keep the N newest snapshots of each group (templated).
    :param keep_daily: keep the newest snapshot of each of the N newest days (templated).
    :param keep_weekly: keep the newest snapshot of each of the N newest ISO weeks (templated).
    :param dry_run: decide and log, change nothing (templated).
    :param collect_garbage: after forgetting, delete forgotten snapshots and unused objects and packs.
    :param gc_grace_seconds: objects younger than this are left to gc (default: the store's).
    :param store: snapshot store (templated); default the store under AIRFLOW_HOME.
    :param staging_dir: BatchPredictOperator's staging folder to clear (templated); default under AIRFLOW_HOME.
    :param mlflow_conn_id: Airflow ``mlflow`` connection; the embedded store when not configured.
    :param aws_conn_id: AWS connection for ``s3://`` snapshot stores.
    :return: counts: ``{"kept", "forgotten", "unforgotten", "deleted_snapshots", "deleted_objects",
        "deleted_packs", "freed_bytes", "staging_removed", "dry_run"}`` as XCom.
    """

    template_fields: Sequence[str] = ("keep_last", "keep_daily", "keep_weekly", "dry_run", "store", "staging_dir")
    ui_color = "#f0e4d6"

    def __init__(
        self,
        *,
        keep_last: int | str = 0,
        keep_daily: int | str = 0,
        keep_weekly: int | str = 0,
        dry_run: bool | str = False,
        collect_garbage: bool = True,
        gc_grace_seconds: float | None = None,
        store: str | None = None,
        staging_dir: str | None = None,
        mlflow_conn_id: str | None = MlflowHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.keep_last = keep_last
        self.keep_daily = keep_daily
        self.keep_weekly = keep_weekly
        self.dry_run = dry_run
        self.collect_garbage = collect_garbage
        self.gc_grace_seconds = gc_grace_seconds
        self.store = store
        self.staging_dir = staging_dir
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    @bad_input_fails_at_once
    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_mlops.config import mlops_home
        from airflow_mlops.retention import KeepRules, apply_retention

        rules = KeepRules.parse(self.keep_last, self.keep_daily, self.keep_weekly, spelling="keep_{}")
        dry_run = as_flag(self.dry_run, "dry_run")
        store = SnapshotStoreHook(self.store, self.aws_conn_id).get_conn()
        report = apply_retention(
            store, MlflowHook(self.mlflow_conn_id).tracking_session, rules, collect_garbage=self.collect_garbage,
            grace_seconds=self.gc_grace_seconds, dry_run=dry_run,
            staging_dir=self.staging_dir or mlops_home() / "predict-staging",
        )
        self.log.info("Retention %s on %s:\n%s", rules.describe(), store.uri, report.render())
        return report.counts()
