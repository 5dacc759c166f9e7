"""Verify: re-hash stored objects and name the snapshots a missing or damaged one breaks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend
from airflow_mlops.snapshots.hashing import digest_bytes, digest_chunks
from airflow_mlops.snapshots.packs import Location, PackIndex, by_pack, read_packed
from airflow_mlops.snapshots.records import read_manifest
from airflow_mlops.snapshots.refs import OBJECTS_PREFIX, object_key


@dataclass
class VerifyProblem:
    """A stored object that is missing or whose bytes no longer match its name."""

    digest: str
    kind: str  # "missing" or "damaged"
    snapshots: list[str]

    def describe(self) -> str:
        users = ", ".join(self.snapshots) if self.snapshots else "no snapshot"
        return f"{self.kind} object {self.digest} (used by {users})"


def verify_objects(backend: Backend, packs: PackIndex, snapshot_ids: list[str], *, every_object: bool) -> list[VerifyProblem]:
    """Re-hash the objects of ``snapshot_ids`` (full ids), or with ``every_object`` every object in the store
    (each packed copy), and report each bad one with the snapshots among ``snapshot_ids`` that use it."""
    users: dict[str, set[str]] = {}
    for sid in snapshot_ids:
        users.setdefault(sid, set()).add(sid)
        try:
            entries = read_manifest(backend, sid)
        except SnapshotError:
            continue  # reported below as the manifest object's own problem
        for entry in entries:
            users.setdefault(entry.digest, set()).add(sid)
    packs.refresh()
    if every_object:
        packed = list(packs.rows())
        loose = {key[len(OBJECTS_PREFIX) :].replace("/", "") for key in backend.list_keys(OBJECTS_PREFIX)}
        loose |= {digest for digest in users if digest not in packs}
    else:
        packed = [(digest, packs.get(digest)) for digest in users if digest in packs]
        loose = {digest for digest in users if digest not in packs}
    problems = _check_packed(backend, packed)
    for digest in sorted(loose):
        key = object_key(digest)
        if not backend.exists(key):
            problems.setdefault(digest, "missing")
        elif digest_chunks(backend.iter_chunks(key)) != digest:
            problems[digest] = "damaged"
    return [VerifyProblem(d, kind, sorted(users.get(d, ()))) for d, kind in sorted(problems.items())]


def _check_packed(backend: Backend, packed: list[tuple[str, Location]]) -> dict[str, str]:
    """Problems (digest -> "missing" or "damaged") among packed objects, read a pack at a time."""

    def check(item: tuple[str, list]) -> list[tuple[str, str]]:
        return [(digest, "missing" if data is None else "damaged")
                for digest, data in read_packed(backend, *item) if data is None or digest_bytes(data) != digest]

    problems: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=backend.parallelism) as pool:
        for found in pool.map(check, by_pack(packed).items()):
            for digest, kind in found:
                problems[digest] = "damaged" if kind == "damaged" else problems.get(digest, kind)
    return problems
