"""Snapshot store core: identity, dedup, stat cache, restore safety, verify, log."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots import SnapshotStore, parse_snapshot_ref
from airflow_mlops.snapshots import store as store_module
from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.snapshots.store import ManifestEntry, encode_manifest


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def store_bytes(store_dir: Path) -> int:
    return sum(p.stat().st_size for p in (store_dir / "objects").rglob("*") if p.is_file())


TREE = {"a.csv": b"x,y\n1,2\n", "nested/b.csv": b"x,y\n3,4\n" * 100, "nested/deeper/c.bin": bytes(range(256))}


def test_same_bytes_same_names_give_same_id_wherever_they_live(tmp_path):
    store = SnapshotStore.open(str(tmp_path / "store"))
    first = store.snapshot(make_tree(tmp_path / "monday", TREE))
    second_root = make_tree(tmp_path / "elsewhere" / "tuesday", TREE)
    os.utime(second_root / "a.csv", ns=(1, 1))  # mtimes do not matter
    second = store.snapshot(second_root)
    assert first.snapshot_id == second.snapshot_id
    assert len(first.snapshot_id) == 64

    (second_root / "nested/b.csv").write_bytes(b"x,y\n3,5\n" + b"x,y\n3,4\n" * 99)  # one byte differs
    assert store.snapshot(second_root).snapshot_id != first.snapshot_id


def test_a_renamed_file_is_a_new_version(tmp_path):
    store = SnapshotStore.open(str(tmp_path / "store"))
    original = store.snapshot(make_tree(tmp_path / "t1", TREE))
    renamed = dict(TREE)
    renamed["a2.csv"] = renamed.pop("a.csv")
    assert store.snapshot(make_tree(tmp_path / "t2", renamed)).snapshot_id != original.snapshot_id


def test_id_is_the_digest_of_the_sorted_manifest(tmp_path):
    store = SnapshotStore.open(str(tmp_path / "store"))
    record = store.snapshot(make_tree(tmp_path / "src", TREE))
    expected = encode_manifest(
        ManifestEntry(rel, len(data), digest_bytes(data)) for rel, data in sorted(TREE.items(), reverse=True)
    )
    assert record.snapshot_id == digest_bytes(expected)
    assert [entry.path for entry in store.manifest(record.snapshot_id)] == sorted(TREE)
    assert (record.files, record.bytes) == (3, sum(len(d) for d in TREE.values()))


def test_contents_are_stored_once_and_one_changed_file_adds_about_its_bytes(tmp_path):
    files = {f"part-{i:03d}.bin": os.urandom(50_000) for i in range(20)}
    files["copy.bin"] = files["part-000.bin"]  # same content twice in one tree
    store_dir = tmp_path / "store"
    store = SnapshotStore.open(str(store_dir))
    src = make_tree(tmp_path / "src", files)
    store.snapshot(src)
    cold = store_bytes(store_dir)
    assert 20 * 50_000 <= cold < 20 * 50_000 + 10_000  # 20 distinct contents plus a small manifest

    (src / "part-007.bin").write_bytes(os.urandom(50_000))
    store.snapshot(src)
    growth = store_bytes(store_dir) - cold
    assert 50_000 <= growth < 50_000 + 5_000


def spy_on_hashing(monkeypatch) -> list[str]:
    """Names of the files the store reads and hashes, in the order it does."""
    hashed: list[str] = []
    real = SnapshotStore._store_file

    def recording(self, path, stat):
        hashed.append(Path(path).name)
        return real(self, path, stat)

    monkeypatch.setattr(SnapshotStore, "_store_file", recording)
    return hashed


def test_unchanged_files_are_not_rehashed_and_changed_ones_are(tmp_path, monkeypatch):
    store_dir = tmp_path / "store"
    src = make_tree(tmp_path / "src", {f"f{i}.txt": f"row {i}\n".encode() for i in range(50)})
    old = 1_600_000_000_000_000_000
    for path in src.iterdir():
        os.utime(path, ns=(old, old))  # older than the racy window
    hashed = spy_on_hashing(monkeypatch)

    first = SnapshotStore.open(str(store_dir)).snapshot(src)
    assert len(hashed) == 50
    assert (store_dir / "cache" / "stat.sqlite").is_file()  # persistent, beside the store

    hashed.clear()
    again = SnapshotStore.open(str(store_dir)).snapshot(src)  # a new process would see the same file
    assert hashed == [] and again.snapshot_id == first.snapshot_id

    (src / "f3.txt").write_bytes(b"ROW 3\n")  # same size, new mtime
    os.utime(src / "f3.txt", ns=(old + 10**9, old + 10**9))
    changed = SnapshotStore.open(str(store_dir)).snapshot(src)
    assert hashed == ["f3.txt"] and changed.snapshot_id != first.snapshot_id


def test_a_cached_file_whose_object_is_gone_is_stored_again(tmp_path):
    store_dir = tmp_path / "store"
    src = make_tree(tmp_path / "src", TREE)
    old = 1_600_000_000_000_000_000
    for path in src.rglob("*.*"):
        os.utime(path, ns=(old, old))
    store = SnapshotStore.open(str(store_dir))
    store.snapshot(src)
    digest = digest_bytes(TREE["a.csv"])
    (store_dir / "objects" / digest[:2] / digest[2:]).unlink()  # e.g. removed by hand or by a clean-up

    again = store.snapshot(src)  # the stat cache still knows a.csv, but its object is gone
    assert (store_dir / "objects" / digest[:2] / digest[2:]).read_bytes() == TREE["a.csv"]
    assert store.verify(again.snapshot_id) == []


def test_a_large_file_rewritten_after_hashing_is_not_stored_under_the_old_digest(tmp_path, monkeypatch):
    """The bytes copied into the store are hashed again, so a file changed in between stores nothing."""
    big = tmp_path / "src" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(b"new contents " * 200_000)  # above the size that is read whole
    stale = digest_bytes(b"old contents " * 200_000)
    monkeypatch.setattr(store_module, "digest_file", lambda path, size: stale)  # hashed before the rewrite
    store_dir = tmp_path / "store"

    with pytest.raises(SnapshotError, match="changed while it was being snapshotted"):
        SnapshotStore.open(str(store_dir)).snapshot(big.parent)
    assert not (store_dir / "objects" / stale[:2] / stale[2:]).exists()
    assert not list((store_dir / "tmp").iterdir()) and not (store_dir / "records").exists()


def test_a_temporary_folder_can_be_kept_out_of_the_stat_cache(tmp_path):
    from airflow_mlops.snapshots.statcache import StatCache

    old = 1_600_000_000_000_000_000
    kept, temporary = make_tree(tmp_path / "kept", TREE), make_tree(tmp_path / "temporary", TREE)
    for path in [*kept.rglob("*.*"), *temporary.rglob("*.*")]:
        os.utime(path, ns=(old, old))
    store = SnapshotStore.open(str(tmp_path / "store"))
    store.snapshot(kept)
    store.snapshot(temporary, cache_stats=False)
    cache = StatCache(tmp_path / "store" / "cache" / "stat.sqlite")
    assert len(cache.load_under(kept)) == 3 and cache.load_under(temporary) == {}


def _use_stat_cache(path: str, number: int, start: object, errors: object) -> None:
    from airflow_mlops.snapshots.statcache import FileStat, StatCache

    start.wait()
    try:
        cache = StatCache(Path(path))
        cache.load_under(Path("/data"))
        cache.store({f"/data/f{number}": (FileStat(1, 1, number), "d" * 64)}, scan_started_ns=10**19)
    except Exception as error:  # noqa: BLE001 - reported to the test
        errors.put(repr(error))


def test_processes_creating_the_stat_cache_at_once_all_succeed(tmp_path):
    """Eight snapshot processes meeting a new stat cache: one creates it, none may fail on its lock."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_number in range(20):
        path = str(tmp_path / f"round-{round_number}" / "stat.sqlite")
        start, errors = context.Barrier(8), context.Queue()
        workers = [context.Process(target=_use_stat_cache, args=(path, n, start, errors)) for n in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert errors.empty(), errors.get()
        assert [worker.exitcode for worker in workers] == [0] * 8


def test_recently_modified_files_are_hashed_again(tmp_path, monkeypatch):
    """A file written in the same clock tick as the snapshot could change unseen: never trust its stat."""
    src = make_tree(tmp_path / "src", {"fresh.txt": b"just written"})
    hashed = spy_on_hashing(monkeypatch)
    store = SnapshotStore.open(str(tmp_path / "store"))
    now = store_module.now_ns()
    os.utime(src / "fresh.txt", ns=(now, now))
    store.snapshot(src)
    store.snapshot(src)
    assert len(hashed) == 2


def test_restore_writes_the_exact_tree_and_checks_each_file(tmp_path):
    store = SnapshotStore.open(str(tmp_path / "store"))
    record = store.snapshot(make_tree(tmp_path / "src", TREE))
    dest = tmp_path / "restored"
    store.restore(record.snapshot_id[:10], dest)
    restored = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert restored == TREE
    assert store.snapshot(dest).snapshot_id == record.snapshot_id


def test_restore_refuses_a_non_empty_destination_unless_forced(tmp_path):
    store = SnapshotStore.open(str(tmp_path / "store"))
    record = store.snapshot(make_tree(tmp_path / "src", TREE))
    dest = make_tree(tmp_path / "dest", {"a.csv": b"old", "keep.txt": b"mine"})
    with pytest.raises(SnapshotError, match="not empty; use --force"):
        store.restore(record.snapshot_id, dest)
    assert (dest / "a.csv").read_bytes() == b"old"
    store.restore(record.snapshot_id, dest, force=True)
    assert (dest / "a.csv").read_bytes() == TREE["a.csv"]
    assert (dest / "keep.txt").read_bytes() == b"mine"


def forge_snapshot(store_dir: Path, paths: list[str]) -> str:
    """Write a hostile manifest (and its content object) straight into a store, as an attacker could."""
    store = SnapshotStore.open(str(store_dir))
    store.snapshot(make_tree(store_dir.parent / "seed", {"seed.txt": b"evil"}))
    digest = digest_bytes(b"evil")
    manifest = json.dumps({"format": 1, "files": [[p, 4, digest] for p in paths]}).encode()
    snapshot_id = digest_bytes(manifest)
    obj = store_dir / "objects" / snapshot_id[:2] / snapshot_id[2:]
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(manifest)
    record = store_dir / "records" / snapshot_id / "1.json"
    record.parent.mkdir(parents=True)
    seed_record = next((store_dir / "records").rglob("*.json"))
    record.write_text(seed_record.read_text().replace(seed_record.parent.name, snapshot_id))
    return snapshot_id


@pytest.mark.parametrize("hostile", ["../outside.txt", "/tmp/absolute.txt", "ok/../../outside.txt", "a/./b"])
def test_restore_refuses_entries_escaping_the_destination(tmp_path, hostile):
    store_dir = tmp_path / "store"
    snapshot_id = forge_snapshot(store_dir, ["fine.txt", hostile])
    dest = tmp_path / "dest"
    with pytest.raises(SnapshotError, match="escape"):
        SnapshotStore.open(str(store_dir)).restore(snapshot_id, dest)
    assert not (tmp_path / "outside.txt").exists()
    assert not (dest / "fine.txt").exists()  # all entries are checked before any is written


def test_restore_refuses_to_write_through_a_symlink_pointing_out(tmp_path):
    store_dir = tmp_path / "store"
    snapshot_id = forge_snapshot(store_dir, ["link/passwd"])
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside)
    with pytest.raises(SnapshotError, match="symlink"):
        SnapshotStore.open(str(store_dir)).restore(snapshot_id, dest, force=True)
    assert list(outside.iterdir()) == []


def test_verify_names_damaged_and_missing_objects_and_their_snapshots(tmp_path):
    store_dir = tmp_path / "store"
    store = SnapshotStore.open(str(store_dir))
    src = make_tree(tmp_path / "src", TREE)
    first = store.snapshot(src)
    (src / "a.csv").write_bytes(b"x,y\n9,9\n")
    second = store.snapshot(src)
    assert store.verify() == []

    shared = digest_bytes(TREE["nested/b.csv"])
    obj = store_dir / "objects" / shared[:2] / shared[2:]
    os.chmod(obj, 0o644)
    obj.write_bytes(obj.read_bytes()[:-1] + b"!")  # one byte flipped
    problems = store.verify()
    assert [(p.digest, p.kind, p.snapshots) for p in problems] == [
        (shared, "damaged", sorted([first.snapshot_id, second.snapshot_id]))
    ]
    with pytest.raises(SnapshotError, match="damaged"):
        store.restore(first.snapshot_id, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # intact files are not written either

    gone = digest_bytes(b"x,y\n9,9\n")
    (store_dir / "objects" / gone[:2] / gone[2:]).unlink()
    problems = {p.digest: p for p in store.verify(second.snapshot_id)}
    assert problems[gone].kind == "missing" and problems[gone].snapshots == [second.snapshot_id]
    assert "used by" in problems[gone].describe()


def test_log_lists_records_newest_first_with_airflow_context(tmp_path):
    store = SnapshotStore.open(str(tmp_path / "store"))
    src = make_tree(tmp_path / "src", TREE)
    store.snapshot(src)
    identity = {"dag_id": "d", "run_id": "r", "task_id": "t", "try_number": 1, "map_index": -1, "logical_date": None}
    (src / "new.csv").write_bytes(b"1")
    latest = store.snapshot(src, airflow=identity, parents=["abc"])
    records = store.records()
    assert [r.snapshot_id for r in records][0] == latest.snapshot_id
    assert len(records) == 2
    assert records[0].airflow == identity and records[0].parents == ["abc"]
    assert records[0].source == str(src)
    assert parse_snapshot_ref(records[0].uri) == (store.uri, latest.snapshot_id)


def test_an_existing_directory_that_is_not_a_store_is_refused(tmp_path):
    not_a_store = make_tree(tmp_path / "documents", {"cv.pdf": b"%PDF"})
    with pytest.raises(SnapshotError, match="is not a snapshot store"):
        SnapshotStore.open(str(not_a_store))
    assert sorted(p.name for p in not_a_store.iterdir()) == ["cv.pdf"]


def test_bad_sources_fail_before_anything_is_written(tmp_path):
    store_dir = tmp_path / "store"
    store = SnapshotStore.open(str(store_dir))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnapshotError, match="does not exist"):
        store.snapshot(tmp_path / "missing")
    with pytest.raises(SnapshotError, match="no files"):
        store.snapshot(tmp_path / "empty")
    assert not store_dir.exists()
    shutil.rmtree(tmp_path / "empty")
