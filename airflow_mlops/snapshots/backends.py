"""Where snapshot bytes live: a local directory or an S3 prefix, behind one small interface.

Keys are POSIX paths relative to the store root (``objects/ab/cdef...``). Every write is atomic:
a reader sees the whole value or nothing, so a killed writer leaves no half object behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from airflow_mlops.config import mlops_home
from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.hashing import copy_with_digest, digest_bytes

_CHUNK = 4 * 1024 * 1024
#: Keys one S3 ``delete_objects`` request takes at most.
_DELETE_BATCH = 1000


class Backend(Protocol):
    """The storage operations the snapshot store needs; nothing more."""

    uri: str
    #: Files stored at once: local writes contend on the file system journal, S3 PUTs wait on the network.
    parallelism: int

    def exists(self, key: str) -> bool: ...
    def missing(self, keys: Iterable[str]) -> set[str]:
        """The keys among ``keys`` that hold no value."""

    def put_file(self, key: str, source: Path, digest: str) -> None:
        """Store ``source`` under ``key`` only if the bytes copied have ``digest`` (``SnapshotError`` if not)."""

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes:
        """The value at ``key``; ``KeyError`` when there is none (likewise ``get_file``)."""

    def get_file(self, key: str, target: Path) -> None: ...
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes of the value at ``key`` from ``start`` (one object inside a pack)."""

    def iter_chunks(self, key: str) -> Iterator[bytes]: ...
    def list_keys(self, prefix: str) -> Iterator[str]: ...
    def list_stats(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        """(key, size, last modification as a POSIX time) under ``prefix``: what gc weighs and ages."""

    def index_cache_dir(self) -> Path | None:
        """Where copies of the pack index live (None: the store is local, read it in place)."""

    def delete(self, keys: Iterable[str]) -> None:
        """Remove ``keys``; those already gone are skipped."""

    def is_empty(self) -> bool:
        """Whether the location holds nothing but a store's own scratch space (not even a marker)."""

    def stat_cache_path(self) -> Path: ...


class LocalBackend:
    """A store in a local (or mounted) directory. Temp files live in ``tmp/`` on the same device."""

    parallelism = os.cpu_count() or 1

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise SnapshotError(f"store {self.uri} is a file, not a snapshot store directory")

    def _path(self, key: str) -> Path:
        return self.root / key

    def _write_atomically(self, key: str, write: Callable[[str], None]) -> None:
        """``write`` a temp file in ``tmp/``, then rename it onto ``key``; directories made on demand."""
        temp = f"{self.root}/tmp/{uuid.uuid4().hex}.part"
        target = f"{self.root}/{key}"
        try:
            try:
                write(temp)
            except FileNotFoundError:
                os.makedirs(f"{self.root}/tmp", exist_ok=True)
                write(temp)
            try:
                os.replace(temp, target)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(temp, target)
        finally:
            if os.path.lexists(temp):
                os.unlink(temp)

    def exists(self, key: str) -> bool:
        return os.path.exists(f"{self.root}/{key}")

    def missing(self, keys: Iterable[str]) -> set[str]:
        return {key for key in keys if not os.path.exists(f"{self.root}/{key}")}

    def put_file(self, key: str, source: Path, digest: str) -> None:
        self._write_atomically(key, lambda temp: copy_verified(source, temp, digest))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write_atomically(key, lambda temp: write_new_file(temp, data, 0o644))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def get_file(self, key: str, target: Path) -> None:
        try:
            shutil.copyfile(self._path(key), target)
        except FileNotFoundError:
            raise KeyError(key) from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                handle.seek(start)
                return handle.read(length)
        except FileNotFoundError:
            raise KeyError(key) from None

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        with open(self._path(key), "rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk

    def list_keys(self, prefix: str) -> Iterator[str]:
        for key, _path in self._walk(prefix):
            yield key

    def list_stats(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        for key, path in self._walk(prefix):
            try:
                result = os.stat(path)
            except FileNotFoundError:
                continue  # deleted since it was listed
            yield key, result.st_size, result.st_mtime

    def _walk(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, file path) of the files whose key starts with ``prefix``."""
        base = self._path(prefix.rsplit("/", 1)[0] if "/" in prefix else "")
        if not base.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(base):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    yield key, f"{dirpath}/{name}"

    def delete(self, keys: Iterable[str]) -> None:
        """Unlink each key, then its parent folders while empty (a record's, an index subject's)."""
        for key in keys:
            try:
                os.unlink(f"{self.root}/{key}")
            except FileNotFoundError:
                continue
            parent = os.path.dirname(key)
            while "/" in parent:  # never the top-level folders; a writer racing this recreates its folder
                try:
                    os.rmdir(f"{self.root}/{parent}")
                except OSError:
                    break
                parent = os.path.dirname(parent)

    def is_empty(self) -> bool:
        # ``tmp/`` alone is what a process creating this store leaves while it writes the marker
        # (or after being killed there): still a new store, not someone else's folder.
        return not self.root.exists() or all(entry.name == "tmp" for entry in self.root.iterdir())

    def stat_cache_path(self) -> Path:
        return self.root / "cache" / "stat.sqlite"

    def index_cache_dir(self) -> Path | None:
        return None


class S3Backend:
    """A store under ``s3://bucket/prefix``, driven through a boto3 S3 client.

    The client comes from the Amazon provider's ``S3Hook`` (endpoint and credentials from an Airflow
    connection); this module only uses it. Single PUTs are atomic in S3, so no temp keys are needed.
    """

    parallelism = 16

    def __init__(self, uri: str, client: Any) -> None:
        if not uri.startswith("s3://") or len(uri) <= len("s3://"):
            raise SnapshotError(f"store {uri!r} is not an s3://bucket/prefix URI")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = client
        self._check_bucket()

    def _check_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            raise SnapshotError(
                f"store {self.uri}: bucket {self.bucket!r} is not reachable ({code or error}); "
                "create it or check the AWS connection"
            ) from None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def exists(self, key: str) -> bool:
        try:
            with _missing_as_key_error(key):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except KeyError:
            return False
        return True

    def missing(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            return {key for key, found in zip(keys, pool.map(self.exists, keys)) if not found}

    def put_file(self, key: str, source: Path, digest: str) -> None:
        with tempfile.TemporaryDirectory(prefix="airflow-mlops-upload-") as staging:
            copy = Path(staging) / "object"
            copy_verified(source, copy, digest)
            self.client.upload_file(str(copy), self.bucket, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        with _missing_as_key_error(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def get_file(self, key: str, target: Path) -> None:
        with _missing_as_key_error(key):
            self.client.download_file(self.bucket, self._key(key), str(target))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        with _missing_as_key_error(key):
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}"
            )
            return response["Body"].read()

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        yield from body.iter_chunks(_CHUNK)

    def list_keys(self, prefix: str) -> Iterator[str]:
        for key, _size, _modified in self.list_stats(prefix):
            yield key

    def list_stats(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for item in page.get("Contents", []):
                yield item["Key"][strip:], item["Size"], item["LastModified"].timestamp()

    def delete(self, keys: Iterable[str]) -> None:
        """``delete_objects`` in batches of 1,000 keys, the most one request takes."""
        keys = list(keys)
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": self._key(key)} for key in keys[start : start + _DELETE_BATCH]]
            response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if response.get("Errors"):
                error = response["Errors"][0]
                raise SnapshotError(f"store {self.uri}: cannot delete {error['Key']} ({error.get('Code')}); "
                                    "check the AWS connection's permissions")

    def is_empty(self) -> bool:
        return next(self.list_keys(""), None) is None

    def stat_cache_path(self) -> Path:
        return self._local_cache("stat-cache").with_suffix(".sqlite")

    def index_cache_dir(self) -> Path | None:
        return self._local_cache("pack-index")

    def _local_cache(self, kind: str) -> Path:
        """This store's place for a local cache of ``kind`` under AIRFLOW_HOME (one per bucket and prefix)."""
        return mlops_home() / kind / digest_bytes(self.uri.encode())[:24]


@contextmanager
def _missing_as_key_error(key: str) -> Iterator[None]:
    """Turn S3's several spellings of "no such key" into ``KeyError``, as the local backend does."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise KeyError(key) from None
        raise


def copy_verified(source: Path, target: str | os.PathLike, digest: str) -> None:
    """Copy ``source`` to ``target``, hashing the bytes copied: a file rewritten after it was hashed
    raises instead of leaving its new bytes stored under the old digest."""
    if copy_with_digest(source, target) != digest:
        raise SnapshotError(f"{source} changed while it was being snapshotted; take the snapshot again")


def write_new_file(path: str | os.PathLike, data: bytes, mode: int) -> None:
    """Create ``path`` (it must not exist) holding ``data``, written straight from memory."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        written = os.write(handle, data)
        while written < len(data):  # a short write: rare, so no view of the data until one happens
            written += os.write(handle, memoryview(data)[written:])
    finally:
        os.close(handle)


def temp_file_beside(target: str | os.PathLike) -> Path:
    """A unique temp path in ``target``'s directory, so ``os.replace`` onto ``target`` is atomic."""
    folder, name = os.path.split(target)
    handle, name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    os.close(handle)
    return Path(name)
