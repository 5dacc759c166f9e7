"""Opens a snapshot store from Airflow's world: S3 stores get their client from the Amazon provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

from airflow_mlops.config import default_snapshot_store

if TYPE_CHECKING:
    from airflow_mlops.snapshots import SnapshotStore


class SnapshotStoreHook(BaseHook):
    """Opens the snapshot store at ``store`` (a local directory or ``s3://bucket/prefix``).

    For S3, endpoint and credentials come from the Airflow connection ``aws_conn_id`` through the
    Amazon provider's ``S3Hook``; nothing here reads keys or prints them.

    :param store: store location; the default store under AIRFLOW_HOME when empty.
    :param aws_conn_id: Airflow AWS connection for ``s3://`` stores.
    """

    def __init__(self, store: str | None = None, aws_conn_id: str | None = "aws_default") -> None:
        super().__init__()
        self.store = store or default_snapshot_store()
        self.aws_conn_id = aws_conn_id

    def get_conn(self) -> SnapshotStore:
        from airflow_mlops.snapshots import SnapshotStore

        client = None
        if self.store.startswith("s3://"):
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            client = S3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        return SnapshotStore.open(self.store, s3_client=client)
