"""Names in a snapshot store: snapshot ids and URIs, and the keys that objects, records and forget markers live under."""

from __future__ import annotations

from airflow_mlops.errors import SnapshotError

MIN_ID_PREFIX = 6
#: Hex digits of a full snapshot id (a 256-bit BLAKE3 digest).
ID_LENGTH = 64
OBJECTS_PREFIX = "objects/"
RECORDS_PREFIX = "records/"
FORGOTTEN_PREFIX = "forgotten/"


def is_snapshot_id(text: str) -> bool:
    """Whether ``text`` has the form of a snapshot id or a prefix of one: hex, at least six characters."""
    candidate = text.strip().lower()
    return len(candidate) >= MIN_ID_PREFIX and all(c in "0123456789abcdef" for c in candidate)


def snapshot_uri(store: str, snapshot_id: str) -> str:
    """The URI naming one snapshot in one store: ``<store>#<snapshot_id>``."""
    return f"{store}#{snapshot_id}"


def parse_snapshot_ref(ref: str, default_store: str | None = None) -> tuple[str, str]:
    """(store, snapshot id) from a snapshot URI ``<store>#<snapshot_id>``, or a bare id in ``default_store``."""
    store, sep, snapshot_id = ref.strip().rpartition("#")
    if not sep:
        store, snapshot_id = default_store or "", ref.strip()
    if not store or not snapshot_id:
        raise SnapshotError(f"{ref!r} is not a snapshot URI (<store>#<snapshot_id>) and no store was given")
    return store, snapshot_id


def object_key(digest: str) -> str:
    """``objects/ab/cdef...``: where a loose object (a large file's bytes, or a manifest) is stored."""
    return f"{OBJECTS_PREFIX}{digest[:2]}/{digest[2:]}"


def records_prefix(snapshot_id: str) -> str:
    """``records/<snapshot_id>/``: the folder of one snapshot's records."""
    return f"{RECORDS_PREFIX}{snapshot_id}/"
