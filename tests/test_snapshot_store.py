"""Snapshot store core: identity, dedup, stat cache, restore safety, verify, log."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots import SnapshotStore, parse_snapshot_ref
from airflow_mlops.snapshots import ingest as ingest_module
from airflow_mlops.snapshots import restore as restore_module
from airflow_mlops.snapshots import restored as restored_module
from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.snapshots.ingest import Ingest
from airflow_mlops.snapshots.packs import PACK_OBJECT_LIMIT, decode_index
from airflow_mlops.snapshots.records import ManifestEntry, encode_manifest
from airflow_mlops.snapshots.refs import object_key
from airflow_mlops.snapshots.statcache import now_ns


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def without_mode_override() -> list[str]:
    """A command prefix under which file modes bind, even for root.

    Root ignores file modes through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH; setpriv drops them.
    """
    if os.geteuid() != 0:
        return []
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"]


def store_bytes(store_dir: Path) -> int:
    """Bytes of loose objects and packs (with their indexes)."""
    return sum(p.stat().st_size for folder in ("objects", "packs") for p in (store_dir / folder).rglob("*") if p.is_file())


def packed_at(store_dir: Path, digest: str) -> tuple[Path, int, int]:
    """(pack file, offset, length) of a packed object, from the packs' index files."""
    for index in (store_dir / "packs").glob("*.idx"):
        for row_digest, offset, length in decode_index(index.read_bytes()):
            if row_digest == digest:
                return index.with_suffix(".pack"), offset, length
    raise AssertionError(f"object {digest} is in no pack")


def flip_byte(path: Path, offset: int) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


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
    real = Ingest._store_file

    def recording(self, path, stat, *args):
        hashed.append(Path(path).name)
        return real(self, path, stat, *args)

    monkeypatch.setattr(Ingest, "_store_file", recording)
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
    pack, _offset, _length = packed_at(store_dir, digest)
    pack.unlink()  # e.g. removed by hand or by a clean-up, index first
    pack.with_suffix(".idx").unlink()

    again = store.snapshot(src)  # the stat cache still knows a.csv, but its object is gone
    pack, offset, length = packed_at(store_dir, digest)
    assert pack.read_bytes()[offset : offset + length] == TREE["a.csv"]
    assert store.verify(again.snapshot_id) == []


def spy_on_file_by_file_matching(monkeypatch) -> list[str]:
    """The roots whose files the store matches one by one against the stat cache (not as a remembered tree)."""
    matched: list[str] = []
    real = Ingest._known_digests

    def recording(self, root, files):
        matched.append(str(root))
        return real(self, root, files)

    monkeypatch.setattr(Ingest, "_known_digests", recording)
    return matched


def test_an_unchanged_tree_is_recognised_whole_until_a_file_changes_or_its_objects_go(tmp_path, monkeypatch):
    """A tree whose files all keep their paths and stats gets its remembered snapshot without a per-file match;
    a file touched, or the objects deleted by gc, sends it back to the per-file path, which stores them again."""
    store_dir = tmp_path / "store"
    tree = {**{f"rows/{i}.csv": f"{i},{i * i}\n".encode() for i in range(20)}, "big.bin": os.urandom(PACK_OBJECT_LIMIT + 1)}
    src = make_tree(tmp_path / "src", tree)  # packed objects and a loose one
    old = 1_600_000_000_000_000_000
    for path in src.rglob("*.*"):
        os.utime(path, ns=(old, old))
    matched = spy_on_file_by_file_matching(monkeypatch)
    store = SnapshotStore.open(str(store_dir))
    first = store.snapshot(src)
    assert len(matched) == 1

    again = SnapshotStore.open(str(store_dir)).snapshot(src)
    assert len(matched) == 1, "an unchanged tree was matched file by file"
    assert (again.snapshot_id, again.files, again.bytes) == (first.snapshot_id, first.files, first.bytes)
    assert len(store.records(first.snapshot_id)) == 2

    store.forget([first.snapshot_id], reason="test")
    store.snapshot(src)
    assert len(matched) == 1 and store.forgotten() == {}  # taken again: wanted again, as on the per-file path

    hashed = spy_on_hashing(monkeypatch)
    os.utime(src / "rows" / "3.csv", ns=(old + 10**9, old + 10**9))  # same bytes, new mtime
    touched = store.snapshot(src)
    assert len(matched) == 2 and hashed == ["3.csv"] and touched.snapshot_id == first.snapshot_id

    store.forget([first.snapshot_id], reason="test")
    report = store.gc(grace_seconds=0)
    assert report.deleted_snapshots == [first.snapshot_id] and report.deleted_packs >= 1
    assert not store.backend.exists(object_key(digest_bytes(tree["big.bin"])))
    hashed.clear()
    back = store.snapshot(src)  # remembered, but its packs and loose object are gone
    assert len(matched) == 3 and sorted(hashed) == sorted(Path(rel).name for rel in tree)
    assert back.snapshot_id == first.snapshot_id and store.verify() == []
    store.restore(back.snapshot_id, tmp_path / "out")
    assert read_tree(tmp_path / "out") == tree


def test_a_tree_with_a_racily_recent_file_is_not_remembered_whole(tmp_path, monkeypatch):
    """A file written within the file system's timestamp granularity could change unseen: such a tree is matched file by file."""
    src = make_tree(tmp_path / "src", {"a.csv": b"1\n", "b.csv": b"2\n"})
    old = 1_600_000_000_000_000_000
    os.utime(src / "a.csv", ns=(old, old))  # b.csv was written just now
    matched = spy_on_file_by_file_matching(monkeypatch)
    store = SnapshotStore.open(str(tmp_path / "store"))
    store.snapshot(src)
    store.snapshot(src)
    assert len(matched) == 2


def test_a_large_file_rewritten_after_hashing_is_not_stored_under_the_old_digest(tmp_path, monkeypatch):
    """The bytes copied into the store are hashed again, so a file changed in between stores nothing."""
    big = tmp_path / "src" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(b"new contents " * 200_000)  # above the size that is read whole
    stale = digest_bytes(b"old contents " * 200_000)
    monkeypatch.setattr(ingest_module, "digest_file", lambda path, size: stale)  # hashed before the rewrite
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
    now = now_ns()
    os.utime(src / "fresh.txt", ns=(now, now))
    store.snapshot(src)
    store.snapshot(src)
    assert len(hashed) == 2


def test_restore_writes_the_exact_tree_and_checks_each_file(tmp_path):
    store = SnapshotStore.open(str(tmp_path / "store"))
    record = store.snapshot(make_tree(tmp_path / "src", TREE))
    dest = tmp_path / "restored"
    store.restore(record.snapshot_id[:10], dest)
    assert read_tree(dest) == TREE
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


@pytest.mark.parametrize("hostile", ["../outside.txt", "{tmp}/absolute.txt", "ok/../../outside.txt", "a/./b"])
def test_restore_refuses_entries_escaping_the_destination(tmp_path, hostile):
    hostile = hostile.format(tmp=tmp_path)  # an absolute path in a directory that exists and is writable
    store_dir = tmp_path / "store"
    snapshot_id = forge_snapshot(store_dir, ["fine.txt", hostile])
    dest = tmp_path / "dest"
    with pytest.raises(SnapshotError, match="escape"):
        SnapshotStore.open(str(store_dir)).restore(snapshot_id, dest)
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "absolute.txt").exists()
    assert not dest.exists()  # all entries are checked before anything is written, the target included


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


def count_hashing(monkeypatch) -> list[str]:
    """Names of the files the store hashes whole: restored files it checks, objects it fetched."""
    hashed: list[str] = []
    real = restore_module.digest_file

    def recording(path, size):
        hashed.append(Path(path).name)
        return real(path, size)

    def recording_bytes(data):
        if not data.startswith(b'{"files":'):  # a packed object fetched, not a manifest read
            hashed.append("<packed object>")
        return real_bytes(data)

    real_bytes = restore_module.digest_bytes
    for module in (restore_module, restored_module):  # fetched objects, and restored files checked before reuse
        monkeypatch.setattr(module, "digest_file", recording)
    monkeypatch.setattr(restore_module, "digest_bytes", recording_bytes)
    return hashed


MATERIALIZE = (
    "import sys\n"
    "from airflow_mlops.snapshots import SnapshotStore\n"
    "budget = {'budget_bytes': int(sys.argv[4])} if len(sys.argv) > 4 else {}\n"
    "print(SnapshotStore.open(sys.argv[1]).materialize(sys.argv[2], sys.argv[3], **budget))"
)


def materialize_command(store_dir: Path, snapshot_id: str, cache: Path, *budget_bytes: int) -> list[str]:
    """``materialize`` in a child process for which file modes bind, as they do for a task's user."""
    args = [str(store_dir), snapshot_id, str(cache), *map(str, budget_bytes)]
    return [*without_mode_override(), sys.executable, "-c", MATERIALIZE, *args]


def materialize_unprivileged(store_dir: Path, snapshot_id: str, cache: Path, *budget_bytes: int) -> Path:
    command = materialize_command(store_dir, snapshot_id, cache, *budget_bytes)
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def make_writable(root: Path) -> None:
    """What a user does before editing a read-only restored folder."""
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


EDITED_B = b"x,y\n3,5\n" + TREE["nested/b.csv"][8:]  # one byte differs, same size


def replace_keeping_size_and_mtime(folder: Path) -> None:
    """An edit only the inode gives away: a new file, same size and mtime, renamed over the old one."""
    victim = folder / "nested/b.csv"
    forged = folder / "forged.part"
    forged.write_bytes(EDITED_B)
    os.utime(forged, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns))
    os.replace(forged, victim)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda folder: (folder / "nested/b.csv").write_bytes(EDITED_B), id="edited-same-size"),
        pytest.param(replace_keeping_size_and_mtime, id="replaced-same-size-and-mtime"),
        pytest.param(lambda folder: (folder / "nested/extra.csv").write_bytes(b"1"), id="extra-file"),
        pytest.param(lambda folder: (folder / "a.csv").unlink(), id="missing-file"),
    ],
)
def test_a_damaged_restored_folder_is_restored_again_before_reuse(tmp_path, damage):
    store_dir, cache = tmp_path / "store", tmp_path / "restored"
    store = SnapshotStore.open(str(store_dir))
    record = store.snapshot(make_tree(tmp_path / "src", TREE))
    folder = store.materialize(record.snapshot_id, cache)
    assert folder == cache / record.snapshot_id and read_tree(folder) == TREE
    make_writable(folder)
    damage(folder)

    # Unprivileged, as a task runs: the damaged folder, read-only parts and all, is replaced.
    assert materialize_unprivileged(store_dir, record.snapshot_id, cache) == folder
    assert read_tree(folder) == TREE
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [record.snapshot_id]  # nothing left aside


def test_tasks_meeting_a_damaged_restored_folder_at_once_all_get_it_intact(tmp_path):
    files = {**TREE, **{f"parts/{i:03d}.bin": os.urandom(100_000) for i in range(100)}}
    store_dir, cache = tmp_path / "store", tmp_path / "restored"
    store = SnapshotStore.open(str(store_dir))
    record = store.snapshot(make_tree(tmp_path / "src", files))
    folder = store.materialize(record.snapshot_id, cache)
    make_writable(folder)
    (folder / "nested/b.csv").write_bytes(EDITED_B)

    command = materialize_command(store_dir, record.snapshot_id, cache)
    tasks = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [task.communicate(timeout=120) for task in tasks]
    assert [task.returncode for task in tasks] == [0] * 4, [err for _out, err in outputs]
    assert {out.strip() for out, _err in outputs} == {str(folder)}
    assert read_tree(folder) == files
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [record.snapshot_id]  # no staging or damaged copy left


def test_restored_files_are_read_only(tmp_path):
    store = SnapshotStore.open(str(tmp_path / "store"))
    record = store.snapshot(make_tree(tmp_path / "src", TREE))
    folder = store.materialize(record.snapshot_id, tmp_path / "restored")
    modes = {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}
    assert modes == {".": 0o555, "a.csv": 0o444, "nested": 0o555, "nested/b.csv": 0o444,
                     "nested/deeper": 0o555, "nested/deeper/c.bin": 0o444}
    for code in ("open(sys.argv[1] + '/a.csv', 'ab')", "open(sys.argv[1] + '/new.csv', 'wb')"):
        result = subprocess.run([*without_mode_override(), sys.executable, "-c", f"import sys; {code}", str(folder)],
                                capture_output=True, text=True)
        assert result.returncode != 0 and "PermissionError" in result.stderr, code
    assert read_tree(folder) == TREE


def test_an_unchanged_restored_folder_is_reused_without_rehashing(tmp_path, monkeypatch):
    store_dir, cache = tmp_path / "store", tmp_path / "restored"
    record = SnapshotStore.open(str(store_dir)).snapshot(make_tree(tmp_path / "src", TREE))
    hashed = count_hashing(monkeypatch)
    folder = SnapshotStore.open(str(store_dir)).materialize(record.snapshot_id, cache)
    assert len(hashed) == 3  # each fetched object, checked once

    hashed.clear()
    assert SnapshotStore.open(str(store_dir)).materialize(record.snapshot_id, cache) == folder  # as a new process would
    assert hashed == []

    # A stat that changed with the bytes intact: that file alone is re-hashed, the folder kept.
    an_hour_ago = time.time_ns() - 3600 * 10**9
    inode = (folder / "nested/b.csv").stat().st_ino
    os.utime(folder / "a.csv", ns=(an_hour_ago, an_hour_ago))
    assert SnapshotStore.open(str(store_dir)).materialize(record.snapshot_id, cache) == folder
    assert hashed == ["a.csv"] and (folder / "nested/b.csv").stat().st_ino == inode
    hashed.clear()
    SnapshotStore.open(str(store_dir)).materialize(record.snapshot_id, cache)
    assert hashed == []  # its new stat was remembered


def restored_ids(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


def snapshots_of_100_kb(store: SnapshotStore, tmp_path: Path, count: int) -> list[str]:
    trees = (make_tree(tmp_path / f"v{i}", {"part.bin": os.urandom(100_000)}) for i in range(count))
    return [store.snapshot(tree).snapshot_id for tree in trees]


def test_least_recently_used_restored_folders_beyond_the_budget_are_evicted(tmp_path):
    """A folder's mtime is its last use; folders used within the idle time are kept even over budget."""
    store_dir, cache = tmp_path / "store", tmp_path / "restored"
    store = SnapshotStore.open(str(store_dir))
    ids = snapshots_of_100_kb(store, tmp_path, 4)
    budget = 250_000  # two folders and a half
    now = time.time()
    for snapshot_id, hours_ago in ((ids[0], 3), (ids[1], 2)):
        folder = store.materialize(snapshot_id, cache, budget_bytes=budget)
        os.utime(folder, (now - hours_ago * 3600,) * 2)
    store.materialize(ids[0], cache, budget_bytes=budget)  # used again: now the most recent
    leftover = make_tree(cache / f".{ids[3][:12]}.killed", {"half.bin": b"x"})  # a restore killed two days ago
    os.chmod(leftover / "half.bin", 0o444)
    os.chmod(leftover, 0o555)
    os.utime(leftover, (now - 48 * 3600,) * 2)

    # A third folder takes the cache over budget: the least recently used one goes, read-only as it is.
    materialize_unprivileged(store_dir, ids[2], cache, budget)
    assert restored_ids(cache) == sorted([ids[0], ids[2]])
    assert not [p for p in cache.iterdir() if p.is_dir() and p.name.startswith(".")]  # leftover and evicted, gone
    assert restored_module.StatCache(cache / restored_module.RESTORED_STAT_CACHE).load_under(cache / ids[1]) == {}

    # Over budget again, but every folder was used within the idle time: none is evicted.
    store.materialize(ids[3], cache, budget_bytes=budget)
    assert restored_ids(cache) == sorted([ids[0], ids[2], ids[3]])


def test_restored_task_inputs_take_their_budget_from_the_environment(tmp_path, airflow_home, monkeypatch):
    from airflow_mlops.errors import MlopsError
    from airflow_mlops.hooks.snapshot_store import restore_snapshot_ref

    store = SnapshotStore.open(str(tmp_path / "store"))
    first, second = snapshots_of_100_kb(store, tmp_path, 2)
    monkeypatch.setenv("AIRFLOW_MLOPS_RESTORED_GB", "0.00015")  # 150 kB: one folder
    _uri, _id, folder = restore_snapshot_ref(f"{store.uri}#{first}", None, None)
    assert folder == airflow_home / "airflow_mlops" / "restored" / first
    os.utime(folder, (time.time() - 2 * 3600,) * 2)
    restore_snapshot_ref(f"{store.uri}#{second}", None, None)
    assert restored_ids(folder.parent) == [second]

    monkeypatch.setenv("AIRFLOW_MLOPS_RESTORED_GB", "lots")
    with pytest.raises(MlopsError, match="AIRFLOW_MLOPS_RESTORED_GB='lots' is not a number of gigabytes"):
        restore_snapshot_ref(f"{store.uri}#{second}", None, None)


def test_verify_names_damaged_and_missing_objects_and_their_snapshots(tmp_path):
    store_dir = tmp_path / "store"
    store = SnapshotStore.open(str(store_dir))
    src = make_tree(tmp_path / "src", TREE)
    first = store.snapshot(src)
    (src / "a.csv").write_bytes(b"x,y\n9,9\n")
    second = store.snapshot(src)
    assert store.verify() == []

    shared = digest_bytes(TREE["nested/b.csv"])
    pack, offset, length = packed_at(store_dir, shared)
    flip_byte(pack, offset + length - 1)
    problems = store.verify()
    assert [(p.digest, p.kind, p.snapshots) for p in problems] == [
        (shared, "damaged", sorted([first.snapshot_id, second.snapshot_id]))
    ]
    with pytest.raises(SnapshotError, match="damaged"):
        store.restore(first.snapshot_id, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # intact files are not written either

    gone = digest_bytes(b"x,y\n9,9\n")
    pack, _offset, _length = packed_at(store_dir, gone)
    assert decode_index(pack.with_suffix(".idx").read_bytes()) == [(gone, 0, 8)]  # the second snapshot's one new object
    pack.unlink()
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
