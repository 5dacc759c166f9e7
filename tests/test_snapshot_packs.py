"""Packs: small objects many to a file, with the guarantees loose objects have (ids, restore, verify, crashes)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots import SnapshotRecord, SnapshotStore
from airflow_mlops.snapshots.backends import LocalBackend
from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.snapshots.packs import PACK_OBJECT_LIMIT, PACK_TARGET, decode_index
from airflow_mlops.snapshots.records import ManifestEntry, encode_manifest
from tests.conftest import wait_until
from tests.test_snapshot_store import flip_byte, make_tree, packed_at, read_tree

MIXED = {
    "small/a.csv": b"x,y\n1,2\n",
    "small/b.csv": b"x,y\n3,4\n" * 100,
    "small/copy-of-b.csv": b"x,y\n3,4\n" * 100,  # same content twice: stored once
    "empty.txt": b"",
    "large/model.bin": bytes(range(256)) * (PACK_OBJECT_LIMIT // 256 + 10),  # above the limit: loose
    "large/exactly-the-limit.bin": b"L" * PACK_OBJECT_LIMIT,
}


def write_old_layout_store(store_dir: Path, source: Path) -> str:
    """A store as the code before packs wrote it (every object loose, marker format 1); returns the id."""
    backend = LocalBackend(store_dir)
    backend.put_bytes("airflow-mlops-store.json", json.dumps({"format": 1, "hash": "blake3"}).encode())
    entries = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest = digest_bytes(data)
        backend.put_bytes(f"objects/{digest[:2]}/{digest[2:]}", data)
        entries.append(ManifestEntry(path.relative_to(source).as_posix(), len(data), digest))
    manifest = encode_manifest(entries)
    snapshot_id = digest_bytes(manifest)
    backend.put_bytes(f"objects/{snapshot_id[:2]}/{snapshot_id[2:]}", manifest)
    record = SnapshotRecord(snapshot_id, str(store_dir), "2026-01-01T00:00:00+00:00", len(entries),
                            sum(e.size for e in entries), str(source), "old-host")
    backend.put_bytes(f"records/{snapshot_id}/1-old.json", json.dumps(record.__dict__).encode())
    return snapshot_id


def test_packed_and_loose_objects_restore_byte_identical_trees_with_the_ids_of_the_old_layout(tmp_path):
    src = make_tree(tmp_path / "src", MIXED)
    store_dir = tmp_path / "store"
    store = SnapshotStore.open(str(store_dir))
    snapshot_id = store.snapshot(src).snapshot_id
    assert snapshot_id == write_old_layout_store(tmp_path / "old-store", src)  # the id does not depend on the layout

    (index,) = (store_dir / "packs").glob("*.idx")
    packed = {digest for digest, _offset, _length in decode_index(index.read_bytes())}
    assert packed == {digest_bytes(MIXED[name]) for name in ("small/a.csv", "small/b.csv", "empty.txt")}
    pack = index.with_suffix(".pack")
    assert pack.name == digest_bytes(pack.read_bytes()) + ".pack"  # named by its content
    loose = {p.parent.name + p.name for p in (store_dir / "objects").rglob("*") if p.is_file()}
    assert loose == {snapshot_id, *(digest_bytes(MIXED[name]) for name in MIXED if name.startswith("large/"))}

    store.restore(snapshot_id, tmp_path / "out")
    assert read_tree(tmp_path / "out") == MIXED
    (tmp_path / "out" / "small" / "a.csv").write_bytes(b"edited")
    store.restore(snapshot_id, tmp_path / "out", force=True)  # an existing file is replaced
    assert read_tree(tmp_path / "out") == MIXED
    assert store.verify() == []


def test_many_small_files_make_few_packs(tmp_path):
    files = {f"d{i % 7}/f{i:04d}.bin": os.urandom(20_000) for i in range(1000)}  # 20 MB
    store_dir = tmp_path / "store"
    store = SnapshotStore.open(str(store_dir))
    snapshot_id = store.snapshot(make_tree(tmp_path / "src", files)).snapshot_id
    packs = sorted((store_dir / "packs").glob("*.pack"))
    assert 20_000_000 // PACK_TARGET <= len(packs) <= 20_000_000 // PACK_TARGET + 2  # full packs, then the rest
    assert [p.name for p in (store_dir / "objects").rglob("*") if p.is_file()] == [snapshot_id[2:]]  # the manifest
    store.restore(snapshot_id, tmp_path / "out")
    assert read_tree(tmp_path / "out") == files


def test_a_flipped_byte_in_a_pack_is_reported_for_exactly_the_objects_it_hits(tmp_path):
    files = {f"f{i}.bin": os.urandom(1000 + i) for i in range(6)}
    store_dir = tmp_path / "store"
    store = SnapshotStore.open(str(store_dir))
    first = store.snapshot(make_tree(tmp_path / "one", files)).snapshot_id
    second = store.snapshot(make_tree(tmp_path / "two", {"f2.bin": files["f2.bin"], "g.txt": b"g"})).snapshot_id
    victim = digest_bytes(files["f2.bin"])
    pack, offset, length = packed_at(store_dir, victim)
    neighbours = [digest_bytes(files[name]) for name in ("f1.bin", "f3.bin")]
    assert {packed_at(store_dir, d)[0] for d in neighbours} == {pack}  # in the same pack, on either side
    for where in (offset, offset + length - 1):  # its first byte, then (on a fresh copy) its last one
        flip_byte(pack, where)
        problems = store.verify()
        assert [(p.digest, p.kind, p.snapshots) for p in problems] == [(victim, "damaged", sorted([first, second]))]
        assert [p.digest for p in store.verify(second)] == [victim]
        flip_byte(pack, where)
    assert store.verify() == []

    flip_byte(pack, offset)
    with pytest.raises(SnapshotError, match=f"object {victim} for f2.bin is damaged"):
        store.restore(first, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # intact files are not written either


def test_an_old_layout_store_is_read_and_then_written_with_packs(tmp_path):
    src = make_tree(tmp_path / "src", MIXED)
    store_dir = tmp_path / "store"
    old_id = write_old_layout_store(store_dir, src)
    store = SnapshotStore.open(str(store_dir))
    assert store.verify() == []
    store.restore(old_id, tmp_path / "out-old")
    assert read_tree(tmp_path / "out-old") == MIXED

    (src / "small" / "new.csv").write_bytes(b"new small file\n")
    new_id = store.snapshot(src).snapshot_id
    (index,) = (store_dir / "packs").glob("*.idx")
    assert decode_index(index.read_bytes()) == [(digest_bytes(b"new small file\n"), 0, 15)]  # old ones reused loose
    marker = json.loads((store_dir / "airflow-mlops-store.json").read_bytes())
    assert marker == {"format": 2, "hash": "blake3", "loose_small_objects": True}
    assert SnapshotStore.open(str(store_dir)).snapshot(src).snapshot_id == new_id  # a new process: same objects
    assert len(list((store_dir / "packs").glob("*.idx"))) == 1

    store.restore(new_id, tmp_path / "out-new")
    assert read_tree(tmp_path / "out-new") == {**MIXED, "small/new.csv": b"new small file\n"}
    store.forget([old_id], reason="test")
    assert store.gc(grace_seconds=0).deleted_objects == 1  # the old manifest; every file is in the new snapshot
    assert store.verify() == []


def test_a_store_of_a_newer_format_is_refused(tmp_path):
    store_dir = make_tree(tmp_path / "store", {"airflow-mlops-store.json": b'{"format": 3, "hash": "blake3"}'})
    with pytest.raises(SnapshotError, match="has format 3, newer than this airflow-mlops reads"):
        SnapshotStore.open(str(store_dir))


KILLABLE = """
import sys
from airflow_mlops.snapshots import SnapshotStore
store = SnapshotStore.open(sys.argv[1])
if sys.argv[2] == "snapshot":
    print("ready", flush=True)
    store.snapshot(sys.argv[3])
else:
    store.forget(store.snapshot_ids() - {sys.argv[3]}, reason="test")
    print("ready", flush=True)
    store.gc(grace_seconds=0)
"""


def stored_files(store_dir: Path) -> set[Path]:
    """The store's packs, pack indexes and loose objects (manifests among them): what snapshots add and gc deletes.
    (``os.walk`` passes over a folder that gc deletes while it looks.)"""
    return {Path(folder, name) for top in ("packs", "objects") for folder, _, names in os.walk(store_dir / top)
            for name in names}


def run_and_kill(store_dir: Path, after_changes: int, *args: str) -> bool:
    """Run a snapshot (or a gc after forgetting every snapshot but one) in a child, and SIGKILL it as soon as
    ``after_changes`` of the store's packs and objects have appeared or gone; True if it was killed before it
    finished. Kill moments are events of the work itself, so they land mid-way however fast this machine is."""
    before = stored_files(store_dir)
    child = subprocess.Popen([sys.executable, "-c", KILLABLE, str(store_dir), *args], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    assert wait_until(lambda: len(stored_files(store_dir) ^ before) >= after_changes or child.poll() is not None,
                      interval=0.001)
    child.send_signal(signal.SIGKILL)
    return child.wait(60) == -signal.SIGKILL


def tree_of_round(root: Path, round_number: int) -> Path:
    """400 small files (packed) and 3 large ones (loose), with contents of their own."""
    files = {f"s/{i:04d}.bin": round_number.to_bytes(2, "little") + os.urandom(30_000) for i in range(400)}
    files.update({f"l/{i}.bin": os.urandom(PACK_OBJECT_LIMIT + 1) for i in range(3)})
    return make_tree(root / f"src-{round_number}", files)


def test_snapshots_and_gcs_killed_at_random_points_leave_a_store_that_verifies_clean(tmp_path):
    """SIGKILL at random moments of real snapshots (small files, packs, large files) and of gcs.

    A snapshot of such a tree writes 2 packs, their 2 indexes, 3 loose objects and a manifest before its
    record: each is killed once 1 to 6 of those are there, so before its record."""
    rng = random.Random(14)
    store_dir = tmp_path / "store"
    killed = 0
    for round_number in range(6):
        src = tree_of_round(tmp_path, round_number)
        files = read_tree(src)
        was_killed = run_and_kill(store_dir, rng.randint(1, 6), "snapshot", str(src))
        store = SnapshotStore.open(str(store_dir))
        killed += was_killed and str(src) not in {record.source for record in store.records()}  # before its record
        assert store.verify() == []  # a record only for a whole snapshot; every object there intact
    assert killed >= 3 and list((store_dir / "packs").glob("*.idx"))  # killed midway, after some packs were written

    store = SnapshotStore.open(str(store_dir))
    kept = store.snapshot(src).snapshot_id
    for _round in range(4):
        for n in range(5):
            store.snapshot(tmp_path / f"src-{n}")
        run_and_kill(store_dir, rng.randint(1, 20), "gc", kept)  # of some 40: 5 forgotten snapshots' files
        assert kept in store.snapshot_ids() and store.verify() == []
    store.restore(kept, tmp_path / "out")
    assert read_tree(tmp_path / "out") == files
    store.forget(store.snapshot_ids() - {kept}, reason="test")
    store.gc(grace_seconds=0)
    assert store.snapshot_ids() == {kept} and store.verify() == []
