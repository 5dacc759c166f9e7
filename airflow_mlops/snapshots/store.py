"""Content-addressed snapshot store: the data version every other record points at.

Layout under the store root (local directory or S3 prefix), after DVC's cache::

    airflow-mlops-store.json        marker: format and hash algorithm
    objects/ab/cdef...              file contents and manifests, named by their BLAKE3 digest
    records/<snapshot_id>/<ns>-<rand>.json   one small record per snapshot taken
    index/children/<parent_id>/<child_id>    lineage index (empty keys): snapshots derived from a parent,
    index/models/<name>/<version>/<id>       snapshots a registered model version wrote (predictions),
    index/runs/<run_id>/<id>                 and those an unregistered run's model wrote
    index/complete.json             marker: every record of the store is in the index
    cache/stat.sqlite               stat cache (local stores; S3 stores keep it under AIRFLOW_HOME)

A manifest lists (relative path, size, digest) sorted by path; the snapshot id is the digest of the
manifest, which is itself stored as an object. So the same bytes under the same relative names give
the same id on any machine, and one changed byte gives a new one. Objects, manifest and index keys
are written before the record, each atomically, so a snapshot exists only once all of its bytes do,
and a recorded snapshot is always in the index (an index key whose record never came is skipped).
The index makes a downstream lineage step one listing instead of a read of every record; a store
written before it existed is indexed once, on its first downstream lookup (or ``reindex``).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow_mlops.config import RESTORED_BUDGET_BYTES
from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend, LocalBackend, S3Backend, temp_file_beside
from airflow_mlops.snapshots.hashing import ALGORITHM, digest_bytes, digest_chunks, digest_file
from airflow_mlops.snapshots.restored import RESTORED_MIN_IDLE_S, materialize
from airflow_mlops.snapshots.scan import scan_tree
from airflow_mlops.snapshots.statcache import FileStat, StatCache, now_ns

MARKER_KEY = "airflow-mlops-store.json"
INDEX_MARKER_KEY = "index/complete.json"
MANIFEST_FORMAT = 1
MIN_ID_PREFIX = 6
#: Hex digits of a full snapshot id (a 256-bit BLAKE3 digest).
ID_LENGTH = 64
#: Files below this size are read into memory once: hashed and stored from the same bytes.
_READ_WHOLE_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class ManifestEntry:
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


def encode_manifest(entries: Iterable[ManifestEntry]) -> bytes:
    """Canonical manifest bytes: the snapshot id is their digest."""
    files = sorted(([e.path, e.size, e.digest] for e in entries), key=lambda row: row[0])
    return _encode({"format": MANIFEST_FORMAT, "files": files})


class SnapshotStore:
    """Take, find, restore and verify snapshots in one store."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.uri = backend.uri
        self._stat_cache = StatCache(backend.stat_cache_path())
        self._initialized = backend.exists(MARKER_KEY)
        self._index_complete = False  # checked (one read of its marker) on the first downstream lookup
        if not self._initialized and not backend.is_empty():
            raise SnapshotError(
                f"{self.uri} is not a snapshot store (no {MARKER_KEY}); give a new or empty location"
            )

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
        re-hashed; objects already stored are not re-written. All input is checked before anything
        is written.
        """
        root = Path(source).expanduser().absolute()
        scan_started = now_ns()
        files = scan_tree(root)
        cached = self._stat_cache.load_under(root) if self._initialized else {}  # a new store holds no object yet
        hits = {path: cached[path][1] for _rel, path, stat in files if path in cached and cached[path][0] == stat}
        gone = self.backend.missing({_object_key(digest) for digest in hits.values()})
        digests = {path: digest for path, digest in hits.items() if _object_key(digest) not in gone}
        misses = [(path, stat) for _rel, path, stat in files if path not in digests]
        for path, _stat in misses:
            if not os.access(path, os.R_OK):
                raise SnapshotError(f"cannot read {path}: permission denied")
        new_store = not self._initialized
        self._ensure_initialized()
        if misses:
            with ThreadPoolExecutor(max_workers=self.backend.parallelism) as pool:
                for (path, _stat), digest in zip(misses, pool.map(self._store_file, *zip(*misses))):
                    digests[path] = digest

        entries = [ManifestEntry(rel, stat.size, digests[path]) for rel, path, stat in files]
        manifest = encode_manifest(entries)
        snapshot_id = digest_bytes(manifest)
        manifest_key = _object_key(snapshot_id)
        if not self.backend.exists(manifest_key):
            self.backend.put_bytes(manifest_key, manifest)

        record = SnapshotRecord(
            snapshot_id=snapshot_id,
            store=self.uri,
            created=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            files=len(entries),
            bytes=sum(entry.size for entry in entries),
            source=source_label or str(root),
            host=socket.gethostname(),
            airflow=dict(airflow or {}),
            parents=list(parents),
            extra=dict(extra or {}),
        )
        self._put_index_keys(index_keys(record))
        record_key = f"records/{snapshot_id}/{now_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        self.backend.put_bytes(record_key, _encode(asdict(record)))
        if new_store:  # its first record: a store made by this code indexes every record as it is written
            self._mark_indexed()
        if cache_stats:
            self._stat_cache.store({path: (stat, digests[path]) for path, stat in misses}, scan_started)
        return record

    def _store_file(self, path: str, stat: FileStat) -> str:
        """Hash one file and store its bytes unless the store has them; returns the digest.

        Small files are read once (hashed and written from memory); large ones are hashed through
        mmap and copied by the backend. A file that changed since it was scanned is an error.
        """
        try:
            if stat.size < _READ_WHOLE_LIMIT:
                with open(path, "rb") as handle:
                    data = handle.read()
                    after = FileStat.of(os.fstat(handle.fileno()))
                digest = digest_bytes(data)
                if not self.backend.exists(_object_key(digest)):
                    self.backend.put_bytes(_object_key(digest), data)
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

    def _ensure_initialized(self) -> None:
        if not self._initialized:
            self.backend.put_bytes(MARKER_KEY, _encode({"format": 1, "hash": ALGORITHM}))
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
        full_id = self.resolve(snapshot_id)
        try:
            data = self.backend.get_bytes(_object_key(full_id))
        except KeyError:
            raise SnapshotError(f"manifest of snapshot {full_id} is missing; run 'airflow-mlops verify'") from None
        if digest_bytes(data) != full_id:
            raise SnapshotError(f"manifest of snapshot {full_id} is damaged; run 'airflow-mlops verify'")
        return [ManifestEntry(*row) for row in json.loads(data)["files"]]

    # ----------------------------------------------------------------- restore and verify

    def restore(self, snapshot_id: str, dest: str | os.PathLike, *, force: bool = False) -> list[ManifestEntry]:
        """Write the snapshot's files under ``dest``, each checked against its digest.

        Refuses entries that would land outside ``dest`` (absolute paths, ``..``, symlinks out),
        and a non-empty ``dest`` unless ``force`` (which overwrites listed files, keeps others).
        No file is written unless every object is present and intact.
        """
        entries = self.manifest(snapshot_id)
        dest_path = Path(dest).expanduser().absolute()
        if dest_path.exists() and not dest_path.is_dir():
            raise SnapshotError(f"restore target {dest_path} is a file; give a directory")
        if dest_path.is_dir() and any(dest_path.iterdir()) and not force:
            raise SnapshotError(f"restore target {dest_path} is not empty; use --force to overwrite")
        dest_real = Path(os.path.realpath(dest_path))
        targets = [(entry, _safe_target(dest_path, dest_real, entry.path)) for entry in entries]
        missing = self.backend.missing({_object_key(entry.digest) for entry in entries})
        if missing:
            raise SnapshotError(f"{len(missing)} objects of snapshot {self.resolve(snapshot_id)} are missing; "
                                "run 'airflow-mlops verify'")
        staged: list[tuple[Path, Path]] = []
        try:  # every file fetched and checked beside its target first, then all renamed into place
            for entry, target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                temp = temp_file_beside(target)
                staged.append((temp, target))
                try:
                    self.backend.get_file(_object_key(entry.digest), temp)
                except KeyError:
                    raise SnapshotError(f"object {entry.digest} for {entry.path} is missing; run 'airflow-mlops verify'") from None
                if digest_file(temp, entry.size) != entry.digest:
                    raise SnapshotError(f"object {entry.digest} for {entry.path} is damaged; run 'airflow-mlops verify'")
            for temp, target in staged:
                os.replace(temp, target)
        finally:
            for temp, _target in staged:
                temp.unlink(missing_ok=True)
        return entries

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
        """Re-hash stored objects: those of one snapshot, or every object in the store."""
        self._require_store()
        snapshot_ids = [self.resolve(snapshot_id)] if snapshot_id else sorted(self.snapshot_ids())
        users: dict[str, set[str]] = {}
        problems: dict[str, str] = {}
        for sid in snapshot_ids:
            users.setdefault(sid, set()).add(sid)
            try:
                entries = self.manifest(sid)
            except SnapshotError:
                continue  # reported below as the manifest object's own problem
            for entry in entries:
                users.setdefault(entry.digest, set()).add(sid)
        to_check = set(users)
        if snapshot_id is None:
            to_check |= {key[len("objects/") :].replace("/", "") for key in self.backend.list_keys("objects/")}
        for digest in sorted(to_check):
            key = _object_key(digest)
            if not self.backend.exists(key):
                problems[digest] = "missing"
            elif digest_chunks(self.backend.iter_chunks(key)) != digest:
                problems[digest] = "damaged"
        return [VerifyProblem(d, kind, sorted(users.get(d, ()))) for d, kind in sorted(problems.items())]


def _safe_target(dest: Path, dest_real: Path, rel_path: str) -> Path:
    """``dest / rel_path``, refusing paths and existing symlinks that lead outside ``dest``."""
    parts = rel_path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise SnapshotError(f"manifest entry {rel_path!r} would escape the restore target; refused")
    target = dest.joinpath(*parts)
    resolved = Path(os.path.realpath(target))
    if dest_real not in resolved.parents:
        raise SnapshotError(f"manifest entry {rel_path!r} would escape {dest} through a symlink; refused")
    return target
