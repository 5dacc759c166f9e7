"""Snapshot speed against the baseline users already have: ``sha256sum`` + ``cp -r`` of the same tree.

For each tree (default: 1 GB in 1,000 files; 10,000 small files) it prints, in one run:
cold snapshot time, the baseline time, their ratio (target <= 1.0), the no-op re-snapshot as a
fraction of cold (target < 5%), store growth after changing one file, and ``dvc add`` where dvc is
installed. Both sides read from the page cache (the tree was just written), dirty data is synced
before every timed step, and baseline and snapshot alternate over ``--rounds`` rounds (medians
reported), so deleting one side's output does not slow the other's file creation.

    python benchmarks/snapshot_bench.py [--large-mb 1000] [--large-files 1000] [--small-files 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from airflow_mlops.snapshots import SnapshotStore


def build_tree(root: Path, files: int, file_size: int) -> Path:
    root.mkdir(parents=True)
    block = os.urandom(file_size)
    for i in range(files):
        sub = root / f"part-{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        # Distinct contents per file: a counter prefix defeats dedup without regenerating randomness.
        (sub / f"file-{i:06d}.bin").write_bytes(i.to_bytes(8, "little") + block[8:])
    old = time.time_ns() - 10**9
    for path in root.rglob("*.bin"):
        os.utime(path, ns=(old, old))  # as data that landed a moment before the snapshot task ran
    return root


def timed(action) -> float:
    os.sync()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def baseline(tree: Path, work: Path) -> float:
    def run() -> None:
        subprocess.run(
            f"find {tree} -type f -print0 | xargs -0 sha256sum > /dev/null", shell=True, check=True
        )
        subprocess.run(["cp", "-r", str(tree), str(work / "copy")], check=True)

    elapsed = timed(run)
    shutil.rmtree(work / "copy")
    return elapsed


def cold_snapshot(tree: Path, store_dir: Path) -> float:
    shutil.rmtree(store_dir, ignore_errors=True)
    return timed(lambda: SnapshotStore.open(str(store_dir)).snapshot(tree))


def store_size(store_dir: Path) -> int:
    return sum(p.stat().st_size for p in (store_dir / "objects").rglob("*") if p.is_file())


def dvc_add(tree: Path, work: Path) -> float | None:
    if shutil.which("dvc") is None:
        return None
    repo = work / "dvc-repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
    shutil.copytree(tree, repo / "data", copy_function=os.link)
    elapsed = timed(lambda: subprocess.run(["dvc", "add", "-q", "data"], cwd=repo, check=True))
    shutil.rmtree(repo)
    return elapsed


def bench(label: str, files: int, file_size: int, work: Path, rounds: int) -> None:
    tree = build_tree(work / f"tree-{label}", files, file_size)
    store_dir = work / f"store-{label}"
    bases, colds = [], []
    for _ in range(rounds):
        bases.append(baseline(tree, work))
        colds.append(cold_snapshot(tree, store_dir))
    base, cold = statistics.median(bases), statistics.median(colds)
    noop = statistics.median(timed(lambda: SnapshotStore.open(str(store_dir)).snapshot(tree)) for _ in range(rounds))
    before = store_size(store_dir)
    changed = next(tree.rglob("*.bin"))
    changed.write_bytes(os.urandom(file_size))
    SnapshotStore.open(str(store_dir)).snapshot(tree)
    growth = store_size(store_dir) - before
    dvc = dvc_add(tree, work)

    total_mb = files * file_size / 1e6
    print(f"\n== {label}: {files} files, {total_mb:,.0f} MB")
    print(f"cold snapshot              {cold:8.3f} s  ({total_mb / cold:,.0f} MB/s)  rounds: {_fmt(colds)}")
    print(f"sha256sum + cp -r          {base:8.3f} s                rounds: {_fmt(bases)}")
    print(f"ratio cold / baseline      {cold / base:8.3f}   (target <= 1.0)")
    print(f"no-op re-snapshot          {noop:8.3f} s  = {100 * noop / cold:.2f}% of cold (target < 5%)")
    print(f"store growth, 1 file edit  {growth:8,d} B  (file size {file_size:,d} B)")
    print(f"dvc add                    {dvc:8.3f} s  ratio cold/dvc {cold / dvc:.3f}" if dvc else "dvc add                    (dvc not installed)")
    shutil.rmtree(tree)
    shutil.rmtree(store_dir)


def _fmt(values: list[float]) -> str:
    return " ".join(f"{value:.3f}" for value in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mb", type=int, default=1000)
    parser.add_argument("--large-files", type=int, default=1000)
    parser.add_argument("--small-files", type=int, default=10_000)
    parser.add_argument("--small-size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where trees are built (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="snapshot-bench-") as work:
        bench("large", args.large_files, args.large_mb * 1_000_000 // args.large_files, Path(work), args.rounds)
        bench("small", args.small_files, args.small_size, Path(work), args.rounds)


if __name__ == "__main__":
    main()
