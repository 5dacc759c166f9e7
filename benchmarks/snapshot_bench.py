"""Snapshot speed, side by side with what a user would hand-write for the same work, in one run.

Trees (distinct contents, written a moment before): 10,000 files of 8 KB, 100,000 of 1 KB, and
1 GB in 1,000 files. For each, locally: cold snapshot against ``sha256sum`` + ``cp -r`` (target
<= 1.0 for small files), a no-op re-snapshot against a bare stat walk ``find -printf '%s %T@'``
(target <= 3x for 100,000 files) and one with one file touched (matched file by file), restore
against ``cp -r`` (target <= 1.0 for small files), and verify against ``sha256sum`` of the files;
``dvc add`` where dvc is installed. On moto's S3 server (``--s3-trees``): the same steps against a
hand-written boto3 script (hash and PUT each file on 16 threads; GET each file to restore or
verify), with the requests each side sends counted through botocore's event hooks (target: at
least 10x fewer requests than files for a small-file snapshot).

Both sides read from the page cache and dirty data is synced before every timed step. The two
sides of a step run in turns, round by round, and times are the median of ``--rounds``; the store
side runs in this process (no interpreter start-up).

    python benchmarks/snapshot_bench.py [--trees small8k,small1k,large] [--s3-trees small8k] [--rounds 1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from airflow_mlops.snapshots import SnapshotStore

TREES = {"small8k": (10_000, 8 * 1024), "small1k": (100_000, 1024), "large": (1_000, 1_000_000)}
ROWS: list[tuple[str, ...]] = []


def build_tree(root: Path, files: int, file_size: int) -> Path:
    root.mkdir(parents=True)
    block = os.urandom(file_size)
    for i in range(files):
        sub = root / f"part-{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir()
        # Distinct contents per file: a counter prefix defeats dedup without regenerating randomness.
        (sub / f"file-{i:06d}.bin").write_bytes(i.to_bytes(8, "little") + block[8:])
    old = time.time_ns() - 10**9
    for path in root.rglob("*.bin"):
        os.utime(path, ns=(old, old))  # as data that landed a moment before the snapshot task ran
    return root


def timed(action: Callable[[], object], reset: Callable[[], object] = lambda: None) -> float:
    """Seconds of one run of ``action``, after ``reset`` (untimed) and a sync of dirty data."""
    reset()
    os.sync()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def side_by_side(ours: Callable[[], object], baseline: Callable[[], object], rounds: int,
                 reset_ours: Callable[[], object] = lambda: None,
                 reset_baseline: Callable[[], object] = lambda: None) -> tuple[float, float]:
    """Median seconds of ``ours`` and of ``baseline``, run in turns (which goes first swaps each round), so
    both meet the disk in the same state: its speed here drifts several-fold between minutes."""
    ours_times: list[float] = []
    baseline_times: list[float] = []
    for round_number in range(rounds):
        turns = [(baseline, reset_baseline, baseline_times), (ours, reset_ours, ours_times)]
        for action, reset, times in turns if round_number % 2 == 0 else turns[::-1]:
            times.append(timed(action, reset))
    return statistics.median(ours_times), statistics.median(baseline_times)


def sh(command: str) -> None:
    subprocess.run(command, shell=True, check=True)


def stat_walk(tree: Path) -> None:
    """The no-op baseline: a bare stat walk of the tree in C."""
    sh(f"find {tree} -printf '%s %T@\\n' > /dev/null")


def row(tree: str, step: str, ours: float, baseline: float, baseline_name: str, target: str = "", requests: str = "") -> None:
    ROWS.append((tree, step, f"{ours:.3f}", f"{baseline:.3f}", baseline_name, f"{ours / baseline:.2f}", target, requests))


def bench_local(label: str, tree: Path, work: Path, rounds: int) -> None:
    store_dir, copy, out = work / f"store-{label}", work / "copy", work / "out"
    small = label.startswith("small")

    def fresh_store() -> None:
        shutil.rmtree(store_dir, ignore_errors=True)

    holder: dict[str, str] = {}
    cold, base = side_by_side(
        lambda: holder.update(id=SnapshotStore.open(str(store_dir)).snapshot(tree).snapshot_id),
        lambda: sh(f"find {tree} -type f -print0 | xargs -0 sha256sum > /dev/null && cp -r {tree} {copy}"),
        rounds, fresh_store, lambda: shutil.rmtree(copy, ignore_errors=True))
    row(label, "cold snapshot", cold, base, "sha256sum + cp -r", "<= 1.0" if small else "")

    def snapshot_again() -> None:
        SnapshotStore.open(str(store_dir)).snapshot(tree)

    noop, walk = side_by_side(snapshot_again, lambda: stat_walk(tree), rounds)
    row(label, "no-op re-snapshot", noop, walk, "find -printf stat walk", "<= 3.0" if label == "small1k" else "")
    touched = next(tree.rglob("*.bin"))
    touch = iter(range(1, rounds + 1))  # a new mtime each round, same bytes: matched file by file, one file re-hashed
    one_changed, walk = side_by_side(snapshot_again, lambda: stat_walk(tree), rounds,
                                     lambda: os.utime(touched, ns=(touched.stat().st_mtime_ns + next(touch),) * 2))
    row(label, "re-snapshot, one file touched", one_changed, walk, "find -printf stat walk")

    restore, cp = side_by_side(lambda: SnapshotStore.open(str(store_dir)).restore(holder["id"], out),
                               lambda: sh(f"cp -r {tree} {copy}"), rounds,
                               lambda: shutil.rmtree(out, ignore_errors=True), lambda: shutil.rmtree(copy, ignore_errors=True))
    row(label, "restore", restore, cp, "cp -r", "<= 1.0" if small else "")

    verify, sha = side_by_side(lambda: SnapshotStore.open(str(store_dir)).verify(holder["id"]),
                               lambda: sh(f"find {copy} -type f -print0 | xargs -0 sha256sum > /dev/null"), rounds)
    row(label, "verify", verify, sha, "sha256sum of the files")

    if shutil.which("dvc"):
        dvc = timed(lambda: dvc_add(tree, work))
        row(label, "cold snapshot", cold, dvc, "dvc add")
    for path in (store_dir, copy, out):
        shutil.rmtree(path, ignore_errors=True)


def dvc_add(tree: Path, work: Path) -> None:
    repo = work / "dvc-repo"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
    shutil.copytree(tree, repo / "data", copy_function=os.link)
    subprocess.run(["dvc", "add", "-q", "data"], cwd=repo, check=True)


class Counter:
    """Requests a boto3 client sends, through botocore's ``before-send`` event."""

    def __init__(self, client) -> None:
        self.count = 0
        client.meta.events.register("before-send.s3", self._seen)

    def _seen(self, **_kwargs) -> None:
        self.count += 1

    def during(self, action: Callable[[], object]) -> int:
        before = self.count
        action()
        return self.count - before


def bench_s3(label: str, tree: Path, work: Path, endpoint: str, rounds: int) -> None:
    """The hand-written baseline is what a user would script with boto3: hash and PUT (GET) each file on 16 threads."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                          aws_secret_access_key="bench", config=Config(max_pool_connections=32))
    counter = Counter(client)
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    bucket = f"bench-{label}-{os.getpid()}"
    client.create_bucket(Bucket=bucket)

    def upload(path: Path) -> None:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        client.put_object(Bucket=bucket, Key=f"copy/{path.relative_to(tree)}", Body=data)

    def download(path: Path, to: Path | None) -> None:
        data = client.get_object(Bucket=bucket, Key=f"copy/{path.relative_to(tree)}")["Body"].read()
        hashlib.sha256(data).hexdigest()
        if to is not None:
            target = to / path.relative_to(tree)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def each(function, *args) -> None:
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda path: function(path, *args), files))

    out = work / "out-s3"
    uri, holder = f"s3://{bucket}/store", {}
    base_requests = counter.during(lambda: each(upload))
    ours_requests = counter.during(lambda: holder.update(id=SnapshotStore.open(uri, client).snapshot(tree).snapshot_id))
    cold, base = side_by_side(lambda: SnapshotStore.open(f"{uri}-{time.time_ns()}", client).snapshot(tree),
                              lambda: each(upload), rounds)
    row(f"{label} S3", "cold snapshot", cold, base, "sha256 + PUT each file",
        "requests >= 10x fewer than files", f"{ours_requests} vs {base_requests} for {len(files)} files")

    noop_requests = counter.during(lambda: SnapshotStore.open(uri, client).snapshot(tree))
    noop, walk = side_by_side(lambda: SnapshotStore.open(uri, client).snapshot(tree),
                              lambda: stat_walk(tree), rounds)
    row(f"{label} S3", "no-op re-snapshot", noop, walk, "find -printf stat walk", "", f"{noop_requests}")

    restore_requests = counter.during(lambda: SnapshotStore.open(uri, client).restore(holder["id"], out))
    def clear_out() -> None:
        shutil.rmtree(out, ignore_errors=True)

    restore, get = side_by_side(lambda: SnapshotStore.open(uri, client).restore(holder["id"], out),
                                lambda: each(download, out), rounds, clear_out, clear_out)
    row(f"{label} S3", "restore", restore, get, "GET each file + sha256", "", f"{restore_requests} vs {len(files)}")

    verify, check = side_by_side(lambda: SnapshotStore.open(uri, client).verify(holder["id"]),
                                 lambda: each(download, None), rounds)
    row(f"{label} S3", "verify", verify, check, "GET each file + sha256")
    shutil.rmtree(out, ignore_errors=True)


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("moto's S3 server did not start")


def print_table() -> None:
    header = ("tree", "step", "airflow-mlops s", "baseline s", "baseline", "ratio", "target", "requests")
    widths = [max(len(str(r[i])) for r in [header, *ROWS]) for i in range(len(header))]
    for line in [header, tuple("-" * w for w in widths), *ROWS]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default="small8k,small1k,large", help=f"local trees, among {', '.join(TREES)}")
    parser.add_argument("--s3-trees", default="small8k", help="trees to run on moto's S3 server too ('' for none)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="where trees are built (default: a temp dir)")
    args = parser.parse_args()
    local, s3 = [t for t in args.trees.split(",") if t], [t for t in args.s3_trees.split(",") if t]
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="snapshot-bench-") as work_dir:
        work = Path(work_dir)
        os.environ["AIRFLOW_HOME"] = str(work / "airflow-home")  # S3 stores' stat cache and pack index
        server, endpoint = start_moto() if s3 else (None, "")
        try:
            for label in dict.fromkeys(local + s3):
                files, size = TREES[label]
                tree = build_tree(work / f"tree-{label}", files, size)
                if label in local:
                    bench_local(label, tree, work, args.rounds)
                if label in s3:
                    bench_s3(label, tree, work, endpoint, args.rounds)
                shutil.rmtree(tree)
                print_table()
        finally:
            if server:
                server.kill()


if __name__ == "__main__":
    main()
