"""The lineage index: empty keys that make a downstream lineage step one listing instead of a read of every record.

    index/children/<parent_id>/<child_id>    snapshots derived from a parent,
    index/models/<name>/<version>/<id>       snapshots a registered model version wrote (predictions),
    index/runs/<run_id>/<id>                 and those an unregistered run's model wrote
    index/complete.json                      marker: every record of the store is in the index

A snapshot writes its index keys before its record, so a recorded snapshot is always in the index
(an index key whose record never came is skipped). A store written before the index existed is
indexed once, on its first downstream lookup (or ``reindex``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from airflow_mlops.snapshots.backends import Backend
from airflow_mlops.snapshots.marker import StoreMarker
from airflow_mlops.snapshots.records import SnapshotRecord, encode_json, read_record, read_records
from airflow_mlops.snapshots.refs import records_prefix

INDEX_MARKER_KEY = "index/complete.json"


def index_prefix(kind: str, *subject: str) -> str:
    """``index/<kind>/<subject...>/``: the folder listing the snapshots indexed under one subject."""
    return "/".join(["index", kind, *(quote(str(part), safe="") for part in subject)]) + "/"


def index_keys(record: SnapshotRecord) -> list[str]:
    """The index keys of a record: one per parent, and one for the model that wrote it (if any)."""
    prefixes = [index_prefix("children", parent) for parent in record.parents]
    model = record.extra.get("model") or {}
    if model.get("name") and model.get("version") is not None:
        prefixes.append(index_prefix("models", model["name"], model["version"]))
    elif model.get("run_id"):
        prefixes.append(index_prefix("runs", model["run_id"]))
    return [prefix + record.snapshot_id for prefix in prefixes]


def snapshot_keys(backend: Backend, snapshot_id: str) -> list[str]:
    """The keys that make a snapshot visible: its record files and the lineage index keys they imply."""
    record_keys = list(backend.list_keys(records_prefix(snapshot_id)))
    records = [read_record(backend, key) for key in record_keys]
    return record_keys + sorted({key for record in records for key in index_keys(record)})


class LineageIndex:
    """Looks snapshots up by parent or by the model that wrote them; writes the keys that make that possible."""

    def __init__(self, backend: Backend, marker: StoreMarker) -> None:
        self.backend = backend
        self.marker = marker
        self._complete = False  # checked (one read of its marker) on the first lookup

    def children(self, snapshot_id: str) -> list[str]:
        """Ids of the snapshots recorded with ``snapshot_id`` (a full id) among their parents: one listing."""
        return self._indexed("children", snapshot_id)

    def outputs_of(self, *, model: str | None = None, version: str | None = None, run_id: str | None = None) -> list[str]:
        """Ids of the snapshots a model wrote (batch predictions): registered ``model`` ``version``, or run ``run_id``'s."""
        return self._indexed("models", model, str(version)) if model else self._indexed("runs", run_id)

    def _indexed(self, kind: str, *subject: str) -> list[str]:
        if not self.marker.exists:
            return []  # no store yet: nothing derived from anything
        if not self._complete:
            if not self.backend.exists(INDEX_MARKER_KEY):
                self.reindex()
            self._complete = True
        prefix = index_prefix(kind, *subject)
        return sorted(key[len(prefix) :] for key in self.backend.list_keys(prefix))

    def reindex(self) -> int:
        """Write the index keys of every record, then the index marker; returns the number of records read.

        For a store written before the index existed (done on its first downstream lookup), or to
        repair one. Safe while others snapshot into the store: they write their own records' keys.
        """
        self.marker.require()
        records = read_records(self.backend)
        self.put_keys([key for record in records for key in index_keys(record)])
        self.mark_complete()
        return len(records)

    def mark_complete(self) -> None:
        """Write the index marker: every record of the store is in the index."""
        self.backend.put_bytes(INDEX_MARKER_KEY, encode_json({"format": 1}))
        self._complete = True

    def put_keys(self, keys: list[str]) -> None:
        if not keys:
            return
        with ThreadPoolExecutor(max_workers=self.backend.parallelism) as pool:
            list(pool.map(lambda key: self.backend.put_bytes(key, b""), sorted(set(keys))))
