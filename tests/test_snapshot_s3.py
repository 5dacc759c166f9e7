"""Snapshot store on S3: moto's server on 127.0.0.1, reached through the Amazon provider's S3Hook."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from airflow_mlops.errors import SnapshotError
from airflow_mlops.hooks.snapshot_store import SnapshotStoreHook
from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.snapshots.packs import decode_index
from tests.conftest import run_cli
from tests.test_snapshot_store import TREE, make_tree, read_tree


def test_s3_store_round_trip_through_an_airflow_connection(tmp_path, s3_store, airflow_home):
    src = make_tree(tmp_path / "src", TREE)
    args = ("--store", s3_store["uri"], "--aws-conn-id", s3_store["conn_id"])
    taken = run_cli("snapshot", str(src), *args, check=True)
    snapshot_id = taken.stdout.strip().splitlines()[-1]

    keys = [o["Key"] for o in s3_store["client"].list_objects_v2(Bucket=s3_store["bucket"])["Contents"]]
    assert "team/store/airflow-mlops-store.json" in keys
    assert f"team/store/objects/{snapshot_id[:2]}/{snapshot_id[2:]}" in keys
    assert any(key.startswith(f"team/store/records/{snapshot_id}/") for key in keys)
    # The stat cache of an S3 store is persistent, under AIRFLOW_HOME.
    assert list((airflow_home / "airflow_mlops" / "stat-cache").glob("*.sqlite"))

    run_cli("restore", snapshot_id[:8], str(tmp_path / "out"), *args, check=True)
    assert (tmp_path / "out" / "nested/deeper/c.bin").read_bytes() == TREE["nested/deeper/c.bin"]
    assert run_cli("verify", *args, check=True).returncode == 0
    rows = json.loads(run_cli("log", "--format", "json", *args, check=True).stdout)
    assert [row["uri"] for row in rows] == [f"{s3_store['uri']}#{snapshot_id}"]
    assert "testing-secret-key" not in taken.stdout + taken.stderr


def test_s3_store_dedups_and_verify_finds_damage(tmp_path, s3_store):
    hook = SnapshotStoreHook(s3_store["uri"], s3_store["conn_id"])
    store = hook.get_conn()
    src = make_tree(tmp_path / "src", TREE)
    first = store.snapshot(src)
    (src / "a.csv").write_bytes(b"changed\n")
    second = hook.get_conn().snapshot(src)
    assert first.snapshot_id != second.snapshot_id

    client, bucket = s3_store["client"], s3_store["bucket"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="team/store/")["Contents"]]
    assert len([key for key in keys if "/objects/" in key]) == 2  # the two manifests; file contents are packed
    indexes = {key: decode_index(client.get_object(Bucket=bucket, Key=key)["Body"].read())
               for key in keys if key.endswith(".idx")}
    assert sorted(len(rows) for rows in indexes.values()) == [1, 3]  # three first contents, then one new one
    assert len([key for key in keys if key.endswith(".pack")]) == 2

    b_csv = digest_bytes(TREE["nested/b.csv"])
    index, offset = next((key, offset) for key, rows in indexes.items() for digest, offset, _ in rows if digest == b_csv)
    pack = index.removesuffix(".idx") + ".pack"
    data = bytearray(client.get_object(Bucket=bucket, Key=pack)["Body"].read())
    data[offset + 3] ^= 0xFF
    client.put_object(Bucket=bucket, Key=pack, Body=bytes(data))
    problems = store.verify()
    assert [(p.digest, p.kind, p.snapshots) for p in problems] == [
        (b_csv, "damaged", sorted([first.snapshot_id, second.snapshot_id]))
    ]


def rewrite_tail_while_read(
    path: Path, upload_started: threading.Event, stop: threading.Event, positions: list[int]
) -> None:
    """Once the upload has started, rewrite ``path``'s last MiB as soon as this process is reading it.

    The read position of every descriptor this process has open on ``path`` is in /proc/self/fdinfo;
    the rewrite happens while one is strictly inside the file, that is, mid-read.
    """
    size = path.stat().st_size
    upload_started.wait()
    while not stop.is_set():
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") != str(path):
                    continue
                with open(f"/proc/self/fdinfo/{fd}") as info:
                    position = int(info.readline().split()[1])  # "pos:\t<bytes>"
            except (OSError, ValueError, IndexError):
                continue  # closed meanwhile
            if 0 < position < size:
                with open(path, "r+b") as handle:
                    handle.seek(-(1 << 20), os.SEEK_END)
                    handle.write(b"\xff" * (1 << 20))
                positions.append(position)
                return


def test_a_large_file_rewritten_while_it_is_uploaded_stores_nothing(tmp_path, s3_store, monkeypatch):
    """A real race on S3: another thread rewrites the file while the store reads it for the upload.

    The backend's ``put_file`` is wrapped only to say when the upload begins (hashing, before it,
    reads the file too); the copy, its re-hash and the S3 client run unchanged.
    """
    big = tmp_path / "src" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(bytes(range(256)) * (96 << 12))  # 96 MiB: six of the copy's reads
    store = SnapshotStoreHook(s3_store["uri"], s3_store["conn_id"]).get_conn()
    upload_started, stop, positions = threading.Event(), threading.Event(), []
    put_file = store.backend.put_file

    def announcing_put_file(key, source, digest):
        upload_started.set()
        put_file(key, source, digest)

    monkeypatch.setattr(store.backend, "put_file", announcing_put_file)
    writer = threading.Thread(target=rewrite_tail_while_read, args=(big, upload_started, stop, positions))
    writer.start()
    try:
        with pytest.raises(SnapshotError, match="big.bin changed while it was being snapshotted"):
            store.snapshot(big.parent)
    finally:
        upload_started.set()
        stop.set()
        writer.join()

    assert positions, "the file was not rewritten while the upload read it"
    assert big.read_bytes()[-1:] == b"\xff"
    listing = s3_store["client"].list_objects_v2(Bucket=s3_store["bucket"], Prefix="team/store/")
    keys = [item["Key"] for item in listing["Contents"]]
    assert keys == ["team/store/airflow-mlops-store.json"]  # no object (the copy failed its digest), no record
    assert store.records() == [] and store.verify() == []


def test_missing_bucket_is_a_one_line_error(s3_store):
    result = run_cli("log", "--store", "s3://no-such-bucket-here/x", "--aws-conn-id", s3_store["conn_id"])
    assert result.returncode == 2
    assert "airflow-mlops: error: store s3://no-such-bucket-here/x: bucket 'no-such-bucket-here'" in result.stderr


def test_the_operator_snapshots_into_s3_and_announces_the_version(tmp_path, s3_store):
    from tests.task_process import run_attempt

    files = {**TREE, "big/part-0.bin": bytes(range(256)) * 8192}  # 2 MiB: hashed, then copied and re-hashed
    src = make_tree(tmp_path / "src", files)
    outcome = run_attempt({
        "dag_id": "ingest", "run_id": "scheduled__2026-01-01", "task_id": "snapshot_raw", "try_number": 2,
        "operator_class": "DataSnapshotOperator",
        "operator": {"source": str(src), "store": s3_store["uri"], "aws_conn_id": s3_store["conn_id"]},
    })

    result = outcome["result"]
    assert result["files"] == 4 and result["bytes"] == sum(len(data) for data in files.values())
    assert result["uri"] == f"{s3_store['uri']}#{result['snapshot_id']}"
    assert outcome["asset_events"] == {"x-airflow-mlops-snapshot://ingest/snapshot_raw": result}
    store = SnapshotStoreHook(s3_store["uri"], s3_store["conn_id"]).get_conn()
    (record,) = store.records()
    assert record.airflow["dag_id"] == "ingest" and record.airflow["try_number"] == 2
    assert store.verify() == []
    store.restore(result["snapshot_id"], tmp_path / "out")
    assert (tmp_path / "out" / "big" / "part-0.bin").read_bytes() == files["big/part-0.bin"]


def count_requests(store) -> list[str]:
    """The HTTP methods of the requests the store's S3 client sends, one per request."""
    sent: list[str] = []
    store.backend.client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
    return sent


def test_small_files_on_s3_are_packed_restored_and_collected_in_few_requests(tmp_path, s3_store, airflow_home):
    files = {f"part-{i // 100}/f{i:03d}.csv": f"row {i}\n".encode() * 40 for i in range(300)}
    src = make_tree(tmp_path / "src", files)
    store = SnapshotStoreHook(s3_store["uri"], s3_store["conn_id"]).get_conn()
    sent = count_requests(store)
    snapshot_id = store.snapshot(src).snapshot_id
    assert 0 < len(sent) * 10 <= len(files), sent  # one pack and its index, not a PUT and a HEAD per file
    assert list((airflow_home / "airflow_mlops" / "pack-index").rglob("*.idx"))  # the index is cached locally

    again = SnapshotStoreHook(s3_store["uri"], s3_store["conn_id"]).get_conn()
    sent = count_requests(again)
    assert again.snapshot(src).snapshot_id == snapshot_id
    assert len(sent) <= 12 and "PUT" in sent, sent  # a no-op: lock, listings, manifest check, record
    sent.clear()
    again.restore(snapshot_id, tmp_path / "out")
    assert read_tree(tmp_path / "out") == files and len(sent) <= 6, sent

    again.forget([snapshot_id], reason="test")
    sent.clear()
    report = again.gc(grace_seconds=0)
    assert (report.deleted_snapshots, report.deleted_objects, report.deleted_packs) == ([snapshot_id], 301, 1)
    assert sent.count("POST") <= 8  # batched deletes
    listing = s3_store["client"].list_objects_v2(Bucket=s3_store["bucket"], Prefix="team/store/")["Contents"]
    assert sorted(item["Key"] for item in listing) == ["team/store/airflow-mlops-store.json", "team/store/index/complete.json"]
