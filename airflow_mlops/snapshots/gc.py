"""Garbage collection: delete what no kept snapshot uses.

Kept snapshots are every recorded one without a ``forgotten/<id>`` marker, plus those gc is told to
protect. gc deletes the records (and lineage index keys, and markers) of the others, the loose
objects and whole packs no kept manifest names, and copies the live objects of mostly-garbage packs
into new packs before deleting those. It runs in two phases:

1. Without a lock: list records, markers, objects and packs, read the kept manifests, plan, and
   write the repacked objects into new packs (adding objects is always safe).
2. Under the store's exclusive lock (:mod:`.locks`), so no snapshot is in flight: list records and
   markers again, read the manifests of snapshots kept now but not before (taken, or unforgotten,
   meanwhile), drop from the plan whatever they use, then delete. This closes the dedup race: a
   snapshot that found an old object in the store (and so did not write it again) held its shared
   lock from that look until its record was written, so that record is seen here; a snapshot
   starting later waits for gc to finish and then sees the store without the deleted objects.

Deletions go records and index keys, markers, pack indexes, packs, loose objects: a gc killed at
any point leaves a store that verifies clean, at worst with garbage for the next one. Objects,
packs and temp files younger than ``grace_seconds`` are never deleted, whatever the locks say (a
second belt for a writer stopped past its lock's staleness); records of forgotten snapshots go
whatever their age: forgetting them is what asked for it. A snapshot taken again while forgotten
drops its marker (it is wanted again).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend
from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.snapshots.index import snapshot_keys
from airflow_mlops.snapshots.locks import EXCLUSIVE, live_locks, store_lock
from airflow_mlops.snapshots.packs import (
    PACKS_PREFIX,
    Location,
    PackIndex,
    PackWriter,
    index_key,
    pack_key,
    read_packed,
)
from airflow_mlops.snapshots.records import read_manifest, recorded_ids
from airflow_mlops.snapshots.refs import FORGOTTEN_PREFIX, OBJECTS_PREFIX

#: Objects and packs younger than this are never deleted (the default of ``SnapshotStore.gc``).
DEFAULT_GC_GRACE_SECONDS = 3600.0
#: A pack whose garbage is more than this share of its bytes is repacked; one with less is kept whole.
REPACK_GARBAGE_SHARE = 0.5
#: Temp files younger than this are never deleted, whatever the grace period: a writer outside any lock
#: (forget, reindex) may still be writing one.
_TEMP_MIN_AGE_SECONDS = 3600.0


@dataclass(frozen=True)
class GcReport:
    """What a gc deleted (or, with ``dry_run``, would delete).

    ``deleted_objects`` counts loose objects and garbage objects inside deleted or repacked packs;
    ``freed_bytes`` is what the store shrank by (packs' live objects copied elsewhere not counted).
    """

    deleted_snapshots: list[str]
    kept_forgotten: list[str]
    deleted_objects: int
    deleted_packs: int
    repacked_packs: int
    freed_bytes: int
    dry_run: bool

    def describe(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [
            f"gc {verb} {len(self.deleted_snapshots)} forgotten snapshots, {self.deleted_objects} objects, "
            f"{self.deleted_packs} packs; {'would repack' if self.dry_run else 'repacked'} {self.repacked_packs} packs; "
            f"{self.freed_bytes:,d} bytes {'to free' if self.dry_run else 'freed'}",
        ]
        lines += [f"  {verb} snapshot {snapshot_id}" for snapshot_id in self.deleted_snapshots]
        lines += [f"  kept forgotten snapshot {snapshot_id} (protected)" for snapshot_id in self.kept_forgotten]
        return "\n".join(lines)


@dataclass
class _Survey:
    """Which snapshots go and which objects are live, at one moment."""

    doomed: set[str]  # forgotten, unprotected, recorded
    kept_forgotten: set[str]
    dangling_markers: set[str]  # forgotten ids with no record left
    live: set[str]


@dataclass
class _Plan:
    survey: _Survey
    loose: dict[str, tuple[str, int]] = field(default_factory=dict)  # digest -> (key, size)
    whole_packs: dict[str, int] = field(default_factory=dict)  # pack -> size
    repack: dict[str, int] = field(default_factory=dict)  # pack -> size
    strays: list[str] = field(default_factory=list)  # packs without index, indexes without pack, temp files


def collect_garbage(
    backend: Backend, index: PackIndex, *, protect: Collection[str], grace_seconds: float, dry_run: bool
) -> GcReport:
    """``SnapshotStore.gc`` of the store on ``backend``, whose pack index is ``index``: see the module docstring."""
    manifests: dict[str, set[str]] = {}
    plan = _plan(backend, index, set(protect), grace_seconds, manifests)
    if dry_run:
        return _report(index, plan, plan.survey.doomed, set(plan.repack), dry_run=True)
    copied = _repack(backend, index, plan.repack, plan.survey.live)
    with store_lock(backend, EXCLUSIVE):
        now = _survey(backend, set(protect), manifests)
        doomed = plan.survey.doomed & now.doomed
        _narrow(backend, index, plan, now.live, copied)
        report = _report(index, plan, doomed, set(plan.repack), dry_run=False)
        _delete(backend, index, plan, doomed, now.dangling_markers)
    return report


def _survey(backend: Backend, protect: set[str], manifests: dict[str, set[str]]) -> _Survey:
    """Who goes and what is live now; ``manifests`` caches each kept snapshot's digests across calls."""
    recorded = recorded_ids(backend)
    forgotten = {key[len(FORGOTTEN_PREFIX) :] for key in backend.list_keys(FORGOTTEN_PREFIX)}
    doomed = (forgotten & recorded) - protect
    kept = recorded - doomed
    unread = sorted(kept - manifests.keys())
    with ThreadPoolExecutor(max_workers=backend.parallelism) as pool:
        for snapshot_id, digests in zip(unread, pool.map(lambda sid: _manifest_digests(backend, sid), unread)):
            manifests[snapshot_id] = digests
    live = set().union(*(manifests[snapshot_id] for snapshot_id in kept)) if kept else set()
    return _Survey(doomed, forgotten & recorded & protect, forgotten - recorded, live)


def _manifest_digests(backend: Backend, snapshot_id: str) -> set[str]:
    """The objects a kept snapshot needs: its files' and its manifest's own."""
    try:
        entries = read_manifest(backend, snapshot_id)
    except SnapshotError:
        raise SnapshotError(f"gc stopped before deleting anything: the manifest of kept snapshot {snapshot_id} "
                            "cannot be read; run 'airflow-mlops verify'") from None
    return {snapshot_id, *(entry.digest for entry in entries)}


def _plan(
    backend: Backend, index: PackIndex, protect: set[str], grace_seconds: float, manifests: dict[str, set[str]]
) -> _Plan:
    """Phase 1: what is garbage and old enough to go, and which packs to repack."""
    survey = _survey(backend, protect, manifests)
    plan = _Plan(survey)
    cutoff = time.time() - grace_seconds
    for key, size, modified in backend.list_stats(OBJECTS_PREFIX):
        digest = key[len(OBJECTS_PREFIX) :].replace("/", "")
        if modified <= cutoff and digest not in survey.live:
            plan.loose[digest] = (key, size)
    index.refresh()
    listed = {key: (size, modified) for key, size, modified in backend.list_stats(PACKS_PREFIX)}
    for pack, rows in index.packs.items():
        size, modified = listed.get(pack_key(pack), (0, cutoff))
        dead = [length for digest, _offset, length in rows if digest not in survey.live]
        if modified > cutoff or not dead:
            continue
        if len(dead) == len(rows):
            plan.whole_packs[pack] = size
        elif sum(dead) > REPACK_GARBAGE_SHARE * size:
            plan.repack[pack] = size
    plan.strays = [key for key, (_size, modified) in listed.items() if modified <= cutoff and _is_stray(key, listed)]
    temp_cutoff = time.time() - max(grace_seconds, _TEMP_MIN_AGE_SECONDS)  # a forget or reindex may be writing it
    plan.strays += [key for key, _size, modified in backend.list_stats("tmp/") if modified <= temp_cutoff]
    return plan


def _is_stray(key: str, listed: Collection[str]) -> bool:
    """A pack without its index (its writer was killed between the two), or an index without its pack."""
    pack = key[len(PACKS_PREFIX) :].rsplit(".", 1)[0]
    if key.endswith(".pack"):
        return index_key(pack) not in listed
    return key.endswith(".idx") and pack_key(pack) not in listed


def _repack(backend: Backend, index: PackIndex, packs: dict[str, int], live: set[str]) -> set[str]:
    """Copy the live objects of ``packs`` into new packs; returns the packs whose live objects are all copied.

    Each object is checked against its digest first: a pack with a damaged live object is left as it
    is (verify reports it), never copied on.
    """
    writer = PackWriter(backend, PackIndex(backend))  # an empty index: every live object is written again
    copied = set()
    for pack in packs:
        wanted = [(digest, Location(pack, offset, length))
                  for digest, offset, length in index.packs[pack] if digest in live]
        objects = read_packed(backend, pack, wanted)
        if all(data is not None and digest_bytes(data) == digest for digest, data in objects):
            for digest, data in objects:
                writer.add(digest, data)
            copied.add(pack)
    writer.flush()
    return copied


def _narrow(backend: Backend, index: PackIndex, plan: _Plan, live: set[str], copied: set[str]) -> None:
    """Phase 2: keep whatever became live since the plan (a snapshot taken or unforgotten meanwhile)."""
    plan.loose = {digest: entry for digest, entry in plan.loose.items() if digest not in live}
    listed = set(backend.list_keys(PACKS_PREFIX))  # a writer may have added a stray pack's index since
    plan.strays = [key for key in plan.strays if not key.startswith(PACKS_PREFIX) or _is_stray(key, listed)]
    live_in = {pack: {digest for digest, _offset, _length in index.packs.get(pack, []) if digest in live}
               for pack in [*plan.whole_packs, *plan.repack]}
    plan.whole_packs = {pack: size for pack, size in plan.whole_packs.items() if not live_in[pack]}
    # a repacked pack goes only if every object live now was copied (live at the plan, and intact)
    plan.repack = {pack: size for pack, size in plan.repack.items()
                   if pack in copied and live_in[pack] <= plan.survey.live}


def _report(index: PackIndex, plan: _Plan, doomed: set[str], repacked: set[str], *, dry_run: bool) -> GcReport:
    garbage = {pack: [length for digest, _offset, length in index.packs.get(pack, []) if digest not in plan.survey.live]
               for pack in [*plan.whole_packs, *repacked]}
    freed = sum(size for _key, size in plan.loose.values()) + sum(plan.whole_packs.values())
    freed += sum(sum(garbage[pack]) for pack in repacked)  # a repacked pack's live bytes live on in the new one
    return GcReport(
        deleted_snapshots=sorted(doomed),
        kept_forgotten=sorted(plan.survey.kept_forgotten),
        deleted_objects=len(plan.loose) + sum(len(lengths) for lengths in garbage.values()),
        deleted_packs=len(plan.whole_packs) + len(repacked),
        repacked_packs=len(repacked),
        freed_bytes=freed,
        dry_run=dry_run,
    )


def _delete(backend: Backend, index: PackIndex, plan: _Plan, doomed: set[str], dangling_markers: set[str]) -> None:
    """Phase 2's deletions, in the order that keeps the store whole if gc is killed between any two."""
    backend.delete([key for snapshot_id in sorted(doomed) for key in snapshot_keys(backend, snapshot_id)])
    backend.delete([FORGOTTEN_PREFIX + snapshot_id for snapshot_id in sorted(doomed | dangling_markers)])
    packs = [*plan.whole_packs, *plan.repack]
    backend.delete([index_key(pack) for pack in packs])
    backend.delete([pack_key(pack) for pack in packs])
    backend.delete([key for key, _size in plan.loose.values()])
    backend.delete(plan.strays)
    backend.delete([lock.key for lock in live_locks(backend)[1]])
    index.refresh()
