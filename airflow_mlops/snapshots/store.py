"""Content-addressed snapshot store: the data version every other record points at.

Layout under the store root (local directory or S3 prefix), after DVC's cache and restic's packs::

    airflow-mlops-store.json        marker: format (2) and hash algorithm
    objects/ab/cdef...              large files' contents and manifests, named by their BLAKE3 digest
    packs/<digest>.pack, .idx       small files' contents, many to a pack (see :mod:`.packs`)
    records/<snapshot_id>/<ns>-<rand>.json   one small record per snapshot taken
    forgotten/<snapshot_id>         marker: the snapshot is to go at the next gc (see :mod:`.gc`)
    locks/<kind>.<pid>.<rand>.<host>   snapshots' shared locks, gc's exclusive one (see :mod:`.locks`)
    index/children/<parent_id>/<child_id>    lineage index (empty keys): snapshots derived from a parent,
    index/models/<name>/<version>/<id>       snapshots a registered model version wrote (predictions),
    index/runs/<run_id>/<id>                 and those an unregistered run's model wrote
    index/complete.json             marker: every record of the store is in the index
    cache/stat.sqlite               stat cache (local stores; S3 stores keep it under AIRFLOW_HOME)

A manifest lists (relative path, size, digest) sorted by path; the snapshot id is the digest of the
manifest, which is itself stored as an object. So the same bytes under the same relative names give
the same id on any machine and in any layout, and one changed byte gives a new one. Objects, packs,
manifest and index keys are written before the record, each atomically, so a snapshot exists only
once all of its bytes do, and a recorded snapshot is always in the index (an index key whose record
never came is skipped). The index makes a downstream lineage step one listing instead of a read of
every record; a store written before it existed is indexed once, on its first downstream lookup (or
``reindex``).

Format 1 stores (every object loose, before packs) are read as they are. The first snapshot taken
into one with this code marks it format 2 with ``loose_small_objects``: its new small objects go
into packs, and its old loose ones are still found (and deduplicated against) where they are.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from airflow_mlops.config import RESTORED_BUDGET_BYTES
from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend, LocalBackend, S3Backend, temp_file_beside, write_new_file
from airflow_mlops.snapshots.gc import DEFAULT_GC_GRACE_S, FORGOTTEN_PREFIX, GcReport, collect_garbage
from airflow_mlops.snapshots.hashing import ALGORITHM, digest_bytes, digest_chunks, digest_file
from airflow_mlops.snapshots.locks import SHARED, store_lock
from airflow_mlops.snapshots.packs import PACK_OBJECT_LIMIT, PackIndex, PackWriter, by_pack, read_packed
from airflow_mlops.snapshots.restored import RESTORED_MIN_IDLE_S, materialize
from airflow_mlops.snapshots.scan import scan_tree
from airflow_mlops.snapshots.statcache import FileStat, StatCache, StoredTree, TreeStat, cached_digests, now_ns

MARKER_KEY = "airflow-mlops-store.json"
INDEX_MARKER_KEY = "index/complete.json"
#: The layout this code writes: 1 had every object loose, 2 adds packs, locks and forget markers.
STORE_FORMAT = 2
MANIFEST_FORMAT = 1
MIN_ID_PREFIX = 6
#: Hex digits of a full snapshot id (a 256-bit BLAKE3 digest).
ID_LENGTH = 64
#: Files below this size are read into memory once: hashed and stored (packed, if small enough) from the same bytes.
_READ_WHOLE_LIMIT = 1024 * 1024
#: Files handed to one worker at once, up to this many bytes: per-file hand-offs cost more than small files.
_BATCH_BYTES = 1024 * 1024
_BATCH_FILES = 256
#: Threads creating restored files: each creation mostly waits for the file system, not the CPU.
_RESTORE_WRITERS = 4


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


@dataclass
class VerifyProblem:
    """A stored object that is missing or whose bytes no longer match its name."""

    digest: str
    kind: str  # "missing" or "damaged"
    snapshots: list[str]

    def describe(self) -> str:
        users = ", ".join(self.snapshots) if self.snapshots else "no snapshot"
        return f"{self.kind} object {self.digest} (used by {users})"


def is_snapshot_id(text: str) -> bool:
    """Whether ``text`` has the form of a snapshot id or a prefix of one: hex, at least six characters."""
    candidate = text.strip().lower()
    return len(candidate) >= MIN_ID_PREFIX and all(c in "0123456789abcdef" for c in candidate)


def snapshot_uri(store: str, snapshot_id: str) -> str:
    """The URI naming one snapshot in one store: ``<store>#<snapshot_id>``."""
    return f"{store}#{snapshot_id}"


def parse_snapshot_ref(ref: str, default_store: str | None = None) -> tuple[str, str]:
    """(store, snapshot id) from a snapshot URI ``<store>#<snapshot_id>``, or a bare id in ``default_store``."""
    store, sep, snapshot_id = ref.strip().rpartition("#")
    if not sep:
        store, snapshot_id = default_store or "", ref.strip()
    if not store or not snapshot_id:
        raise SnapshotError(f"{ref!r} is not a snapshot URI (<store>#<snapshot_id>) and no store was given")
    return store, snapshot_id


def _object_key(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest[2:]}"


def _encode(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _index_prefix(kind: str, *subject: str) -> str:
    """``index/<kind>/<subject...>/``: the folder listing the snapshots indexed under one subject."""
    return "/".join(["index", kind, *(quote(str(part), safe="") for part in subject)]) + "/"


def index_keys(record: SnapshotRecord) -> list[str]:
    """The index keys of a record: one per parent, and one for the model that wrote it (if any)."""
    prefixes = [_index_prefix("children", parent) for parent in record.parents]
    model = record.extra.get("model") or {}
    if model.get("name") and model.get("version") is not None:
        prefixes.append(_index_prefix("models", model["name"], model["version"]))
    elif model.get("run_id"):
        prefixes.append(_index_prefix("runs", model["run_id"]))
    return [prefix + record.snapshot_id for prefix in prefixes]


def encode_manifest(entries: Iterable[tuple[str, int, str]]) -> bytes:
    """Canonical manifest bytes of ``ManifestEntry`` (or plain (path, size, digest)) tuples: the snapshot id is their digest."""
    files = sorted(entries)  # paths are unique: sorted by path (JSON writes the tuples as lists)
    return _encode({"format": MANIFEST_FORMAT, "files": files})


class _GcPause(contextlib.ContextDecorator):
    """Hold Python's cyclic garbage collector off while a snapshot or restore runs (as Mercurial does
    to parse its manifests), then let it resume as it was.

    Their bookkeeping makes a few small tuples per file, none of them garbage; with the collector on,
    every few hundred of them start a collection and some of those walk all the tuples made so far,
    which costs a no-op re-snapshot of many files a fifth of its time. Nested and concurrent uses
    (threads) count: the collector resumes when the last one ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._holders += 1

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._resume:
                gc.enable()


_gc_paused = _GcPause()


class SnapshotStore:
    """Take, find, restore and verify snapshots in one store."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.uri = backend.uri
        self._stat_cache = StatCache(backend.stat_cache_path())
        self.packs = PackIndex(backend)
        self._marker = self._read_marker()
        self._initialized = self._marker is not None
        self._index_complete = False  # checked (one read of its marker) on the first downstream lookup
        if not self._initialized and not backend.is_empty():
            raise SnapshotError(
                f"{self.uri} is not a snapshot store (no {MARKER_KEY}); give a new or empty location"
            )

    def _read_marker(self) -> dict[str, Any] | None:
        try:
            marker = json.loads(self.backend.get_bytes(MARKER_KEY))
        except KeyError:
            return None
        if marker.get("format", 1) > STORE_FORMAT:
            raise SnapshotError(f"store {self.uri} has format {marker['format']}, newer than this airflow-mlops "
                                f"reads ({STORE_FORMAT}); upgrade airflow-mlops")
        return marker

    @property
    def _loose_small_objects(self) -> bool:
        """Whether small objects may be loose: a format 1 store, or one that was (see the module docstring)."""
        marker = self._marker or {}
        return marker.get("format", 1) == 1 or bool(marker.get("loose_small_objects"))

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

    # ----------------------------------------------------------------- taking snapshots

    @_gc_paused
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
        root = Path(source).expanduser().absolute()
        scan_started = now_ns()
        files = scan_tree(root)
        tree = TreeStat.of(files)
        remembered = self._stat_cache.stored_tree(root, tree) if self._initialized and cache_stats else None
        known = None if remembered else self._known_digests(root, files)
        new_store = not self._initialized
        self._prepare_for_writing()
        with store_lock(self.backend, SHARED):  # from the first look at what the store has to the record
            if remembered and not self._holds(remembered):  # gc, or a hand, deleted some of it
                remembered, known = None, self._known_digests(root, files)
            stored_tree, misses, stored = (remembered, [], {}) if remembered else self._store_tree(files, known)
            record = self._write_record(stored_tree.snapshot_id, len(files), tree.size, source_label or str(root),
                                        airflow, parents, extra)
        if new_store:  # its first record: a store made by this code indexes every record as it is written
            self._mark_indexed()
        if cache_stats:
            self._stat_cache.store({path: (stat, stored[path]) for path, stat in misses}, scan_started,
                                   None if remembered else (root, tree, stored_tree))
        return record

    def _known_digests(self, root: Path, files: list[tuple[str, str, FileStat]]) -> list[str | None]:
        """Each scanned file's digest per the stat cache (None: it must be read), once every file to read is readable."""
        known = cached_digests(self._stat_cache.load_under(root) if self._initialized else {}, files)  # a new store holds no object
        if None in known:
            for (_rel, path, _stat), digest in zip(files, known):
                if digest is None and not os.access(path, os.R_OK):
                    raise SnapshotError(f"cannot read {path}: permission denied")
        return known

    def _holds(self, tree: StoredTree) -> bool:
        """Whether the store still has a remembered tree's manifest, packs and loose objects."""
        keys = [_object_key(tree.snapshot_id), *map(_object_key, tree.loose)]
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
        manifest_key = _object_key(snapshot_id)
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
            store=self.uri,
            created=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            files=files,
            bytes=size,
            source=source,
            host=socket.gethostname(),
            airflow=dict(airflow or {}),
            parents=list(parents),
            extra=dict(extra or {}),
        )
        self._put_index_keys(index_keys(record))
        record_key = f"records/{snapshot_id}/{now_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        self.backend.put_bytes(record_key, _encode(asdict(record)))
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
        lookups = {_object_key(d): d for d in unpacked if sizes[d] >= PACK_OBJECT_LIMIT or self._loose_small_objects}
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
                    if not self.backend.exists(_object_key(digest)):
                        self.backend.put_bytes(_object_key(digest), data)
                elif digest not in self.packs and not (self._loose_small_objects and self.backend.exists(_object_key(digest))):
                    writer.add(digest, data)
            else:
                digest = digest_file(path, stat.size)
                if not self.backend.exists(_object_key(digest)):
                    self.backend.put_file(_object_key(digest), Path(path), digest)
                after = FileStat.of(os.stat(path))
        except OSError as error:
            raise SnapshotError(f"cannot read {path}: {error.strerror or error}") from None
        if after != stat:
            raise SnapshotError(f"{path} changed while it was being snapshotted; take the snapshot again")
        return digest

    def _require_store(self) -> None:
        if not self._initialized:
            raise SnapshotError(f"no snapshot store at {self.uri}; take a snapshot there first")

    def _prepare_for_writing(self) -> None:
        """Write the marker of a new store, or mark a format 1 store as packing from now on."""
        if self._initialized and self._marker.get("format", 1) == STORE_FORMAT:
            return
        marker = {"format": STORE_FORMAT, "hash": ALGORITHM}
        if self._initialized:
            marker["loose_small_objects"] = True
        self.backend.put_bytes(MARKER_KEY, _encode(marker))
        self._marker = marker
        self._initialized = True

    # ----------------------------------------------------------------- reading records

    def records(self, snapshot_id: str | None = None) -> list[SnapshotRecord]:
        """Snapshot records, newest first; only those of ``snapshot_id`` when given."""
        self._require_store()
        prefix = f"records/{self.resolve(snapshot_id)}/" if snapshot_id else "records/"
        records = [
            SnapshotRecord(**json.loads(self.backend.get_bytes(key)))
            for key in self.backend.list_keys(prefix)
            if key.endswith(".json")
        ]
        return sorted(records, key=lambda record: record.created, reverse=True)

    def snapshot_ids(self) -> set[str]:
        return {key.split("/")[1] for key in self.backend.list_keys("records/")}

    def resolve(self, snapshot_id: str) -> str:
        """The full id for an id or a unique prefix of at least six characters."""
        self._require_store()
        candidate = snapshot_id.strip().lower()
        if not is_snapshot_id(candidate):
            raise SnapshotError(f"{snapshot_id!r} is not a snapshot id (hex, at least {MIN_ID_PREFIX} characters)")
        # a full id lists its own folder only; a prefix lists the ids under records/ starting with it
        prefix = f"records/{candidate}/" if len(candidate) == ID_LENGTH else f"records/{candidate}"
        matches = {key.split("/")[1] for key in self.backend.list_keys(prefix)}
        if not matches:
            raise SnapshotError(f"unknown snapshot id {snapshot_id} in store {self.uri}; see 'airflow-mlops log'")
        if len(matches) > 1:
            raise SnapshotError(f"snapshot id prefix {snapshot_id} is ambiguous in {self.uri}; give more characters")
        return matches.pop()

    # ----------------------------------------------------------------- lineage index

    def children(self, snapshot_id: str) -> list[str]:
        """Ids of the snapshots recorded with ``snapshot_id`` (a full id) among their parents: one listing."""
        return self._indexed("children", snapshot_id)

    def outputs_of(self, *, model: str | None = None, version: str | None = None, run_id: str | None = None) -> list[str]:
        """Ids of the snapshots a model wrote (batch predictions): registered ``model`` ``version``, or run ``run_id``'s."""
        return self._indexed("models", model, str(version)) if model else self._indexed("runs", run_id)

    def _indexed(self, kind: str, *subject: str) -> list[str]:
        if not self._initialized:
            return []  # no store yet: nothing derived from anything
        if not self._index_complete:
            if not self.backend.exists(INDEX_MARKER_KEY):
                self.reindex()
            self._index_complete = True
        prefix = _index_prefix(kind, *subject)
        return sorted(key[len(prefix) :] for key in self.backend.list_keys(prefix))

    def reindex(self) -> int:
        """Write the index keys of every record, then the index marker; returns the number of records read.

        For a store written before the index existed (done on its first downstream lookup), or to
        repair one. Safe while others snapshot into the store: they write their own records' keys.
        """
        records = self.records()
        self._put_index_keys([key for record in records for key in index_keys(record)])
        self._mark_indexed()
        return len(records)

    def _mark_indexed(self) -> None:
        self.backend.put_bytes(INDEX_MARKER_KEY, _encode({"format": 1}))
        self._index_complete = True

    def _put_index_keys(self, keys: list[str]) -> None:
        if not keys:
            return
        with ThreadPoolExecutor(max_workers=self.backend.parallelism) as pool:
            list(pool.map(lambda key: self.backend.put_bytes(key, b""), sorted(set(keys))))

    def manifest(self, snapshot_id: str) -> list[ManifestEntry]:
        """The files of a snapshot, checked against the id before they are trusted."""
        return self.read_manifest(self.resolve(snapshot_id))

    def read_manifest(self, full_id: str) -> list[ManifestEntry]:
        """``manifest`` of a full id, without looking its records up."""
        try:
            data = self.backend.get_bytes(_object_key(full_id))
        except KeyError:
            raise SnapshotError(f"manifest of snapshot {full_id} is missing; run 'airflow-mlops verify'") from None
        if digest_bytes(data) != full_id:
            raise SnapshotError(f"manifest of snapshot {full_id} is damaged; run 'airflow-mlops verify'")
        return [ManifestEntry(*row) for row in json.loads(data)["files"]]

    # ----------------------------------------------------------------- forgetting and gc

    def forget(self, snapshot_ids: Iterable[str], *, reason: str) -> None:
        """Mark snapshots as forgotten (idempotent): a small key forgotten/<snapshot_id> (JSON: reason, time, host).

        The records stay readable until gc removes them; an id already forgotten keeps its first marker.
        """
        self._require_store()
        wanted = {self.resolve(snapshot_id) for snapshot_id in snapshot_ids}
        already = {key[len(FORGOTTEN_PREFIX) :] for key in self.backend.list_keys(FORGOTTEN_PREFIX)}
        marker = _encode({"reason": reason, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "host": socket.gethostname()})
        for snapshot_id in sorted(wanted - already):
            self.backend.put_bytes(FORGOTTEN_PREFIX + snapshot_id, marker)

    def forgotten(self) -> dict[str, dict]:
        """Forgotten snapshot ids, each with its marker (reason, time, host)."""
        if not self._initialized:
            return {}
        keys = sorted(self.backend.list_keys(FORGOTTEN_PREFIX))
        with ThreadPoolExecutor(max_workers=self.backend.parallelism) as pool:
            markers = list(pool.map(self._read_json_or_none, keys))
        return {key[len(FORGOTTEN_PREFIX) :]: marker for key, marker in zip(keys, markers) if marker is not None}

    def _read_json_or_none(self, key: str) -> dict | None:
        try:
            return json.loads(self.backend.get_bytes(key))
        except KeyError:
            return None  # deleted since it was listed

    def unforget(self, snapshot_ids: Iterable[str]) -> None:
        """Drop the forget markers of full snapshot ids: the snapshots are kept again.

        Under a shared lock, so it either lands before a gc decides (and the snapshot is kept) or
        after it: an id whose records gc deleted meanwhile is an error, not a silent no-op.
        """
        self._require_store()
        ids = sorted(set(snapshot_ids))
        with store_lock(self.backend, SHARED):
            gone = [snapshot_id for snapshot_id in ids if not any(self.backend.list_keys(f"records/{snapshot_id}/"))]
            if gone:
                raise SnapshotError(f"snapshot {gone[0]} is no longer in {self.uri} (deleted by gc); it cannot be unforgotten")
            self.backend.delete([FORGOTTEN_PREFIX + snapshot_id for snapshot_id in ids])

    def gc(
        self, *, protect: Collection[str] = (), grace_seconds: float = DEFAULT_GC_GRACE_S, dry_run: bool = False
    ) -> GcReport:
        """Delete what no kept snapshot uses; see :mod:`~airflow_mlops.snapshots.gc`.

        Kept = every recorded snapshot not forgotten, plus every full id in ``protect``. Deletes the
        records, lineage index keys and markers of the other forgotten snapshots, the loose objects
        and whole packs no kept manifest references, and repacks packs that are mostly garbage. Never
        deletes an object or pack younger than ``grace_seconds``, or anything an in-flight snapshot
        may use. With ``dry_run`` nothing is written or deleted; the report says what would go.
        """
        self._require_store()
        return collect_garbage(self, protect=protect, grace_seconds=grace_seconds, dry_run=dry_run)

    def snapshot_keys(self, snapshot_id: str) -> list[str]:
        """The keys that make a snapshot visible: its record files and the lineage index keys they imply."""
        record_keys = list(self.backend.list_keys(f"records/{snapshot_id}/"))
        records = [SnapshotRecord(**json.loads(self.backend.get_bytes(key))) for key in record_keys]
        return record_keys + sorted({key for record in records for key in index_keys(record)})

    # ----------------------------------------------------------------- restore and verify

    @_gc_paused
    def restore(self, snapshot_id: str, dest: str | os.PathLike, *, force: bool = False) -> list[ManifestEntry]:
        """Write the snapshot's files under ``dest``, each checked against its digest.

        Refuses entries that would land outside ``dest`` (absolute paths, ``..``, symlinks out),
        and a non-empty ``dest`` unless ``force`` (which overwrites listed files, keeps others).
        Every file is first written into a hidden ``.<name>.<rand>.restoring`` folder beside ``dest``
        (see ``_write_staged``); only once all are there and intact does that folder become ``dest``
        (one rename, when ``dest`` is missing or empty) or do its files replace theirs in ``dest`` (a
        rename each). So a failed restore writes nothing into ``dest``, and a killed one leaves at most
        the hidden folder, or, killed while renaming into a filled ``dest``, some files replaced.
        """
        entries = self.manifest(snapshot_id)
        dest_path = Path(dest).expanduser().absolute()
        if dest_path.exists() and not dest_path.is_dir():
            raise SnapshotError(f"restore target {dest_path} is a file; give a directory")
        filled = dest_path.is_dir() and any(dest_path.iterdir())
        if filled and not force:
            raise SnapshotError(f"restore target {dest_path} is not empty; use --force to overwrite")
        # plain strings, not pathlib: these run for every file
        targets = _safe_targets(str(dest_path), [entry.path for entry in entries], check_links=filled)
        self.packs.refresh()
        unpacked = self.packs.lacking(entry.digest for entry in entries)
        missing = self.backend.missing({_object_key(entry.digest) for entry in entries if entry.digest in unpacked})
        if missing:
            raise SnapshotError(f"{len(missing)} objects of snapshot {self.resolve(snapshot_id)} are missing; "
                                "run 'airflow-mlops verify'")
        real = os.path.realpath(dest_path)  # staged beside the real folder, so every rename stays on its file system
        stage = f"{os.path.dirname(real)}/.{os.path.basename(real)}.{uuid.uuid4().hex[:12]}.restoring"
        staged = [f"{stage}/{entry.path}" for entry in entries]  # the paths _safe_targets accepted
        os.makedirs(os.path.dirname(real), exist_ok=True)
        os.mkdir(stage)
        try:
            self._write_staged(entries, staged, unpacked)
            if not filled and not os.path.islink(dest_path):
                try:
                    os.rename(stage, dest_path)  # onto nothing, or onto an empty folder
                except OSError as error:  # someone else filled dest_path meanwhile
                    raise SnapshotError(f"restore target {dest_path} cannot be put in place: {error.strerror}") from None
            else:
                _make_folders(targets)
                for source, target in zip(staged, targets):
                    os.replace(source, target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return entries

    def _write_staged(self, entries: list[ManifestEntry], staged: list[str], unpacked: set[str]) -> None:
        """Write every file at its ``staged`` path, in a folder no one uses yet, so nothing needs holding
        back: each writer thread checks the objects of a pack and writes their files as soon as it has
        read it, while the others do the same (reading, hashing and file creation overlap). Loose
        objects are copied beside their file, checked, then renamed. Raises on the first missing or
        damaged object."""
        _make_folders(staged)
        paths: dict[str, str] = {}  # a file per object, to name in errors
        targets_of: dict[str, list[str]] = {}
        loose = []
        for entry, target in zip(entries, staged):
            if entry.digest in unpacked:
                loose.append((entry, target))
            else:
                paths[entry.digest] = entry.path
                targets_of.setdefault(entry.digest, []).append(target)

        def write_pack(item: tuple[str, list]) -> None:
            for digest, data in read_packed(self.backend, *item):
                _check_packed(digest, data, paths[digest])
                for target in targets_of[digest]:
                    write_new_file(target, data, 0o666)

        with ThreadPoolExecutor(max_workers=max(_RESTORE_WRITERS, self.backend.parallelism)) as pool:  # S3: more reads
            writes = [pool.submit(write_pack, item) for item in by_pack(self.packs.locate(targets_of)).items()]
            writes += [pool.submit(lambda pair: os.replace(self._fetch_loose(*pair), pair[1]), pair) for pair in loose]
            for write in writes:
                write.result()

    def _fetch_loose(self, entry: ManifestEntry, target: str) -> Path:
        """A loose object copied beside its target and checked; returns the temp file."""
        temp = temp_file_beside(target)
        try:
            self.backend.get_file(_object_key(entry.digest), temp)
            intact = digest_file(temp, entry.size) == entry.digest
        except KeyError:
            temp.unlink()
            raise SnapshotError(f"object {entry.digest} for {entry.path} is missing; run 'airflow-mlops verify'") from None
        except BaseException:
            temp.unlink()
            raise
        if not intact:
            temp.unlink()
            raise SnapshotError(f"object {entry.digest} for {entry.path} is damaged; run 'airflow-mlops verify'")
        return temp

    def materialize(
        self,
        snapshot_id: str,
        cache_root: str | os.PathLike,
        *,
        budget_bytes: int = RESTORED_BUDGET_BYTES,
        min_idle_s: float = RESTORED_MIN_IDLE_S,
    ) -> Path:
        """A local, read-only directory with the snapshot's files: ``cache_root/<id>``, restored once and reused.

        Checked against the manifest before each reuse, restored again if anything differs, and
        evicted least recently used first beyond ``budget_bytes``: see :mod:`~airflow_mlops.snapshots.restored`.
        """
        return materialize(self, self.resolve(snapshot_id), cache_root, budget_bytes=budget_bytes, min_idle_s=min_idle_s)

    def verify(self, snapshot_id: str | None = None) -> list[VerifyProblem]:
        """Re-hash stored objects: those of one snapshot, or every object in the store (each packed copy)."""
        self._require_store()
        snapshot_ids = [self.resolve(snapshot_id)] if snapshot_id else sorted(self.snapshot_ids())
        users: dict[str, set[str]] = {}
        for sid in snapshot_ids:
            users.setdefault(sid, set()).add(sid)
            try:
                entries = self.read_manifest(sid)
            except SnapshotError:
                continue  # reported below as the manifest object's own problem
            for entry in entries:
                users.setdefault(entry.digest, set()).add(sid)
        self.packs.refresh()
        if snapshot_id is None:
            packed = list(self.packs.rows())
            loose = {key[len("objects/") :].replace("/", "") for key in self.backend.list_keys("objects/")}
            loose |= {digest for digest in users if digest not in self.packs}
        else:
            packed = [(digest, self.packs.get(digest)) for digest in users if digest in self.packs]
            loose = {digest for digest in users if digest not in self.packs}
        problems = self._check_packed(packed)
        for digest in sorted(loose):
            key = _object_key(digest)
            if not self.backend.exists(key):
                problems.setdefault(digest, "missing")
            elif digest_chunks(self.backend.iter_chunks(key)) != digest:
                problems[digest] = "damaged"
        return [VerifyProblem(d, kind, sorted(users.get(d, ()))) for d, kind in sorted(problems.items())]

    def _check_packed(self, packed: list[tuple[str, Any]]) -> dict[str, str]:
        """Problems (digest -> "missing" or "damaged") among packed objects, read a pack at a time."""

        def check(item: tuple[str, list]) -> list[tuple[str, str]]:
            return [(digest, "missing" if data is None else "damaged")
                    for digest, data in read_packed(self.backend, *item) if data is None or digest_bytes(data) != digest]

        problems: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=self.backend.parallelism) as pool:
            for found in pool.map(check, by_pack(packed).items()):
                for digest, kind in found:
                    problems[digest] = "damaged" if kind == "damaged" else problems.get(digest, kind)
        return problems


def _check_packed(digest: str, data: bytes | None, path: str) -> None:
    """Raise unless a packed object, read for the file at ``path``, is there and intact."""
    if data is None:
        raise SnapshotError(f"object {digest} for {path} is missing; run 'airflow-mlops verify'")
    if digest_bytes(data) != digest:
        raise SnapshotError(f"object {digest} for {path} is damaged; run 'airflow-mlops verify'")


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


def _make_folders(files: list[str]) -> None:
    """Create the folders the ``files`` (absolute paths) go into, each once."""
    for folder in sorted({file.rpartition("/")[0] for file in files}):
        os.makedirs(folder, exist_ok=True)


def _safe_targets(dest: str, rel_paths: list[str], *, check_links: bool) -> list[str]:
    """``dest/<rel_path>`` for each of ``rel_paths``, refusing paths and symlinks that lead outside ``dest``.

    Folders are resolved once each (a tree's files share a few); a file that is itself a symlink can
    only exist in a ``dest`` that held files already (``check_links``), and is resolved on its own.
    """
    resolve_folder = functools.lru_cache(maxsize=None)(os.path.realpath)
    inside = resolve_folder(dest) + os.sep
    base = dest if dest.endswith("/") else dest + "/"
    targets = []
    for rel_path in rel_paths:
        parts = rel_path.split("/")
        if "" in parts or "." in parts or ".." in parts:
            raise SnapshotError(f"manifest entry {rel_path!r} would escape the restore target; refused")
        target = base + rel_path
        folder, _, name = target.rpartition("/")
        if check_links and os.path.islink(target):
            resolved = os.path.realpath(target)
        else:
            resolved = f"{resolve_folder(folder)}/{name}"
        if not resolved.startswith(inside):
            raise SnapshotError(f"manifest entry {rel_path!r} would escape {dest} through a symlink; refused")
        targets.append(target)
    return targets
