"""Forget markers ``forgotten/<snapshot_id>``: a snapshot marked so goes at the next gc (see :mod:`.gc`)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend
from airflow_mlops.snapshots.locks import SHARED, store_lock
from airflow_mlops.snapshots.records import encode_json, is_recorded
from airflow_mlops.snapshots.refs import FORGOTTEN_PREFIX


def mark_forgotten(backend: Backend, full_ids: Iterable[str], *, reason: str) -> None:
    """Mark snapshots as forgotten (idempotent): a small key forgotten/<snapshot_id> (JSON: reason, time, host).

    The records stay readable until gc removes them; an id already forgotten keeps its first marker.
    """
    already = {key[len(FORGOTTEN_PREFIX) :] for key in backend.list_keys(FORGOTTEN_PREFIX)}
    marker = encode_json({"reason": reason, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "host": socket.gethostname()})
    for snapshot_id in sorted(set(full_ids) - already):
        backend.put_bytes(FORGOTTEN_PREFIX + snapshot_id, marker)


def read_forgotten(backend: Backend) -> dict[str, dict]:
    """Forgotten snapshot ids, each with its marker (reason, time, host)."""
    keys = sorted(backend.list_keys(FORGOTTEN_PREFIX))
    with ThreadPoolExecutor(max_workers=backend.parallelism) as pool:
        markers = list(pool.map(lambda key: _read_json_or_none(backend, key), keys))
    return {key[len(FORGOTTEN_PREFIX) :]: marker for key, marker in zip(keys, markers) if marker is not None}


def _read_json_or_none(backend: Backend, key: str) -> dict | None:
    try:
        return json.loads(backend.get_bytes(key))
    except KeyError:
        return None  # deleted since it was listed


def drop_forget_markers(backend: Backend, full_ids: Iterable[str]) -> None:
    """Drop the forget markers of full snapshot ids: the snapshots are kept again.

    Under a shared lock, so it either lands before a gc decides (and the snapshot is kept) or
    after it: an id whose records gc deleted meanwhile is an error, not a silent no-op.
    """
    ids = sorted(set(full_ids))
    with store_lock(backend, SHARED):
        gone = [snapshot_id for snapshot_id in ids if not is_recorded(backend, snapshot_id)]
        if gone:
            raise SnapshotError(f"snapshot {gone[0]} is no longer in {backend.uri} (deleted by gc); it cannot be unforgotten")
        backend.delete([FORGOTTEN_PREFIX + snapshot_id for snapshot_id in ids])
