"""Restore: write a snapshot's files under a folder, each checked against its digest, all at once or not at all.

Every file is first written into a hidden ``.<name>.<rand>.restoring`` folder beside the target;
only once all are there and intact does that folder become the target (one rename, when it is
missing or empty) or do its files replace theirs in it (a rename each). So a failed restore writes
nothing into the target, and a killed one leaves at most the hidden folder, or, killed while
renaming into a filled target, some files replaced.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.backends import Backend, temp_file_beside, write_new_file
from airflow_mlops.snapshots.hashing import digest_bytes, digest_file
from airflow_mlops.snapshots.packs import PackIndex, by_pack, read_packed
from airflow_mlops.snapshots.records import ManifestEntry
from airflow_mlops.snapshots.refs import object_key

#: Threads creating restored files: each creation mostly waits for the file system, not the CPU.
_RESTORE_WRITERS = 4


def restore_snapshot(
    backend: Backend, packs: PackIndex, full_id: str, entries: list[ManifestEntry], dest: str | os.PathLike, *, force: bool
) -> None:
    """Write the files ``entries`` lists (the manifest of ``full_id``) under ``dest``; see the module docstring.

    Refuses entries that would land outside ``dest`` (absolute paths, ``..``, symlinks out), and a
    non-empty ``dest`` unless ``force`` (which overwrites listed files, keeps others).
    """
    dest_path = Path(dest).expanduser().absolute()
    if dest_path.exists() and not dest_path.is_dir():
        raise SnapshotError(f"restore target {dest_path} is a file; give a directory")
    filled = dest_path.is_dir() and any(dest_path.iterdir())
    if filled and not force:
        raise SnapshotError(f"restore target {dest_path} is not empty; use --force to overwrite")
    # plain strings, not pathlib: these run for every file
    targets = _safe_targets(str(dest_path), [entry.path for entry in entries], check_links=filled)
    packs.refresh()
    unpacked = packs.lacking(entry.digest for entry in entries)
    missing = backend.missing({object_key(entry.digest) for entry in entries if entry.digest in unpacked})
    if missing:
        raise SnapshotError(f"{len(missing)} objects of snapshot {full_id} are missing; run 'airflow-mlops verify'")
    real = os.path.realpath(dest_path)  # staged beside the real folder, so every rename stays on its file system
    stage = f"{os.path.dirname(real)}/.{os.path.basename(real)}.{uuid.uuid4().hex[:12]}.restoring"
    staged = [f"{stage}/{entry.path}" for entry in entries]  # the paths _safe_targets accepted
    os.makedirs(os.path.dirname(real), exist_ok=True)
    os.mkdir(stage)
    try:
        _write_staged(backend, packs, entries, staged, unpacked)
        if not filled and not os.path.islink(dest_path):
            try:
                os.rename(stage, dest_path)  # onto nothing, or onto an empty folder
            except OSError as error:  # someone else filled dest_path meanwhile
                raise SnapshotError(f"restore target {dest_path} cannot be put in place: {error.strerror}") from None
        else:
            _make_folders(targets)
            for source, target in zip(staged, targets):
                os.replace(source, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_staged(
    backend: Backend, packs: PackIndex, entries: list[ManifestEntry], staged: list[str], unpacked: set[str]
) -> None:
    """Write every file at its ``staged`` path, in a folder no one uses yet, so nothing needs holding
    back: each writer thread checks the objects of a pack and writes their files as soon as it has
    read it, while the others do the same (reading, hashing and file creation overlap). Loose
    objects are copied beside their file, checked, then renamed. Raises on the first missing or
    damaged object."""
    _make_folders(staged)
    paths: dict[str, str] = {}  # a file per object, to name in errors
    targets_of: dict[str, list[str]] = {}
    loose = []
    for entry, target in zip(entries, staged):
        if entry.digest in unpacked:
            loose.append((entry, target))
        else:
            paths[entry.digest] = entry.path
            targets_of.setdefault(entry.digest, []).append(target)

    def write_pack(item: tuple[str, list]) -> None:
        for digest, data in read_packed(backend, *item):
            _check_packed(digest, data, paths[digest])
            for target in targets_of[digest]:
                write_new_file(target, data, 0o666)

    def write_loose(entry: ManifestEntry, target: str) -> None:
        os.replace(_fetch_loose(backend, entry, target), target)

    with ThreadPoolExecutor(max_workers=max(_RESTORE_WRITERS, backend.parallelism)) as pool:  # S3: more reads
        writes = [pool.submit(write_pack, item) for item in by_pack(packs.locate(targets_of)).items()]
        writes += [pool.submit(write_loose, *pair) for pair in loose]
        for write in writes:
            write.result()


def _fetch_loose(backend: Backend, entry: ManifestEntry, target: str) -> Path:
    """A loose object copied beside its target and checked; returns the temp file."""
    temp = temp_file_beside(target)
    try:
        backend.get_file(object_key(entry.digest), temp)
        intact = digest_file(temp, entry.size) == entry.digest
    except KeyError:
        temp.unlink()
        raise SnapshotError(f"object {entry.digest} for {entry.path} is missing; run 'airflow-mlops verify'") from None
    except BaseException:
        temp.unlink()
        raise
    if not intact:
        temp.unlink()
        raise SnapshotError(f"object {entry.digest} for {entry.path} is damaged; run 'airflow-mlops verify'")
    return temp


def _check_packed(digest: str, data: bytes | None, path: str) -> None:
    """Raise unless a packed object, read for the file at ``path``, is there and intact."""
    if data is None:
        raise SnapshotError(f"object {digest} for {path} is missing; run 'airflow-mlops verify'")
    if digest_bytes(data) != digest:
        raise SnapshotError(f"object {digest} for {path} is damaged; run 'airflow-mlops verify'")


def _make_folders(files: list[str]) -> None:
    """Create the folders the ``files`` (absolute paths) go into, each once."""
    for folder in sorted({file.rpartition("/")[0] for file in files}):
        os.makedirs(folder, exist_ok=True)


def _safe_targets(dest: str, rel_paths: list[str], *, check_links: bool) -> list[str]:
    """``dest/<rel_path>`` for each of ``rel_paths``, refusing paths and symlinks that lead outside ``dest``.

    Folders are resolved once each (a tree's files share a few); a file that is itself a symlink can
    only exist in a ``dest`` that held files already (``check_links``), and is resolved on its own.
    """
    resolve_folder = functools.lru_cache(maxsize=None)(os.path.realpath)
    inside = resolve_folder(dest) + os.sep
    base = dest if dest.endswith("/") else dest + "/"
    targets = []
    for rel_path in rel_paths:
        parts = rel_path.split("/")
        if "" in parts or "." in parts or ".." in parts:
            raise SnapshotError(f"manifest entry {rel_path!r} would escape the restore target; refused")
        target = base + rel_path
        folder, _, name = target.rpartition("/")
        if check_links and os.path.islink(target):
            resolved = os.path.realpath(target)
        else:
            resolved = f"{resolve_folder(folder)}/{name}"
        if not resolved.startswith(inside):
            raise SnapshotError(f"manifest entry {rel_path!r} would escape {dest} through a symlink; refused")
        targets.append(target)
    return targets
