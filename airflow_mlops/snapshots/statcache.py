"""Stat cache: lets a re-snapshot of unchanged files, or a check of restored ones, skip re-hashing them.

An entry says "the file at this absolute path, with this size, mtime_ns and inode, has this digest,
and that object is in this store". It is one SQLite file per store (beside a local store, under
AIRFLOW_HOME for S3), plus one per folder of restored snapshots, safe for concurrent processes.
Entries are written only after their objects are stored, and never for files modified so recently
that a same-size rewrite within the file system's timestamp granularity could go unseen (git's
"racy clean" problem).

It also remembers, per snapshotted tree, a digest of every file's relative path and stat with the
snapshot that tree gave and where that snapshot's objects are (as DVC remembers a directory's
hash), so a re-snapshot of an unchanged tree checks a few packs instead of every file's entry.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from array import array
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

from airflow_mlops.snapshots.hashing import digest_bytes

#: Files whose mtime is this close to the scan start are not cached (coarse kernel clock ticks).
RACY_WINDOW_NS = 50_000_000
#: How long a process waits for others holding the cache's lock.
_LOCK_TIMEOUT_SECONDS = 60


class FileStat(NamedTuple):
    """The part of ``os.stat`` that identifies one version of a file.

    A named tuple: a scan makes one per file, and it compares equal to the plain tuples the cache loads.
    """

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, result: os.stat_result) -> FileStat:
        return cls(result.st_size, result.st_mtime_ns, result.st_ino)


class TreeStat(NamedTuple):
    """A scanned tree's identity (a digest of every file's relative path and stat), bytes and newest mtime."""

    digest: str
    size: int
    newest_mtime_ns: int

    @classmethod
    def of(cls, files: Sequence[tuple[str, str, FileStat]]) -> TreeStat:
        """From ``scan_tree``'s (relative path, absolute path, stat) list: C-level passes, no loop per file."""
        sizes, mtimes, inodes = zip(*map(itemgetter(2), files))
        names = "\0".join(map(itemgetter(0), files)).encode("utf-8", "surrogateescape")  # no name holds a NUL
        numbers = [array("q", sizes).tobytes(), array("q", mtimes).tobytes(), array("Q", inodes).tobytes()]
        return cls(digest_bytes(b"\0".join([names, *numbers])), sum(sizes), max(mtimes))


class StoredTree(NamedTuple):
    """A snapshot and where its objects are: the packs holding its small objects, and its other (loose) objects."""

    snapshot_id: str
    packs: list[str]
    loose: list[str]


class StatCache:
    """Digests of files by (path, size, mtime_ns, inode)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        """A connection to the cache, set up (WAL, table) by whichever process gets there first.

        Switching to WAL takes an exclusive lock, and SQLite may refuse it at once ("database is
        locked") rather than wait, while another process creates the file. WAL is a property of the
        file, so it is set only when missing, and the set-up is retried until the other process is done.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=_LOCK_TIMEOUT_SECONDS)
        connection.execute("PRAGMA synchronous=NORMAL")  # a commit lost in a power cut costs a re-hash: no fsync each
        deadline = time.monotonic() + _LOCK_TIMEOUT_SECONDS
        while True:
            try:
                if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS entries (path TEXT PRIMARY KEY, size INTEGER NOT NULL,"
                    " mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, digest TEXT NOT NULL)"
                )
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS trees (path TEXT PRIMARY KEY, tree_digest TEXT NOT NULL,"
                    " snapshot_id TEXT NOT NULL, packs TEXT NOT NULL, loose TEXT NOT NULL)"
                )
                return connection
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    connection.close()
                    raise
                time.sleep(0.02)

    def load_under(self, root: Path) -> dict[str, tuple[int, int, int, str]]:
        """All entries for ``root`` itself or files below it: absolute path -> (size, mtime_ns, inode, digest).

        Plain tuples, as SQLite returns them: a tree of many files loads one per file (see ``cached_digests``).
        """
        if not self.path.exists():
            return {}
        connection = self._connect()
        try:
            rows = connection.execute(
                f"SELECT path, size, mtime_ns, inode, digest FROM entries WHERE {_UNDER}", _under(root)
            ).fetchall()
        finally:
            connection.close()
        return {row[0]: row[1:] for row in rows}

    def forget_under(self, root: Path) -> None:
        """Drop the entries and trees for ``root`` and files below it: a folder that is being deleted."""
        if not self.path.exists():
            return
        connection = self._connect()
        try:
            with connection:
                connection.execute(f"DELETE FROM entries WHERE {_UNDER}", _under(root))
                connection.execute(f"DELETE FROM trees WHERE {_UNDER}", _under(root))
        finally:
            connection.close()

    def stored_tree(self, root: Path, tree: TreeStat) -> StoredTree | None:
        """What ``store`` recorded for the tree at ``root`` when its files had the paths and stats they have now."""
        if not self.path.exists():
            return None
        connection = self._connect()
        try:
            row = connection.execute(
                "SELECT snapshot_id, packs, loose FROM trees WHERE path = ? AND tree_digest = ?", (str(root), tree.digest)
            ).fetchone()
        finally:
            connection.close()
        return StoredTree(row[0], json.loads(row[1]), json.loads(row[2])) if row else None

    def store(
        self,
        entries: dict[str, tuple[FileStat, str]],
        scan_started_ns: int,
        tree: tuple[Path, TreeStat, StoredTree] | None = None,
    ) -> None:
        """Remember digests of files that were stored and, given ``tree`` (root, its stat, its snapshot),
        that whole tree's snapshot; in one transaction, skipping whatever is racily recent."""
        cutoff = scan_started_ns - RACY_WINDOW_NS
        rows = [(path, *stat, digest) for path, (stat, digest) in entries.items() if stat.mtime_ns < cutoff]
        if tree and tree[1].newest_mtime_ns < cutoff:
            root, tree_stat, stored = tree
            tree_row = (str(root), tree_stat.digest, stored.snapshot_id, json.dumps(stored.packs), json.dumps(stored.loose))
        else:
            tree_row = None
        if not rows and not tree_row:
            return
        connection = self._connect()
        try:
            with connection:
                connection.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", rows)
                if tree_row:
                    connection.execute("INSERT OR REPLACE INTO trees VALUES (?, ?, ?, ?, ?)", tree_row)
        finally:
            connection.close()


def cached_digests(cached: dict[str, tuple[int, int, int, str]], files: list[tuple[str, str, FileStat]]) -> list[str | None]:
    """Each scanned file's digest per ``cached`` (from ``load_under``); None where it was not recorded
    with the stat the file has now. ``files`` are (relative path, absolute path, stat), as scanned."""
    entry_of = cached.get
    return [entry[3] if (entry := entry_of(path)) is not None and entry[:3] == stat else None for _rel, path, stat in files]


#: Entries for a path or the files below it, with the parameters of ``_under``.
_UNDER = "path = ? OR (path >= ? AND path < ?)"


def _under(root: Path) -> tuple[str, str, str]:
    """``root`` and the bounds of the paths below it, as a range the primary key index serves."""
    root_str = str(root)
    return root_str, root_str + os.sep, root_str + chr(ord(os.sep) + 1)


def now_ns() -> int:
    """Wall-clock time in the same clock file systems stamp mtimes with."""
    return time.time_ns()
