"""What a snapshot is on record: its manifest (the files, whose digest is the id) and its records (who took it, when, from what)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from airflow_mlops.errors import SnapshotError, SnapshotRefError
from airflow_mlops.snapshots.backends import Backend
from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.snapshots.refs import (
    ID_LENGTH,
    MIN_ID_PREFIX,
    RECORDS_PREFIX,
    is_snapshot_id,
    object_key,
    records_prefix,
    snapshot_uri,
)

MANIFEST_FORMAT = 1


class ManifestEntry(NamedTuple):
    """One file of a snapshot. A named tuple: reading the manifest of many files makes one per file."""

    path: str
    size: int
    digest: str


@dataclass
class SnapshotRecord:
    """One snapshot taken: which bytes (the id), from where, when, by whom, derived from what."""

    snapshot_id: str
    store: str
    created: str
    files: int
    bytes: int
    source: str
    host: str
    airflow: dict[str, Any] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return snapshot_uri(self.store, self.snapshot_id)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uri": self.uri}


def encode_json(value: Any) -> bytes:
    """The store's one JSON spelling (sorted keys, no spaces, UTF-8): manifests, records and markers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode_manifest(entries: Iterable[tuple[str, int, str]]) -> bytes:
    """Canonical manifest bytes of ``ManifestEntry`` (or plain (path, size, digest)) tuples: the snapshot id is their digest."""
    files = sorted(entries)  # paths are unique: sorted by path (JSON writes the tuples as lists)
    return encode_json({"format": MANIFEST_FORMAT, "files": files})


def read_manifest(backend: Backend, full_id: str) -> list[ManifestEntry]:
    """The files of the snapshot ``full_id``, checked against the id before they are trusted."""
    try:
        data = backend.get_bytes(object_key(full_id))
    except KeyError:
        raise SnapshotError(f"manifest of snapshot {full_id} is missing; run 'airflow-mlops verify'") from None
    if digest_bytes(data) != full_id:
        raise SnapshotError(f"manifest of snapshot {full_id} is damaged; run 'airflow-mlops verify'")
    return [ManifestEntry(*row) for row in json.loads(data)["files"]]


def read_record(backend: Backend, key: str) -> SnapshotRecord:
    return SnapshotRecord(**json.loads(backend.get_bytes(key)))


def read_records(backend: Backend, prefix: str = RECORDS_PREFIX) -> list[SnapshotRecord]:
    """The records under ``prefix`` (all, or one snapshot's ``records_prefix``), newest first."""
    records = [read_record(backend, key) for key in backend.list_keys(prefix) if key.endswith(".json")]
    return sorted(records, key=lambda record: record.created, reverse=True)


def recorded_ids(backend: Backend) -> set[str]:
    """Every recorded snapshot's id, from one listing."""
    return {key.split("/")[1] for key in backend.list_keys(RECORDS_PREFIX)}


def is_recorded(backend: Backend, full_id: str) -> bool:
    return any(backend.list_keys(records_prefix(full_id)))


def resolve_id(backend: Backend, snapshot_id: str) -> str:
    """The full id for an id or a unique prefix of at least six characters."""
    candidate = snapshot_id.strip().lower()
    if not is_snapshot_id(candidate):
        raise SnapshotRefError(f"{snapshot_id!r} is not a snapshot id (hex, at least {MIN_ID_PREFIX} characters)")
    # a full id lists its own folder only; a prefix lists the ids under records/ starting with it
    prefix = records_prefix(candidate) if len(candidate) == ID_LENGTH else RECORDS_PREFIX + candidate
    matches = {key.split("/")[1] for key in backend.list_keys(prefix)}
    if not matches:
        raise SnapshotRefError(f"unknown snapshot id {snapshot_id} in store {backend.uri}; see 'airflow-mlops log'")
    if len(matches) > 1:
        raise SnapshotRefError(f"snapshot id prefix {snapshot_id} is ambiguous in {backend.uri}; give more characters")
    return matches.pop()
