"""Content-addressed data snapshots: the data version every other record points at."""

from airflow_mlops.snapshots.store import (
    ManifestEntry,
    SnapshotRecord,
    SnapshotStore,
    VerifyProblem,
    parse_snapshot_ref,
    snapshot_uri,
)

__all__ = [
    "ManifestEntry",
    "SnapshotRecord",
    "SnapshotStore",
    "VerifyProblem",
    "parse_snapshot_ref",
    "snapshot_uri",
]
