"""The ``airflow-mlops`` snapshot verbs as users run them: exit codes, output, crashes, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from airflow_mlops.snapshots import SnapshotStore
from airflow_mlops.snapshots.hashing import digest_bytes
from tests.conftest import VENV_BIN, run_cli
from tests.test_snapshot_store import TREE, flip_byte, make_tree, packed_at, read_tree, without_mode_override


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def test_snapshot_prints_the_id_last_and_round_trips(tmp_path):
    src = make_tree(tmp_path / "src", TREE)
    store = str(tmp_path / "store")
    taken = run_cli("snapshot", str(src), "--store", store, check=True)
    snapshot_id = taken.stdout.strip().splitlines()[-1]
    assert len(snapshot_id) == 64

    assert run_cli("verify", "--store", store, snapshot_id, check=True).returncode == 0
    run_cli("restore", snapshot_id, str(tmp_path / "out"), "--store", store, check=True)
    assert (tmp_path / "out" / "nested/b.csv").read_bytes() == TREE["nested/b.csv"]

    rows = json.loads(run_cli("log", "--store", store, "--format", "json", check=True).stdout)
    assert [row["snapshot_id"] for row in rows] == [snapshot_id]
    assert rows[0]["files"] == 3 and rows[0]["source"] == str(src)
    table = run_cli("log", "--store", store, check=True).stdout
    assert snapshot_id[:12] in table and "3 files" in table


def test_default_store_lives_under_airflow_home(tmp_path, airflow_home):
    src = make_tree(tmp_path / "src", TREE)
    snapshot_id = run_cli("snapshot", str(src), check=True).stdout.split()[-1]
    assert (airflow_home / "airflow_mlops" / "snapshots" / "records" / snapshot_id).is_dir()


def test_verify_exits_non_zero_naming_the_damaged_object_and_its_snapshots(tmp_path):
    src = make_tree(tmp_path / "src", TREE)
    store_dir = tmp_path / "store"
    snapshot_id = run_cli("snapshot", str(src), "--store", str(store_dir), check=True).stdout.split()[-1]
    digest = digest_bytes(TREE["nested/b.csv"])
    pack, offset, _ = packed_at(store_dir, digest)
    flip_byte(pack, offset)  # inside the one object: the pack's other objects stay intact
    result = run_cli("verify", "--store", str(store_dir))
    assert result.returncode == 1
    assert f"damaged object {digest} (used by {snapshot_id})" in result.stderr


def unreadable_for_cli(path: Path) -> list[str]:
    """Make ``path`` unreadable and return a command prefix under which that holds, even for root."""
    os.chmod(path, 0)
    return without_mode_override()


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "empty").mkdir()
    unreadable_tree = make_tree(tmp_path / "unreadable", {"ok.csv": b"1", "secret.csv": b"2"})
    unprivileged = unreadable_for_cli(unreadable_tree / "secret.csv")
    store_for_unreadable = tmp_path / "store-for-unreadable"
    not_a_store = make_tree(tmp_path / "documents", {"cv.pdf": b"%PDF"})

    cases = [
        (("snapshot", str(tmp_path / "missing"), "--store", str(store)), "does not exist", []),
        (("snapshot", str(tmp_path / "empty"), "--store", str(store)), "no files", []),
        (("snapshot", str(unreadable_tree), "--store", str(store_for_unreadable)), "secret.csv", unprivileged),
        (("snapshot", str(tmp_path / "empty"), "--store", str(not_a_store)), "not a snapshot store", []),
        (("restore", "0123456789ab", str(tmp_path / "out"), "--store", str(store)), "no snapshot store", []),
        (("verify", "--store", str(tmp_path / "src" / "a.csv")), "is a file", []),
    ]
    make_tree(tmp_path / "src", TREE)
    for args, message, prefix in cases:
        result = subprocess.run([*prefix, str(VENV_BIN / "airflow-mlops"), *args], capture_output=True, text=True)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
        assert result.stdout == ""
    assert not store.exists() and not store_for_unreadable.exists()
    assert listing(not_a_store) == ["cv.pdf"]

    real_id = run_cli("snapshot", str(tmp_path / "src"), "--store", str(store), check=True).stdout.split()[-1]
    unknown = run_cli("restore", "0123456789ab", str(tmp_path / "out"), "--store", str(store))
    assert unknown.returncode == 2 and "unknown snapshot id 0123456789ab" in unknown.stderr
    assert not (tmp_path / "out").exists()
    assert run_cli("restore", real_id, str(tmp_path / "src"), "--store", str(store)).returncode == 2


def test_a_snapshot_killed_midway_leaves_no_record_and_no_corrupt_object(tmp_path):
    src = make_tree(tmp_path / "big", {f"part-{i:04d}.bin": os.urandom(256 * 1024) for i in range(600)})
    store_dir = tmp_path / "store"
    process = subprocess.Popen([str(VENV_BIN / "airflow-mlops"), "snapshot", str(src), "--store", str(store_dir)])
    objects = store_dir / "objects"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if objects.is_dir() and sum(1 for p in objects.rglob("*") if p.is_file()) >= 20:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the snapshot finished before it could be killed"

    written = [p for p in objects.rglob("*") if p.is_file()]
    assert 20 <= len(written) < 600
    store = SnapshotStore.open(str(store_dir))
    assert not (store_dir / "records").exists() or listing(store_dir / "records") == []
    assert store.verify() == []  # every object present is whole and matches its name

    snapshot_id = run_cli("snapshot", str(src), "--store", str(store_dir), check=True).stdout.split()[-1]
    assert store.verify() == [] and [r.snapshot_id for r in store.records()] == [snapshot_id]


def test_two_processes_snapshotting_into_one_store_both_succeed(tmp_path):
    shared = {f"shared-{i}.bin": os.urandom(64 * 1024) for i in range(200)}
    tree_a = make_tree(tmp_path / "a", {**shared, "only-a.txt": b"a"})
    tree_b = make_tree(tmp_path / "b", {**shared, "only-b.txt": b"b"})
    store_dir = str(tmp_path / "store")
    processes = [
        subprocess.Popen(
            [str(VENV_BIN / "airflow-mlops"), "snapshot", str(tree), "--store", store_dir],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tree in (tree_a, tree_b, tree_a)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [err for _, err in outputs]
    ids = [out.split()[-1] for out, _ in outputs]
    assert ids[0] == ids[2] != ids[1]
    store = SnapshotStore.open(store_dir)
    assert len(store.records()) == 3 and store.verify() == []


def test_without_store_every_verb_uses_the_default_its_help_names(tmp_path, airflow_home):
    """``$AIRFLOW_MLOPS_STORE`` is the store each verb documents as its default, and the one it uses."""
    store_dir = tmp_path / "team-store"
    env = {**os.environ, "AIRFLOW_MLOPS_STORE": str(store_dir), "COLUMNS": "1000"}  # COLUMNS: help on one line
    for verb in ("snapshot", "restore", "verify", "log"):
        assert f"(default: {store_dir})" in run_cli(verb, "--help", env=env, check=True).stdout, verb

    src = make_tree(tmp_path / "src", TREE)
    snapshot_id = run_cli("snapshot", str(src), env=env, check=True).stdout.split()[-1]
    (record,) = SnapshotStore.open(str(store_dir)).records()  # read back from that location
    assert (record.snapshot_id, record.source, record.store) == (snapshot_id, str(src), str(store_dir))
    assert not (airflow_home / "airflow_mlops" / "snapshots").exists()  # not the AIRFLOW_HOME default

    rows = json.loads(run_cli("log", "--format", "json", env=env, check=True).stdout)
    assert [row["uri"] for row in rows] == [f"{store_dir}#{snapshot_id}"]
    assert "verify: all objects intact" in run_cli("verify", snapshot_id[:8], env=env, check=True).stdout
    run_cli("restore", snapshot_id[:8], str(tmp_path / "out"), env=env, check=True)
    assert read_tree(tmp_path / "out") == TREE
