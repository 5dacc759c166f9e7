"""Content-addressed data snapshots: the data version every other record points at."""

from airflow_mlops.snapshots.gc import DEFAULT_GC_GRACE_SECONDS, GcReport
from airflow_mlops.snapshots.records import ManifestEntry, SnapshotRecord
from airflow_mlops.snapshots.refs import is_snapshot_id, parse_snapshot_ref, snapshot_uri
from airflow_mlops.snapshots.store import SnapshotStore
from airflow_mlops.snapshots.verify import VerifyProblem

__all__ = [
    "DEFAULT_GC_GRACE_SECONDS",
    "GcReport",
    "ManifestEntry",
    "SnapshotRecord",
    "SnapshotStore",
    "VerifyProblem",
    "is_snapshot_id",
    "parse_snapshot_ref",
    "snapshot_uri",
]
