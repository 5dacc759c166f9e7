"""Store format 2 stays readable and stable: a store written by an earlier release, committed as is.

``tests/data/store-format-2/`` was written by the code of commit a99811b (before the store was
split into modules) from ``RAW`` and ``DERIVED`` below: ``RAW`` snapshotted, then ``DERIVED`` with
``RAW``'s snapshot as its parent (its stat cache left out). Whatever the code's shape, the same bytes
must keep their snapshot ids and land on the objects already stored.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airflow_mlops.snapshots import SnapshotStore
from airflow_mlops.snapshots.packs import PACK_OBJECT_LIMIT
from tests.test_snapshot_store import make_tree, read_tree

pytestmark = pytest.mark.floor

FIXTURE = Path(__file__).parent / "data" / "store-format-2"

#: Small files (packed), an empty one, two with the same bytes, a non-ASCII name, and one of exactly the
#: pack limit (a loose object; repetitive, so git stores it in a few hundred bytes).
RAW = {
    "a.csv": b"id,value\n1,10\n2,20\n",
    "copy-of-a.csv": b"id,value\n1,10\n2,20\n",
    "empty.txt": b"",
    "nested/b.csv": b"id,value\n3,30\n",
    "nested/deeper/c.txt": b"deep\n",
    "donn\u00e9es/\u00e9t\u00e9.csv": "\u00e9t\u00e9,1\n".encode(),
    "big.bin": bytes(range(256)) * (PACK_OBJECT_LIMIT // 256),
}
#: Derived from RAW: one file kept, one new.
DERIVED = {"a.csv": RAW["a.csv"], "clean.csv": b"id,value\n1,10\n"}
RAW_ID = "1b72ed71d01628b116a11ac6e887f3cfc0b591d9fce5bb8228805fef3031bd70"
DERIVED_ID = "a4a6fcc5e0e7a7e80421fe56e901cb60a9dee5eba0a8dedc6b95f6038bb15cab"


def stored_files(store_dir: Path) -> dict[str, bytes]:
    """Every object, pack and pack index of a store, by path."""
    return {p.relative_to(store_dir).as_posix(): p.read_bytes()
            for folder in ("objects", "packs") for p in (store_dir / folder).rglob("*") if p.is_file()}


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A copy of the committed store: tests write into it (records, a stat cache)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "store"))


def test_the_committed_store_has_the_known_snapshots_and_lineage(store_dir):
    store = SnapshotStore.open(str(store_dir))
    assert store.snapshot_ids() == {RAW_ID, DERIVED_ID}
    assert store.records(DERIVED_ID)[0].parents == [RAW_ID]
    assert store.children(RAW_ID) == [DERIVED_ID]
    assert store.resolve(RAW_ID[:8]) == RAW_ID
    assert store.verify() == []


@pytest.mark.parametrize(("snapshot_id", "files"), [(RAW_ID, RAW), (DERIVED_ID, DERIVED)])
def test_the_committed_snapshots_restore_byte_identical(store_dir, tmp_path, snapshot_id, files):
    store = SnapshotStore.open(str(store_dir))
    assert store.verify(snapshot_id) == []
    store.restore(snapshot_id, tmp_path / "out")
    assert read_tree(tmp_path / "out") == files


@pytest.mark.parametrize(("snapshot_id", "files", "parents"), [(RAW_ID, RAW, []), (DERIVED_ID, DERIVED, [RAW_ID])])
def test_the_same_files_snapshot_again_to_the_same_id_writing_no_object(store_dir, tmp_path, snapshot_id, files, parents):
    before = stored_files(store_dir)
    record = SnapshotStore.open(str(store_dir)).snapshot(make_tree(tmp_path / "src", files), parents=parents)
    assert record.snapshot_id == snapshot_id
    assert stored_files(store_dir) == before
