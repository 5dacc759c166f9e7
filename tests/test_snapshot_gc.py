"""Forgetting snapshots and collecting garbage: what goes, what stays, and gc racing snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots import DEFAULT_GC_GRACE_SECONDS, GcReport, SnapshotStore
from airflow_mlops.snapshots import gc as gc_module
from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.snapshots.ingest import Ingest
from airflow_mlops.snapshots.packs import PACK_OBJECT_LIMIT
from tests.conftest import wait_until
from tests.test_snapshot_store import TREE, make_tree, read_tree, store_bytes

BIG = 1536 * 1024  # above the pack limit: a loose object


def lineage_store(tmp_path: Path) -> tuple[SnapshotStore, Path, dict[str, str]]:
    """raw -> features (derived, with a model's predictions indexed), plus an unrelated snapshot."""
    store_dir = tmp_path / "store"
    store = SnapshotStore.open(str(store_dir))
    shared = {"shared.csv": b"shared\n" * 10, "big-shared.bin": os.urandom(BIG)}
    raw = store.snapshot(make_tree(tmp_path / "raw", {**shared, "raw.csv": b"raw only\n" * 100, "big-raw.bin": os.urandom(BIG)}))
    model = {"name": "churn", "version": "3", "run_id": "r1"}
    features = store.snapshot(make_tree(tmp_path / "features", {**shared, "features.csv": b"features only\n"}),
                              parents=[raw.snapshot_id], extra={"model": model})
    other = store.snapshot(make_tree(tmp_path / "other", TREE))
    return store, store_dir, {"raw": raw.snapshot_id, "features": features.snapshot_id, "other": other.snapshot_id}


def keys_under(store_dir: Path, folder: str) -> list[str]:
    root = store_dir / folder
    return sorted(p.relative_to(store_dir).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_forget_marks_idempotently_and_unforget_drops_the_marks(tmp_path):
    store, store_dir, ids = lineage_store(tmp_path)
    store.forget([ids["raw"][:10], ids["other"]], reason="older than 30 days")
    first = store.forgotten()
    assert sorted(first) == sorted([ids["raw"], ids["other"]])
    assert first[ids["raw"]]["reason"] == "older than 30 days" and {"time", "host"} <= set(first[ids["raw"]])
    store.forget([ids["raw"]], reason="again")
    assert store.forgotten() == first  # the first marker stands
    assert [r.snapshot_id for r in store.records(ids["raw"])] == [ids["raw"]]  # still readable until gc

    store.unforget([ids["other"]])
    assert sorted(store.forgotten()) == [ids["raw"]]
    with pytest.raises(SnapshotError, match="unknown snapshot id"):
        store.forget(["abcdef123456"], reason="typo")


def test_gc_deletes_forgotten_snapshots_their_index_keys_and_only_their_objects(tmp_path):
    store, store_dir, ids = lineage_store(tmp_path)
    before = store_bytes(store_dir)
    store.forget([ids["raw"], ids["features"]], reason="retention")

    planned = store.gc(protect=[ids["features"]], grace_seconds=0, dry_run=True)
    assert isinstance(planned, GcReport) and planned.dry_run
    assert store.forgotten().keys() == {ids["raw"], ids["features"]} and store_bytes(store_dir) == before  # nothing touched
    report = store.gc(protect=[ids["features"]], grace_seconds=0)
    assert (report.deleted_snapshots, report.kept_forgotten) == ([ids["raw"]], [ids["features"]])
    assert (planned.deleted_snapshots, planned.deleted_objects, planned.freed_bytes) == (
        report.deleted_snapshots, report.deleted_objects, report.freed_bytes)
    # raw's own: its manifest and big file (loose), its small file (inside a pack, repacked away)
    assert report.deleted_objects == 3 and report.repacked_packs == 1 and not report.dry_run
    assert report.freed_bytes > BIG + 900
    assert before - store_bytes(store_dir) == report.freed_bytes + 48  # and raw.csv's row in the pack's index
    assert f"deleted snapshot {ids['raw']}" in report.describe()

    assert store.snapshot_ids() == {ids["features"], ids["other"]}
    assert sorted(store.forgotten()) == [ids["features"]]  # protected: still forgotten, still there
    assert store.children(ids["raw"]) == [ids["features"]]  # a kept child's own index key stays
    assert store.outputs_of(model="churn", version="3") == [ids["features"]]
    assert store.verify() == []
    for name in ("features", "other"):
        store.restore(ids[name], tmp_path / f"out-{name}")
        assert read_tree(tmp_path / f"out-{name}") == read_tree(tmp_path / name)


def test_gc_deletes_index_keys_pointing_at_deleted_snapshots(tmp_path):
    store, store_dir, ids = lineage_store(tmp_path)
    store.forget([ids["features"]], reason="retention")
    store.gc(grace_seconds=0)
    assert store.children(ids["raw"]) == [] and store.outputs_of(model="churn", version="3") == []
    assert keys_under(store_dir, "index/children") == keys_under(store_dir, "index/models") == []
    assert keys_under(store_dir, "forgotten") == [] and not (store_dir / "records" / ids["features"]).exists()


def test_young_objects_are_kept_for_the_grace_period(tmp_path):
    store, store_dir, ids = lineage_store(tmp_path)
    before = store_bytes(store_dir)
    store.forget([ids["raw"]], reason="retention")
    report = store.gc()  # the default grace period: everything here was written a moment ago
    assert DEFAULT_GC_GRACE_SECONDS >= 3600 and report.deleted_snapshots == [ids["raw"]]
    assert (report.deleted_objects, report.deleted_packs, report.freed_bytes) == (0, 0, 0)
    assert store_bytes(store_dir) == before
    assert store.verify() == []  # its objects are there, unused: not damage
    assert store.gc(grace_seconds=0).deleted_objects == 3  # raw's manifest, big file, small file


def test_a_mostly_garbage_pack_is_repacked_and_a_mostly_live_one_kept(tmp_path):
    store_dir = tmp_path / "store"
    store = SnapshotStore.open(str(store_dir))
    files = {f"f{i:02d}.bin": os.urandom(20_000) for i in range(10)}
    whole = store.snapshot(make_tree(tmp_path / "whole", files)).snapshot_id
    few = store.snapshot(make_tree(tmp_path / "few", {n: files[n] for n in ("f00.bin", "f01.bin")})).snapshot_id
    most = store.snapshot(make_tree(tmp_path / "most", {n: d for n, d in files.items() if n != "f09.bin"})).snapshot_id
    assert len(list((store_dir / "packs").glob("*.pack"))) == 1  # the later snapshots wrote no new object

    store.forget([whole, most], reason="test")
    report = store.gc(grace_seconds=0)
    assert (report.repacked_packs, report.deleted_packs, report.deleted_objects) == (1, 1, 8 + 2)  # + 2 manifests
    (pack,) = (store_dir / "packs").glob("*.pack")
    assert pack.stat().st_size == 40_000
    store.restore(few, tmp_path / "out")
    assert read_tree(tmp_path / "out") == {n: files[n] for n in ("f00.bin", "f01.bin")}

    again = store.snapshot(make_tree(tmp_path / "again", {**files, "f00.bin": b"changed"})).snapshot_id
    store.forget([again], reason="test")
    store.unforget([again])
    assert store.gc(grace_seconds=0).deleted_objects == 0  # its objects are live again
    assert store.verify() == []


def test_unforget_after_gc_deleted_the_snapshot_is_an_error(tmp_path):
    store, _store_dir, ids = lineage_store(tmp_path)
    store.forget([ids["other"]], reason="test")
    store.gc(grace_seconds=0)
    with pytest.raises(SnapshotError, match="deleted by gc"):
        store.unforget([ids["other"]])


def test_snapshotting_a_forgotten_tree_again_keeps_it(tmp_path):
    store, _store_dir, ids = lineage_store(tmp_path)
    store.forget([ids["other"]], reason="test")
    assert store.snapshot(tmp_path / "other").snapshot_id == ids["other"]
    assert store.forgotten() == {} and store.gc(grace_seconds=0).deleted_snapshots == []


def test_the_dedup_race_an_in_flight_snapshot_reusing_garbage_keeps_it(tmp_path, monkeypatch):
    """A snapshot finds objects of a forgotten snapshot already stored (so does not write them again),
    and gc plans their deletion before the snapshot's record is written: gc waits for the snapshot's
    lock, sees its record, and keeps them."""
    store_dir = tmp_path / "store"
    store = SnapshotStore.open(str(store_dir))
    shared = {"shared.bin": os.urandom(50_000), "big.bin": os.urandom(BIG)}
    old = store.snapshot(make_tree(tmp_path / "old", {**shared, "old.txt": b"old" * 10})).snapshot_id
    store.forget([old], reason="test")
    old_packs = sorted((store_dir / "packs").glob("*.pack"))

    found_objects, go_on, planned, racing = threading.Event(), threading.Event(), [], {}
    real_store_files, real_survey = Ingest._store_files, gc_module._survey

    def pausing(self, misses):
        digests = real_store_files(self, misses)  # shared.bin and big.bin found stored: only new.txt written
        found_objects.set()
        assert go_on.wait(30)
        return digests

    def recording_survey(*args):
        survey = real_survey(*args)
        planned.append({digest_bytes(data) in survey.live for data in shared.values()})
        return survey

    monkeypatch.setattr(Ingest, "_store_files", pausing)
    monkeypatch.setattr(gc_module, "_survey", recording_survey)
    new_tree = make_tree(tmp_path / "new", {**shared, "new.txt": b"new"})
    snapshotter = threading.Thread(target=lambda: racing.update(record=SnapshotStore.open(str(store_dir)).snapshot(new_tree)))
    snapshotter.start()
    assert found_objects.wait(30)
    collector = threading.Thread(target=lambda: racing.update(report=SnapshotStore.open(str(store_dir)).gc(grace_seconds=0)))
    collector.start()
    # gc has planned and waits for the snapshot's shared lock: its exclusive lock is written, kept while it waits
    assert wait_until(lambda: any((store_dir / "locks").glob("exclusive.*")) or not collector.is_alive(), timeout=30)
    assert planned == [{False}] and collector.is_alive()
    go_on.set()
    snapshotter.join(30)
    collector.join(30)

    assert planned == [{False}, {True}]  # garbage when planned, live when gc looked again under its lock
    assert racing["report"].deleted_snapshots == [old]
    new_packs = set((store_dir / "packs").glob("*.pack")) - set(old_packs)
    assert len(new_packs) == 1 and new_packs.pop().stat().st_size == 3  # new.txt alone: the rest was reused
    assert store.verify() == []
    store.restore(racing["record"].snapshot_id, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(new_tree)


SNAPSHOTTER = """
import os, sys
from pathlib import Path
from airflow_mlops.snapshots import SnapshotStore
store_dir, stop_file, *trees = sys.argv[1:]
rounds = 0
while True:
    last_round = os.path.exists(stop_file)
    for tree in trees:
        Path(tree, "round.txt").write_text(str(rounds))  # a new snapshot id each round, the other objects shared
        print(SnapshotStore.open(store_dir).snapshot(tree, cache_stats=rounds % 2 == 0).snapshot_id, flush=True)
    rounds += 1
    if last_round:
        break
"""

#: How many gc runs that deleted snapshots the collector makes before it stops: a count, not a time
#: window, so the race is run as often on a slow machine as on a fast one.
COLLECTING_RUNS = 20

COLLECTOR = """
import sys
from airflow_mlops.snapshots import SnapshotStore
store_dir, collecting_runs = sys.argv[1], int(sys.argv[2])
runs = 0
while runs < collecting_runs:
    store = SnapshotStore.open(store_dir)
    store.forget(store.snapshot_ids(), reason="everything, all the time")
    runs += bool(store.gc(grace_seconds=0).deleted_snapshots)
print(runs)
"""


def test_snapshots_racing_a_gc_that_forgets_everything_lose_nothing(tmp_path):
    """Real processes: two snapshotters re-take trees that share objects, while a third process
    forgets every snapshot and collects garbage with no grace period, over and over."""
    store_dir = tmp_path / "store"
    shared = {f"shared-{i}.bin": os.urandom(4000) for i in range(40)}
    shared["big.bin"] = os.urandom(PACK_OBJECT_LIMIT + 1000)
    trees = [str(make_tree(tmp_path / f"tree-{n}", {**shared, f"own-{n}.txt": f"{n}".encode()})) for n in range(4)]
    SnapshotStore.open(str(store_dir)).snapshot(trees[0])
    stop_snapshots = tmp_path / "stop-snapshots"
    python = [sys.executable, "-c"]
    snapshotters = [subprocess.Popen([*python, SNAPSHOTTER, str(store_dir), str(stop_snapshots), *trees[n::2]],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (0, 1)]
    collector = subprocess.Popen([*python, COLLECTOR, str(store_dir), str(COLLECTING_RUNS)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        collector.wait(600)
        stop_snapshots.touch()  # their last round is taken after the collector stopped: nothing forgets it
        outputs = [process.communicate(timeout=120) for process in (*snapshotters, collector)]
    finally:
        for process in (*snapshotters, collector):
            if process.poll() is None:
                process.kill()
    assert [p.returncode for p in (*snapshotters, collector)] == [0, 0, 0], [err for _out, err in outputs]
    assert int(outputs[2][0]) >= 3, outputs[2]  # gc did delete snapshots, repeatedly, while they were taken

    store = SnapshotStore.open(str(store_dir))
    assert store.verify() == []  # every recorded snapshot, forgotten or not, has all its objects
    for n, (out, _err) in enumerate(outputs[:2]):
        last = out.split()[-1]  # taken after the collector stopped
        store.restore(last, tmp_path / f"out-{n}")
        assert read_tree(tmp_path / f"out-{n}") == read_tree(Path(trees[n::2][-1]))
