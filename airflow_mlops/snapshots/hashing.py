"""Content digests for the snapshot store.

BLAKE3: as strong as SHA-256 for content addressing (256-bit, no length extension) and several
times faster, using SIMD and all cores on large files, so hashing is never the bottleneck of a
snapshot.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import blake3

ALGORITHM = "blake3"
#: Files above this size are hashed through mmap with BLAKE3's multi-threaded mode.
_MMAP_THRESHOLD = 4 * 1024 * 1024


def digest_bytes(data: bytes) -> str:
    """Hex digest of an in-memory value (a manifest, a small file)."""
    return blake3.blake3(data).hexdigest()


def digest_chunks(chunks: Iterable[bytes]) -> str:
    """Hex digest of a stream, for objects read back from a backend."""
    hasher = blake3.blake3()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


def copy_with_digest(source: str | os.PathLike, target: str | os.PathLike, chunk_size: int = 16 * 1024 * 1024) -> str:
    """Copy ``source`` to ``target`` and return the hex digest of the bytes copied, in one read."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(chunk_size):
            hasher.update(chunk)
            writer.write(chunk)
    return hasher.hexdigest()


def digest_file(path: str | os.PathLike, size: int) -> str:
    """Hex digest of a file's bytes; ``size`` (from the caller's stat) picks the fastest way."""
    if size >= _MMAP_THRESHOLD:
        return blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).hexdigest()
    with open(path, "rb") as handle:
        return blake3.blake3(handle.read()).hexdigest()
