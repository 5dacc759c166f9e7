"""Packs: small objects stored many to a file, as backup tools do (restic, kopia, borg).

One file (one PUT on S3) per ~``PACK_TARGET`` bytes instead of one per small file::

    packs/<digest>.pack   objects' bytes end to end; named by the digest of those bytes
    packs/<digest>.idx    where each object is in it: 48-byte rows (digest, offset, length)

The pack is written before its index, each atomically, so an index always describes a whole pack;
a pack without an index (its writer was killed) holds no object anyone can see, and gc deletes it.
Packs are immutable: gc deletes whole packs, or copies the live objects of a mostly-garbage pack
into a new one before deleting it. The union of the ``.idx`` keys is the store's pack index; an
S3 store's is cached under AIRFLOW_HOME (index keys never change, so a listing says what is new).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

from airflow_mlops.snapshots.backends import Backend
from airflow_mlops.snapshots.hashing import digest_bytes

PACKS_PREFIX = "packs/"
#: Objects smaller than this go into packs; larger ones stay one object file each (their per-file cost
#: is small beside their bytes, and packing would add a copy and a hash of the pack).
PACK_OBJECT_LIMIT = 256 * 1024
#: A pack is written once its objects reach this size.
PACK_TARGET = 8 * 1024 * 1024
_ROW = struct.Struct("<32sQQ")


class Location(NamedTuple):
    """Where one packed object is. A named tuple: the index holds one per small file in the store."""

    pack: str
    offset: int
    length: int


def pack_key(pack: str) -> str:
    return f"{PACKS_PREFIX}{pack}.pack"


def index_key(pack: str) -> str:
    return f"{PACKS_PREFIX}{pack}.idx"


def read_packed(backend: Backend, pack: str, rows: list[tuple[str, Location]]) -> list[tuple[str, bytes | None]]:
    """(digest, bytes) of some objects of one pack, from one ranged read spanning them; None if the pack is gone.

    Locations are read as (pack, offset, length) tuples, as ``by_pack`` takes them.
    """
    start = min(offset for _digest, (_pack, offset, _length) in rows)
    end = max(offset + length for _digest, (_pack, offset, length) in rows)
    try:
        data = backend.get_range(pack_key(pack), start, end - start) if end > start else b""
    except KeyError:
        return [(digest, None) for digest, _location in rows]
    return [(digest, data[offset - start : offset - start + length]) for digest, (_pack, offset, length) in rows]


def by_pack(located: Iterable[tuple[str, Location]]) -> dict[str, list[tuple[str, Location]]]:
    """(digest, location) pairs grouped by pack, each group in pack order.

    A location is a ``Location`` or a plain (pack, offset, length) tuple (see ``PackIndex.locate``).
    """
    groups: dict[str, list[tuple[str, Location]]] = {}
    for digest, location in sorted(located, key=itemgetter(1)):
        groups.setdefault(location[0], []).append((digest, location))
    return groups


def encode_index(rows: Iterable[tuple[str, int, int]]) -> bytes:
    return b"".join(_ROW.pack(bytes.fromhex(digest), offset, length) for digest, offset, length in rows)


def decode_index(data: bytes) -> list[tuple[str, int, int]] | None:
    """The rows of an index, or None if it is damaged (not whole rows)."""
    if len(data) % _ROW.size:
        return None
    return [(digest.hex(), offset, length) for digest, offset, length in _ROW.iter_unpack(data)]


class PackIndex:
    """Where each packed object is, from the store's ``.idx`` keys; ``refresh`` follows other writers and gc."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.packs: dict[str, list[tuple[str, int, int]]] = {}
        self.damaged: list[str] = []  # packs whose index cannot be read
        self._where: dict[str, tuple[str, int, int]] = {}  # plain tuples: built for every small file in the store
        self._lock = threading.Lock()

    def __contains__(self, digest: str) -> bool:
        return digest in self._where

    def lacking(self, digests: Iterable[str]) -> set[str]:
        """The digests among ``digests`` that no pack holds: a set difference, not a lookup per digest."""
        return set(digests).difference(self._where)

    def get(self, digest: str) -> Location | None:
        where = self._where.get(digest)
        return Location(*where) if where else None

    def locate(self, digests: Iterable[str]) -> list[tuple[str, tuple[str, int, int]]]:
        """(digest, location) of each of ``digests`` (all packed), for ``by_pack``: locations as plain
        (pack, offset, length) tuples, not ``Location``s, since a restore locates every small file."""
        where = self._where
        return [(digest, where[digest]) for digest in digests]

    def rows(self) -> Iterator[tuple[str, Location]]:
        """Every copy of every packed object (an object two writers packed at once is in two packs)."""
        for pack, rows in self.packs.items():
            for digest, offset, length in rows:
                yield digest, Location(pack, offset, length)

    def holding(self, digests: Iterable[str]) -> tuple[list[str], list[str]]:
        """The packs that hold ``digests``, and those of ``digests`` no pack holds (both sorted)."""
        wanted = set(digests)
        unpacked = self.lacking(wanted)
        return sorted({self._where[digest][0] for digest in wanted - unpacked}), sorted(unpacked)

    def listed(self) -> set[str]:
        """The packs in the store now (those with an index), from one listing."""
        return {key[len(PACKS_PREFIX) : -len(".idx")] for key in self.backend.list_keys(PACKS_PREFIX) if key.endswith(".idx")}

    def refresh(self) -> None:
        """Re-list the packs: load new indexes, drop those of deleted packs."""
        listed = self.listed()
        if listed == self.packs.keys():
            return
        self._drop_cached(listed)
        self.damaged = []
        loaded = {pack: rows for pack in listed if (rows := self.packs.get(pack) or self._load(pack)) is not None}
        with self._lock:
            self.packs = loaded
            self._where = {row[0]: (pack, row[1], row[2]) for pack, rows in loaded.items() for row in rows}

    def _drop_cached(self, listed: set[str]) -> None:
        """Delete the local copies of indexes whose pack is gone (gc deleted it)."""
        cache_dir = self.backend.index_cache_dir()
        if cache_dir and cache_dir.is_dir():
            for cached in cache_dir.glob("*.idx"):
                if cached.stem not in listed:
                    cached.unlink(missing_ok=True)

    def _load(self, pack: str) -> list[tuple[str, int, int]] | None:
        """One pack's rows, from the local copy when there is one; None if the index is gone or damaged."""
        cache_dir = self.backend.index_cache_dir()
        cached = cache_dir / f"{pack}.idx" if cache_dir else None
        try:
            data = cached.read_bytes() if cached and cached.exists() else self.backend.get_bytes(index_key(pack))
        except KeyError:
            return None  # deleted since the listing
        rows = decode_index(data)
        if rows is None:
            self.damaged.append(pack)
        elif cached and not cached.exists():
            _write_cache(cached, data)
        return rows

    def add(self, pack: str, rows: list[tuple[str, int, int]]) -> None:
        """A pack this process wrote (its index too): known, and cached, without reading it back."""
        cache_dir = self.backend.index_cache_dir()
        if cache_dir:
            _write_cache(cache_dir / f"{pack}.idx", encode_index(rows))
        with self._lock:
            self.packs[pack] = rows
            for digest, offset, length in rows:
                self._where.setdefault(digest, (pack, offset, length))


def _write_cache(path: Path, data: bytes) -> None:
    """Keep a copy of an index (written beside, then renamed: readers never see half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(f".{threading.get_ident()}.part")
    temp.write_bytes(data)
    temp.replace(path)


class PackWriter:
    """Collects small objects into packs of about ``PACK_TARGET`` bytes; safe to call from many threads."""

    def __init__(self, backend: Backend, index: PackIndex) -> None:
        self.backend = backend
        self.index = index
        self._lock = threading.Lock()
        self._pending: set[str] = set()  # added by this writer: in a buffer, or written
        self._parts: list[bytes] = []
        self._rows: list[tuple[str, int, int]] = []
        self._size = 0

    def add(self, digest: str, data: bytes) -> None:
        """Store ``data`` under ``digest`` unless the store or this writer has it already."""
        with self._lock:
            if digest in self._pending or digest in self.index:
                return
            self._pending.add(digest)
            self._parts.append(data)
            self._rows.append((digest, self._size, len(data)))
            self._size += len(data)
            full = self._take() if self._size >= PACK_TARGET else None
        if full:
            self._write(*full)

    def flush(self) -> None:
        """Write the objects still buffered (a snapshot does before its record)."""
        with self._lock:
            taken = self._take()
        if taken[0]:
            self._write(*taken)

    def _take(self) -> tuple[list[bytes], list[tuple[str, int, int]]]:
        taken = (self._parts, self._rows)
        self._parts, self._rows, self._size = [], [], 0
        return taken

    def _write(self, parts: list[bytes], rows: list[tuple[str, int, int]]) -> None:
        """One pack, then its index: once the index is there, every object it names is."""
        data = b"".join(parts)
        pack = digest_bytes(data)
        self.backend.put_bytes(pack_key(pack), data)
        self.backend.put_bytes(index_key(pack), encode_index(rows))
        self.index.add(pack, rows)
