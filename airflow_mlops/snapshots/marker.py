"""The store marker ``airflow-mlops-store.json``: that a location is a snapshot store, its format and hash algorithm.

Format 1 stores (every object loose, before packs) are read as they are. The first snapshot taken
into one with this code marks it format 2 with ``loose_small_objects``: its new small objects go
into packs, and its old loose ones are still found (and deduplicated against) where they are.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend
from airflow_mlops.snapshots.hashing import ALGORITHM
from airflow_mlops.snapshots.records import encode_json

MARKER_KEY = "airflow-mlops-store.json"
#: The layout this code writes: 1 had every object loose, 2 adds packs, locks and forget markers.
STORE_FORMAT = 2


class StoreMarker:
    """A store's marker as read when it was opened; written by the store's first snapshot."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._marker = self._read()
        if self._marker is None and not backend.is_empty():
            raise SnapshotError(
                f"{backend.uri} is not a snapshot store (no {MARKER_KEY}); give a new or empty location"
            )

    def _read(self) -> dict[str, Any] | None:
        try:
            marker = json.loads(self.backend.get_bytes(MARKER_KEY))
        except KeyError:
            return None
        if marker.get("format", 1) > STORE_FORMAT:
            raise SnapshotError(f"store {self.backend.uri} has format {marker['format']}, newer than this airflow-mlops "
                                f"reads ({STORE_FORMAT}); upgrade airflow-mlops")
        return marker

    @property
    def exists(self) -> bool:
        """Whether the store exists: it has a marker (it has taken a snapshot)."""
        return self._marker is not None

    @property
    def loose_small_objects(self) -> bool:
        """Whether small objects may be loose: a format 1 store, or one that was (see the module docstring)."""
        marker = self._marker or {}
        return marker.get("format", 1) == 1 or bool(marker.get("loose_small_objects"))

    def require(self) -> None:
        """Raise unless the store exists."""
        if self._marker is None:
            raise SnapshotError(f"no snapshot store at {self.backend.uri}; take a snapshot there first")

    def prepare_for_writing(self) -> None:
        """Write the marker of a new store, or mark a format 1 store as packing from now on."""
        if self._marker is not None and self._marker.get("format", 1) == STORE_FORMAT:
            return
        marker: dict[str, Any] = {"format": STORE_FORMAT, "hash": ALGORITHM}
        if self._marker is not None:
            marker["loose_small_objects"] = True
        self.backend.put_bytes(MARKER_KEY, encode_json(marker))
        self._marker = marker
