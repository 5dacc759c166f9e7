"""Opens a snapshot store from Airflow's world: S3 stores get their client from the Amazon provider."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_mlops.config import default_snapshot_store, mlops_home, restored_budget_bytes

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


def restore_snapshot_ref(
    reference: str | dict[str, Any], store: str | None, aws_conn_id: str | None, *, argument: str | None = None,
) -> tuple[str, str, Path]:
    """(snapshot URI, full snapshot id, local directory with its files) for a snapshot reference.

    ``reference`` is a URI ``<store>#<id>``, a ``DataSnapshotOperator`` result (its ``uri``), or an id
    (or unique prefix) in ``store``. The files are restored once per id under AIRFLOW_HOME, checked
    before each reuse, and evicted least recently used first beyond ``restored_budget_bytes()``.
    A snapshot error names ``argument``, the operator argument the reference came from, when given.
    """
    from airflow_mlops.errors import SnapshotError
    from airflow_mlops.snapshots import parse_snapshot_ref, snapshot_uri

    text = reference["uri"] if isinstance(reference, dict) else reference
    try:
        store_uri, snapshot_id = parse_snapshot_ref(text, store or default_snapshot_store())
        snapshot_store = SnapshotStoreHook(store_uri, aws_conn_id).get_conn()
        snapshot_id = snapshot_store.resolve(snapshot_id)
        path = snapshot_store.materialize(snapshot_id, mlops_home() / "restored", budget_bytes=restored_budget_bytes())
    except SnapshotError as error:
        if argument is None:
            raise
        raise type(error)(f"{argument}={text!r}: {error}") from error
    return snapshot_uri(snapshot_store.uri, snapshot_id), snapshot_id, path
