"""Taking a snapshot: scan a tree, store the bytes the store lacks, then its manifest and record.

Objects, packs, manifest and index keys are written before the record, each atomically, so a
snapshot exists only once all of its bytes do. Files unchanged since their last snapshot (per the
stat cache) are not read again, and a tree unchanged as a whole is not even matched file by file.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend
from airflow_mlops.snapshots.hashing import digest_bytes, digest_file
from airflow_mlops.snapshots.index import LineageIndex, index_keys
from airflow_mlops.snapshots.locks import SHARED, store_lock
from airflow_mlops.snapshots.marker import StoreMarker
from airflow_mlops.snapshots.packs import PACK_OBJECT_LIMIT, PackIndex, PackWriter
from airflow_mlops.snapshots.records import SnapshotRecord, encode_json, encode_manifest
from airflow_mlops.snapshots.refs import FORGOTTEN_PREFIX, object_key, records_prefix
from airflow_mlops.snapshots.scan import scan_tree
from airflow_mlops.snapshots.statcache import FileStat, StatCache, StoredTree, TreeStat, cached_digests, now_ns

#: Files below this size are read into memory once: hashed and stored (packed, if small enough) from the same bytes.
_READ_WHOLE_LIMIT = 1024 * 1024
#: Files handed to one worker at once, up to this many bytes: per-file hand-offs cost more than small files.
_BATCH_BYTES = 1024 * 1024
_BATCH_FILES = 256


class Ingest:
    """The write path of one store: files in, snapshot record out."""

    def __init__(self, backend: Backend, marker: StoreMarker, packs: PackIndex, lineage: LineageIndex) -> None:
        self.backend = backend
        self.marker = marker
        self.packs = packs
        self.lineage = lineage
        self.stat_cache = StatCache(backend.stat_cache_path())

    def snapshot(
        self,
        source: str | os.PathLike,
        *,
        airflow: Mapping[str, Any] | None,
        parents: Iterable[str],
        extra: Mapping[str, Any] | None,
        source_label: str | None,
        cache_stats: bool,
    ) -> SnapshotRecord:
        """``SnapshotStore.snapshot``: record the file or directory tree at ``source``."""
        root = Path(source).expanduser().absolute()
        scan_started = now_ns()
        files = scan_tree(root)
        tree = TreeStat.of(files)
        remembered = self.stat_cache.stored_tree(root, tree) if self.marker.exists and cache_stats else None
        known = None if remembered else self._known_digests(root, files)
        new_store = not self.marker.exists
        self.marker.prepare_for_writing()
        with store_lock(self.backend, SHARED):  # from the first look at what the store has to the record
            if remembered and not self._holds(remembered):  # gc, or a hand, deleted some of it
                remembered, known = None, self._known_digests(root, files)
            stored_tree, misses, stored = (remembered, [], {}) if remembered else self._store_tree(files, known)
            record = self._write_record(stored_tree.snapshot_id, len(files), tree.size, source_label or str(root),
                                        airflow, parents, extra)
        if new_store:  # its first record: a store made by this code indexes every record as it is written
            self.lineage.mark_complete()
        if cache_stats:
            self.stat_cache.store({path: (stat, stored[path]) for path, stat in misses}, scan_started,
                                  None if remembered else (root, tree, stored_tree))
        return record

    def _known_digests(self, root: Path, files: list[tuple[str, str, FileStat]]) -> list[str | None]:
        """Each scanned file's digest per the stat cache (None: it must be read), once every file to read is readable."""
        cached = self.stat_cache.load_under(root) if self.marker.exists else {}  # a new store holds no object
        known = cached_digests(cached, files)
        if None in known:
            for (_rel, path, _stat), digest in zip(files, known):
                if digest is None and not os.access(path, os.R_OK):
                    raise SnapshotError(f"cannot read {path}: permission denied")
        return known

    def _holds(self, tree: StoredTree) -> bool:
        """Whether the store still has a remembered tree's manifest, packs and loose objects."""
        keys = [object_key(tree.snapshot_id), *map(object_key, tree.loose)]
        return set(tree.packs) <= self.packs.listed() and not self.backend.missing(keys)

    def _store_tree(
        self, files: list[tuple[str, str, FileStat]], known: list[str | None]
    ) -> tuple[StoredTree, list[tuple[str, FileStat]], dict[str, str]]:
        """Store the files the store lacks, then the manifest (under ``snapshot``'s shared lock).

        ``known`` holds each file's digest per the stat cache (None: not cached). Returns the snapshot
        with where its objects are, the files read (misses, and hits whose object is gone) and their
        digests by path.
        """
        self.packs.refresh()
        gone = self._absent(files, known)
        digests = [None if digest in gone else digest for digest in known] if gone else known
        misses = [(path, stat) for (_rel, path, stat), digest in zip(files, digests) if digest is None] if None in digests else []
        stored = self._store_files(misses)
        if stored:
            digests = [digest or stored[path] for (_rel, path, _stat), digest in zip(files, digests)]

        # plain (path, size, digest) tuples, as a ManifestEntry is: one per file, and only encoded
        manifest = encode_manifest([(rel, stat.size, digest) for (rel, _path, stat), digest in zip(files, digests)])
        snapshot_id = digest_bytes(manifest)
        manifest_key = object_key(snapshot_id)
        if not self.backend.exists(manifest_key):
            self.backend.put_bytes(manifest_key, manifest)
        return StoredTree(snapshot_id, *self.packs.holding(digests)), misses, stored

    def _write_record(
        self,
        snapshot_id: str,
        files: int,
        size: int,
        source: str,
        airflow: Mapping[str, Any] | None,
        parents: Iterable[str],
        extra: Mapping[str, Any] | None,
    ) -> SnapshotRecord:
        """Write a record of ``snapshot_id`` (whose manifest and objects are stored) and its lineage index keys."""
        record = SnapshotRecord(
            snapshot_id=snapshot_id,
            store=self.backend.uri,
            created=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            files=files,
            bytes=size,
            source=source,
            host=socket.gethostname(),
            airflow=dict(airflow or {}),
            parents=list(parents),
            extra=dict(extra or {}),
        )
        self.lineage.put_keys(index_keys(record))
        record_key = f"{records_prefix(snapshot_id)}{now_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        self.backend.put_bytes(record_key, encode_json(asdict(record)))
        self.backend.delete([FORGOTTEN_PREFIX + snapshot_id])  # taken again: wanted again (see gc)
        return record

    def _absent(self, files: list[tuple[str, str, FileStat]], known: list[str | None]) -> set[str]:
        """The digests among ``known`` (those of ``files``, None where unknown) whose object the store lacks.

        Packed objects are found in the pack index; only large objects, or small ones in a store that
        kept them loose, are looked up one by one (on S3, a request each).
        """
        unpacked = self.packs.lacking(filter(None, known))
        if not unpacked:
            return set()
        sizes = {digest: stat.size for (_rel, _path, stat), digest in zip(files, known) if digest in unpacked}
        loose_small = self.marker.loose_small_objects
        lookups = {object_key(d): d for d in unpacked if sizes[d] >= PACK_OBJECT_LIMIT or loose_small}
        found = set(lookups) - self.backend.missing(lookups)
        return unpacked - {lookups[key] for key in found}

    def _store_files(self, misses: list[tuple[str, FileStat]]) -> dict[str, str]:
        """Hash and store ``misses`` (path, stat) on the backend's workers, a batch of small files at a time;
        returns their digests by path. Small objects go into packs, all written before this returns."""
        writer = PackWriter(self.backend, self.packs)
        batches: list[list[tuple[str, FileStat]]] = [[]]
        batch_bytes = 0
        for path, stat in misses:
            if len(batches[-1]) >= _BATCH_FILES or batch_bytes >= _BATCH_BYTES:
                batches.append([])
                batch_bytes = 0
            batches[-1].append((path, stat))
            batch_bytes += stat.size
        digests: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=self.backend.parallelism) as pool:
            for batch, batch_digests in zip(batches, pool.map(lambda b: [self._store_file(p, s, writer) for p, s in b], batches)):
                digests.update((path, digest) for (path, _stat), digest in zip(batch, batch_digests))
        writer.flush()
        return digests

    def _store_file(self, path: str, stat: FileStat, writer: PackWriter) -> str:
        """Hash one file and store its bytes unless the store has them; returns the digest.

        Files below ``_READ_WHOLE_LIMIT`` are read once (hashed and stored from memory: packed below
        ``PACK_OBJECT_LIMIT``); larger ones are hashed through mmap and copied by the backend. A file
        that changed since it was scanned is an error.
        """
        try:
            if stat.size < _READ_WHOLE_LIMIT:
                data, after = _read_whole(path, stat.size)
                digest = digest_bytes(data)
                if len(data) >= PACK_OBJECT_LIMIT:
                    if not self.backend.exists(object_key(digest)):
                        self.backend.put_bytes(object_key(digest), data)
                elif digest not in self.packs and not (self.marker.loose_small_objects
                                                       and self.backend.exists(object_key(digest))):
                    writer.add(digest, data)
            else:
                digest = digest_file(path, stat.size)
                if not self.backend.exists(object_key(digest)):
                    self.backend.put_file(object_key(digest), Path(path), digest)
                after = FileStat.of(os.stat(path))
        except OSError as error:
            raise SnapshotError(f"cannot read {path}: {error.strerror or error}") from None
        if after != stat:
            raise SnapshotError(f"{path} changed while it was being snapshotted; take the snapshot again")
        return digest


def _read_whole(path: str, size: int) -> tuple[bytes, FileStat]:
    """The ``size`` bytes of a small file and its stat once read: open, read, fstat, close.

    Plain ``os`` calls, not ``open().read()``, which makes twice the system calls (isatty, lseek,
    fstat, a read to find the end): this runs for every file of a cold snapshot. A file whose size
    changed shows it in the stat, which the caller compares with the scan's.
    """
    handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(handle, size)
        while len(data) < size and (more := os.read(handle, size - len(data))):  # short reads are allowed
            data += more
        return data, FileStat.of(os.fstat(handle))
    finally:
        os.close(handle)
