"""The folder of restored snapshots that tasks read (``$AIRFLOW_HOME/airflow_mlops/restored``).

Each snapshot is restored once into ``<root>/<id>`` and reused, but never trusted blindly: before
each reuse the folder is checked against the manifest (exactly its files, their sizes, and their
digests, taken from a stat cache in the root while a file's size, mtime and inode are the ones
recorded, re-hashed otherwise); an edited, extra or missing file gets it restored again. Restores go
into a staging directory renamed into place, so a directory at the final path is always complete.
Files are 0444 and directories 0555, so an accidental edit fails.

A folder's mtime is its last use. After a restore, the least recently used folders are deleted while
all of them together exceed the budget, except those used within ``min_idle_seconds`` (a task may still
be reading them); hidden folders a killed process left go after a day.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from airflow_mlops.config import RESTORED_BUDGET_BYTES
from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend
from airflow_mlops.snapshots.hashing import digest_file
from airflow_mlops.snapshots.packs import PackIndex
from airflow_mlops.snapshots.records import ManifestEntry, read_manifest
from airflow_mlops.snapshots.restore import restore_snapshot
from airflow_mlops.snapshots.scan import scan_tree
from airflow_mlops.snapshots.statcache import RACY_WINDOW_NS, FileStat, StatCache, cached_digests, now_ns
from airflow_mlops.utils.file_lock import exclusive_file_lock

#: A restored snapshot used this recently is never evicted: a task may still be reading it.
RESTORED_MIN_IDLE_SECONDS = 3600
#: The stat cache of restored files, in the folder of restored snapshots.
RESTORED_STAT_CACHE = ".stat.sqlite"
#: Hidden folders (staging, set aside) older than this were left by a killed process.
_LEFTOVER_AGE_SECONDS = 24 * 3600


def materialize(
    backend: Backend,
    packs: PackIndex,
    full_id: str,
    cache_root: str | os.PathLike,
    *,
    budget_bytes: int = RESTORED_BUDGET_BYTES,
    min_idle_seconds: float = RESTORED_MIN_IDLE_SECONDS,
) -> Path:
    """``cache_root/<full_id>``: the snapshot's files, restored from the store on ``backend`` (whose pack index
    is ``packs``) unless an intact copy is there."""
    entries = read_manifest(backend, full_id)
    cache_root = Path(cache_root).expanduser().absolute()
    target = cache_root / full_id
    stat_cache = StatCache(cache_root / RESTORED_STAT_CACHE)
    if _mark_used(target) and _restored_intact(target, entries, stat_cache):
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{full_id[:12]}.", dir=cache_root))
    damaged = None
    try:
        restore_snapshot(backend, packs, full_id, entries, staging, force=True)
        sealed_at = now_ns()
        _seal(staging, mtime_ns=sealed_at - RACY_WINDOW_NS - 1)
        digests = {entry.path: entry.digest for entry in entries}
        stats = {f"{target}/{rel}": (stat, digests[rel]) for rel, _path, stat in scan_tree(staging)}
        with exclusive_file_lock(cache_root / ".lock"):  # a concurrent restore may have put it in place meanwhile
            if not (target.is_dir() and _restored_intact(target, entries, stat_cache)):
                damaged = _set_aside(target)
                os.rename(staging, target)
                stat_cache.forget_under(target)
                stat_cache.store(stats, sealed_at)
            _mark_used(target)
    finally:
        _delete_tree(staging)
        _delete_tree(damaged)
    _evict(cache_root, target, budget_bytes, min_idle_seconds, stat_cache)
    return target


def _mark_used(folder: Path) -> bool:
    """Stamp ``folder``'s mtime with now, its last use; False if there is no such folder."""
    try:
        os.utime(folder)
    except FileNotFoundError:
        return False
    return True


def _restored_intact(folder: Path, entries: list[ManifestEntry], stat_cache: StatCache) -> bool:
    """Whether ``folder`` holds exactly the snapshot's files with their bytes.

    A file whose stat is the one recorded with its digest is trusted; any other is re-hashed, and
    its new stat remembered when the digest matches. So an intact folder costs a stat per file.
    """
    checked_at = now_ns()
    expected = {entry.path: entry for entry in entries}
    rehashed: dict[str, tuple[FileStat, str]] = {}
    try:
        files = scan_tree(folder)
        if [rel for rel, _path, _stat in files] != sorted(expected):
            return False
        for (rel, path, stat), digest in zip(files, cached_digests(stat_cache.load_under(folder), files)):
            entry = expected[rel]
            if stat.size != entry.size:
                return False
            if digest != entry.digest:
                if digest_file(path, stat.size) != entry.digest:
                    return False
                rehashed[path] = (stat, entry.digest)
    except (SnapshotError, OSError):  # not a folder, unreadable, or changing under us: restore it
        return False
    stat_cache.store(rehashed, checked_at)
    return True


def _seal(folder: Path, mtime_ns: int) -> None:
    """Make a restored tree read-only (files 0444, directories 0555) and stamp its files' mtime.

    The stamp is older than the racy window, so the stat cache can vouch for the files at once:
    any later write gives a newer mtime.
    """
    for directory, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(directory, name)
            os.chmod(path, 0o444)
            os.utime(path, ns=(mtime_ns, mtime_ns))
        os.chmod(directory, 0o555)


def _set_aside(folder: Path) -> Path | None:
    """Rename ``folder`` to a hidden name beside it, to delete at leisure; None if it is not there."""
    aside = folder.with_name(f".{folder.name[:12]}.{uuid.uuid4().hex}.old")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return None
    return aside


def _delete_tree(root: Path | None) -> None:
    """Delete a restored tree, read-only as it is: its directories are made writable first."""
    if root is None:
        return
    for directory, _dirs, _files in os.walk(root):
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)
    shutil.rmtree(root, ignore_errors=True)


def _tree_size(root: str) -> int:
    """Bytes in the files under ``root``."""
    size = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                size += os.lstat(os.path.join(directory, name)).st_size
    return size


def _evict(cache_root: Path, keep: Path, budget_bytes: int, min_idle_seconds: float, stat_cache: StatCache) -> None:
    """Delete the least recently used restored folders beyond ``budget_bytes`` (see ``materialize``).

    A folder used after it was picked (its mtime moved) is put back: users do not take the lock.
    """
    now = now_ns()
    folders: list[tuple[int, str]] = []
    doomed: list[Path | None] = []
    with exclusive_file_lock(cache_root / ".lock"):  # taken to put folders in place or away, never to read them
        for entry in os.scandir(cache_root):
            if not entry.is_dir(follow_symlinks=False):
                continue
            used = entry.stat(follow_symlinks=False).st_mtime_ns
            if len(entry.name) == 64 and not entry.name.startswith("."):
                folders.append((used, entry.path))
            elif entry.name.startswith(".") and now - used > _LEFTOVER_AGE_SECONDS * 10**9:
                doomed.append(Path(entry.path))
        sizes = {path: _tree_size(path) for _used, path in folders}
        excess = sum(sizes.values()) - budget_bytes
        for used, path in sorted(folders):
            if excess <= 0:
                break
            if path == str(keep) or now - used < min_idle_seconds * 10**9:
                continue
            aside = _set_aside(Path(path))
            if aside is not None and os.stat(aside).st_mtime_ns != used:  # used since it was picked
                os.rename(aside, path)
                continue
            stat_cache.forget_under(Path(path))
            doomed.append(aside)
            excess -= sizes[path]
    for root in doomed:
        _delete_tree(root)
