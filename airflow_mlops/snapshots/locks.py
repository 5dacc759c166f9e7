"""Store locks: snapshots share a store, gc's deletions have it alone (restic's scheme, on any backend).

A lock is an empty key ``locks/<kind>.<pid>.<random>.<host>``: a snapshot holds a ``shared`` one
from its first look at which objects the store has until its record is written; gc holds the
``exclusive`` one while it re-reads what is used and deletes. A process writes its lock, then lists
the locks, and goes on only if no conflicting one is there: a shared lock conflicts with an
exclusive one, an exclusive lock with any other. Both sides write before they look, so two
conflicting holders can never both go on (S3 and local files are strongly consistent). Whoever
meets an exclusive lock deletes its own, waits and tries again; gc meeting only shared locks keeps
its own while it waits for them to go, so snapshots starting meanwhile wait for gc and a steady
stream of snapshots cannot starve it. So every object an in-flight snapshot found in the store, or wrote, is in a record by
the time gc can delete.

A lock is stale, and ignored, once its holder is dead (same host, no such process) or it was not
refreshed for ``LOCK_STALE_SECONDS``: holders rewrite theirs every ``LOCK_REFRESH_SECONDS``. gc deletes stale
locks. A holder stopped (not killed) for longer than that loses its protection; gc's grace period
(objects younger than it are never deleted) covers what such a holder wrote.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend

SHARED = "shared"
EXCLUSIVE = "exclusive"
LOCKS_PREFIX = "locks/"
#: A lock not rewritten for this long belongs to a holder that is gone.
LOCK_STALE_SECONDS = 30 * 60
#: How often a holder rewrites its lock.
LOCK_REFRESH_SECONDS = 5 * 60
#: How long a process waits for a conflicting lock to go before it gives up.
LOCK_WAIT_SECONDS = 15 * 60


@dataclass(frozen=True)
class Lock:
    key: str
    kind: str
    pid: int
    host: str
    modified: float

    @classmethod
    def parse(cls, key: str, modified: float) -> Lock | None:
        """The lock a key names; None for a key that is not one (never a lock, so never in the way)."""
        try:
            kind, pid, _random, host = key[len(LOCKS_PREFIX) :].split(".", 3)
            return cls(key, kind, int(pid), host, modified)
        except ValueError:
            return None

    def is_stale(self, now: float) -> bool:
        if now - self.modified > LOCK_STALE_SECONDS:
            return True
        return self.host == socket.gethostname() and not _process_alive(self.pid)

    def describe(self) -> str:
        return f"{self.kind} lock of process {self.pid} on {self.host}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def live_locks(backend: Backend) -> tuple[list[Lock], list[Lock]]:
    """(live, stale) locks of the store."""
    now = time.time()
    locks = [lock for key, _size, modified in backend.list_stats(LOCKS_PREFIX) if (lock := Lock.parse(key, modified))]
    return [lock for lock in locks if not lock.is_stale(now)], [lock for lock in locks if lock.is_stale(now)]


@contextmanager
def store_lock(backend: Backend, kind: str, *, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold a ``kind`` lock on the store for the block, waiting up to ``wait_seconds`` for conflicting ones to go."""
    key = f"{LOCKS_PREFIX}{kind}.{os.getpid()}.{uuid.uuid4().hex[:12]}.{socket.gethostname()}"
    deadline = time.monotonic() + wait_seconds
    delay = 0.02
    backend.put_bytes(key, b"")
    while True:
        live, _stale = live_locks(backend)
        others = [lock for lock in live if lock.key != key]
        exclusive = [lock for lock in others if lock.kind == EXCLUSIVE]
        conflicts = others if kind == EXCLUSIVE else exclusive
        if not conflicts:
            break
        if time.monotonic() > deadline:
            backend.delete([key])
            raise SnapshotError(f"store {backend.uri} is held by a {conflicts[0].describe()}; try again later")
        if exclusive:  # give way to the exclusive holder (or, between two gcs, to whoever backs off less)
            backend.delete([key])
        time.sleep(delay * (0.5 + random.random()))  # jitter: two gcs backing off must not meet again
        delay = min(delay * 2, 1.0)
        if exclusive:
            backend.put_bytes(key, b"")
    stop = threading.Event()
    refresher = threading.Thread(target=_refresh, args=(backend, key, stop), daemon=True)
    refresher.start()
    try:
        yield
    finally:
        stop.set()
        refresher.join()
        backend.delete([key])


def _refresh(backend: Backend, key: str, stop: threading.Event) -> None:
    """Rewrite the lock every ``LOCK_REFRESH_SECONDS`` until ``stop``: a live holder's lock never goes stale."""
    while not stop.wait(LOCK_REFRESH_SECONDS):
        backend.put_bytes(key, b"")
