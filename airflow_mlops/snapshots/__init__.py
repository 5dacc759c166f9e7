"""Content-addressed data snapshots: the data version every other record points at."""

from airflow_mlops.snapshots.store import (
    ManifestEntry,
    SnapshotRecord,
    SnapshotStore,
    VerifyProblem,
    is_snapshot_id,
    parse_snapshot_ref,
    snapshot_uri,
)

__all__ = [
    "ManifestEntry",
    "SnapshotRecord",
    "SnapshotStore",
    "VerifyProblem",
    "is_snapshot_id",
    "parse_snapshot_ref",
    "snapshot_uri",
]
