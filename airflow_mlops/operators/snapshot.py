"""DataSnapshotOperator: record a dataset as a content-addressed snapshot, the data version."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, BaseOperator

from airflow_mlops.hooks.snapshot_store import SnapshotStoreHook
from airflow_mlops.operators._input import bad_input_fails_at_once
from airflow_mlops.operators._lineage import OpenLineageMixin, SnapshotUse
from airflow_mlops.utils.airflow_context import task_identity

ASSET_SCHEME = "x-airflow-mlops-snapshot"


class DataSnapshotOperator(OpenLineageMixin, BaseOperator):
    """Snapshot a file or directory tree into a snapshot store; the snapshot id is the data version.

    Unchanged files are not re-hashed (stat cache) and identical contents are stored once. The record
    names the Airflow dag, run, task and try that took it. The output is declared as an Airflow
    ``Asset`` (its events carry the snapshot id and URI), so downstream DAGs can be scheduled on new
    data versions. OpenLineage: the snapshot as output dataset (version: its id; schema of CSV or
    Parquet data).

    :param source: file or directory to snapshot (templated), e.g. ``data/raw/{{ ds }}`` for runs with a logical date.
    :param store: local directory or ``s3://bucket/prefix`` (templated); default: the store under
        AIRFLOW_HOME (``$AIRFLOW_HOME/airflow_mlops/snapshots``, or ``$AIRFLOW_MLOPS_STORE``).
    :param aws_conn_id: Airflow AWS connection used for ``s3://`` stores.
    :param asset: the Asset this task updates; default one named ``snapshot/<dag_id>/<task_id>``.
    :return: ``{"snapshot_id", "uri", "files", "bytes"}`` as XCom.
    """

    template_fields: Sequence[str] = ("source", "store")
    ui_color = "#c9e4de"

    def __init__(
        self,
        *,
        source: str,
        store: str | None = None,
        aws_conn_id: str | None = "aws_default",
        asset: Asset | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.store = store
        self.aws_conn_id = aws_conn_id
        self.asset = declare_snapshot_asset(self, asset)

    @bad_input_fails_at_once
    def execute(self, context: Any) -> dict[str, Any]:
        lineage = self.start_lineage(context)
        store = SnapshotStoreHook(self.store, self.aws_conn_id).get_conn()
        record = store.snapshot(self.source, airflow=task_identity(context))
        lineage.outputs.append(SnapshotUse(record.uri, Path(record.source), record))
        self.log.info(
            "Snapshot %s of %s: %d files, %d bytes in %s", record.snapshot_id, record.source,
            record.files, record.bytes, record.store,
        )
        result = {"snapshot_id": record.snapshot_id, "uri": record.uri, "files": record.files, "bytes": record.bytes}
        context["outlet_events"][self.asset].extra = dict(result)
        return result


def declare_snapshot_asset(operator: BaseOperator, asset: Asset | None) -> Asset:
    """Add the Asset a snapshot-producing task updates to its outlets (default ``snapshot/<dag_id>/<task_id>``).

    Its events carry the snapshot id, so downstream DAGs scheduled on it read the new data version.
    """
    asset = asset or Asset(
        name=f"snapshot/{operator.dag_id}/{operator.task_id}",
        uri=f"{ASSET_SCHEME}://{operator.dag_id}/{operator.task_id}",
    )
    operator.outlets = [*operator.outlets, asset]
    return asset
