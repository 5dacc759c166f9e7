"""Content-addressed snapshot store: the data version every other record points at.

Layout under the store root (local directory or S3 prefix), after DVC's cache and restic's packs::

    airflow-mlops-store.json        marker: format (2) and hash algorithm (see :mod:`.marker`)
    objects/ab/cdef...              large files' contents and manifests, named by their BLAKE3 digest
    packs/<digest>.pack, .idx       small files' contents, many to a pack (see :mod:`.packs`)
    records/<snapshot_id>/<ns>-<rand>.json   one small record per snapshot taken (see :mod:`.records`)
    forgotten/<snapshot_id>         marker: the snapshot is to go at the next gc (see :mod:`.gc`)
    locks/<kind>.<pid>.<rand>.<host>   snapshots' shared locks, gc's exclusive one (see :mod:`.locks`)
    index/...                       lineage index: children, models' and runs' outputs (see :mod:`.index`)
    cache/stat.sqlite               stat cache (local stores; S3 stores keep it under AIRFLOW_HOME)

A manifest lists (relative path, size, digest) sorted by path; the snapshot id is the digest of the
manifest, which is itself stored as an object. So the same bytes under the same relative names give
the same id on any machine and in any layout, and one changed byte gives a new one.

``SnapshotStore`` is the one entry point; each of its jobs lives in a module of its own: taking
snapshots in :mod:`.ingest`, restoring in :mod:`.restore` and :mod:`.restored`, checking in
:mod:`.verify`, forgetting in :mod:`.forgetting` and deleting in :mod:`.gc`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from airflow_mlops.config import RESTORED_BUDGET_BYTES
from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend, LocalBackend, S3Backend
from airflow_mlops.snapshots.forgetting import drop_forget_markers, mark_forgotten, read_forgotten
from airflow_mlops.snapshots.gc import DEFAULT_GC_GRACE_SECONDS, GcReport, collect_garbage
from airflow_mlops.snapshots.index import LineageIndex
from airflow_mlops.snapshots.ingest import Ingest
from airflow_mlops.snapshots.marker import StoreMarker
from airflow_mlops.snapshots.packs import PackIndex
from airflow_mlops.snapshots.records import (
    ManifestEntry,
    SnapshotRecord,
    read_manifest,
    read_records,
    recorded_ids,
    resolve_id,
)
from airflow_mlops.snapshots.refs import RECORDS_PREFIX, records_prefix
from airflow_mlops.snapshots.restore import restore_snapshot
from airflow_mlops.snapshots.restored import RESTORED_MIN_IDLE_SECONDS, materialize
from airflow_mlops.snapshots.verify import VerifyProblem, verify_objects


class SnapshotStore:
    """Take, find, restore and verify snapshots in one store."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.uri = backend.uri
        self.marker = StoreMarker(backend)
        self.packs = PackIndex(backend)
        self.lineage = LineageIndex(backend, self.marker)
        self.ingest = Ingest(backend, self.marker, self.packs, self.lineage)

    @classmethod
    def open(cls, uri: str, s3_client: Any = None) -> SnapshotStore:
        """Open a local directory, or an ``s3://`` prefix through ``s3_client``."""
        if uri.startswith("s3://"):
            if s3_client is None:
                raise SnapshotError(f"store {uri} needs an S3 client (an AWS connection)")
            return cls(S3Backend(uri, s3_client))
        if "://" in uri:
            raise SnapshotError(f"store {uri!r}: only local directories and s3:// are supported")
        return cls(LocalBackend(uri))

    def snapshot(
        self,
        source: str | os.PathLike,
        *,
        airflow: Mapping[str, Any] | None = None,
        parents: Iterable[str] = (),
        extra: Mapping[str, Any] | None = None,
        source_label: str | None = None,
        cache_stats: bool = True,
    ) -> SnapshotRecord:
        """Record the file or directory tree at ``source`` and return its snapshot record.

        ``source_label`` names the source in the record instead of its path (a derived snapshot's
        transformation, whose output folder is temporary); ``cache_stats=False`` keeps such a
        folder's files out of the stat cache, where they would never be looked up again.

        Unchanged files (per the stat cache, and whose object the store still has) are not
        re-hashed; objects already stored are not re-written. A tree whose files all have the paths
        and stats they had at its last snapshot here is not matched file by file: the stat cache
        remembers that snapshot and where its objects are, and only those packs and objects are
        looked up. All input is checked before anything is written.
        """
        return self.ingest.snapshot(source, airflow=airflow, parents=parents, extra=extra,
                                    source_label=source_label, cache_stats=cache_stats)

    # ----------------------------------------------------------------- reading records

    def records(self, snapshot_id: str | None = None) -> list[SnapshotRecord]:
        """Snapshot records, newest first; only those of ``snapshot_id`` when given."""
        self.marker.require()
        return read_records(self.backend, records_prefix(self.resolve(snapshot_id)) if snapshot_id else RECORDS_PREFIX)

    def snapshot_ids(self) -> set[str]:
        return recorded_ids(self.backend)

    def resolve(self, snapshot_id: str) -> str:
        """The full id for an id or a unique prefix of at least six characters."""
        self.marker.require()
        return resolve_id(self.backend, snapshot_id)

    def manifest(self, snapshot_id: str) -> list[ManifestEntry]:
        """The files of a snapshot, checked against the id before they are trusted."""
        return read_manifest(self.backend, self.resolve(snapshot_id))

    def read_manifest(self, full_id: str) -> list[ManifestEntry]:
        """``manifest`` of a full id, without looking its records up."""
        return read_manifest(self.backend, full_id)

    # ----------------------------------------------------------------- lineage index

    def children(self, snapshot_id: str) -> list[str]:
        """Ids of the snapshots recorded with ``snapshot_id`` (a full id) among their parents: one listing."""
        return self.lineage.children(snapshot_id)

    def outputs_of(self, *, model: str | None = None, version: str | None = None, run_id: str | None = None) -> list[str]:
        """Ids of the snapshots a model wrote (batch predictions): registered ``model`` ``version``, or run ``run_id``'s."""
        return self.lineage.outputs_of(model=model, version=version, run_id=run_id)

    def reindex(self) -> int:
        """Rebuild the lineage index from every record; returns the number of records read."""
        return self.lineage.reindex()

    # ----------------------------------------------------------------- forgetting and gc

    def forget(self, snapshot_ids: Iterable[str], *, reason: str) -> None:
        """Mark snapshots (ids or prefixes) as forgotten: they go at the next gc; see :mod:`.forgetting`."""
        self.marker.require()
        mark_forgotten(self.backend, {self.resolve(snapshot_id) for snapshot_id in snapshot_ids}, reason=reason)

    def forgotten(self) -> dict[str, dict]:
        """Forgotten snapshot ids, each with its marker (reason, time, host)."""
        return read_forgotten(self.backend) if self.marker.exists else {}

    def unforget(self, snapshot_ids: Iterable[str]) -> None:
        """Drop the forget markers of full snapshot ids: the snapshots are kept again."""
        self.marker.require()
        drop_forget_markers(self.backend, snapshot_ids)

    def gc(
        self, *, protect: Collection[str] = (), grace_seconds: float = DEFAULT_GC_GRACE_SECONDS, dry_run: bool = False
    ) -> GcReport:
        """Delete what no kept snapshot uses; see :mod:`~airflow_mlops.snapshots.gc`.

        Kept = every recorded snapshot not forgotten, plus every full id in ``protect``. Deletes the
        records, lineage index keys and markers of the other forgotten snapshots, the loose objects
        and whole packs no kept manifest references, and repacks packs that are mostly garbage. Never
        deletes an object or pack younger than ``grace_seconds``, or anything an in-flight snapshot
        may use. With ``dry_run`` nothing is written or deleted; the report says what would go.
        """
        self.marker.require()
        return collect_garbage(self.backend, self.packs, protect=protect, grace_seconds=grace_seconds, dry_run=dry_run)

    # ----------------------------------------------------------------- restore and verify

    def restore(self, snapshot_id: str, dest: str | os.PathLike, *, force: bool = False) -> list[ManifestEntry]:
        """Write the snapshot's files under ``dest``, each checked against its digest; see :mod:`.restore`.

        Refuses entries that would land outside ``dest``, and a non-empty ``dest`` unless ``force``
        (which overwrites listed files, keeps others). A failed restore writes nothing into ``dest``.
        """
        full_id = self.resolve(snapshot_id)
        entries = read_manifest(self.backend, full_id)
        restore_snapshot(self.backend, self.packs, full_id, entries, dest, force=force)
        return entries

    def materialize(
        self,
        snapshot_id: str,
        cache_root: str | os.PathLike,
        *,
        budget_bytes: int = RESTORED_BUDGET_BYTES,
        min_idle_seconds: float = RESTORED_MIN_IDLE_SECONDS,
    ) -> Path:
        """A local, read-only directory with the snapshot's files: ``cache_root/<id>``, restored once and reused.

        Checked against the manifest before each reuse, restored again if anything differs, and
        evicted least recently used first beyond ``budget_bytes``: see :mod:`~airflow_mlops.snapshots.restored`.
        """
        return materialize(self.backend, self.packs, self.resolve(snapshot_id), cache_root,
                           budget_bytes=budget_bytes, min_idle_seconds=min_idle_seconds)

    def verify(self, snapshot_id: str | None = None) -> list[VerifyProblem]:
        """Re-hash stored objects: those of one snapshot, or every object in the store (each packed copy)."""
        self.marker.require()
        ids = [self.resolve(snapshot_id)] if snapshot_id else sorted(self.snapshot_ids())
        return verify_objects(self.backend, self.packs, ids, every_object=snapshot_id is None)
