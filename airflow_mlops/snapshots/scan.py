"""Walking a source tree: its regular files with their stats, validated (no special files, no symlinked folders)."""

from __future__ import annotations

import os
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.statcache import FileStat


def scan_tree(root: Path) -> list[tuple[str, str, FileStat]]:
    """The regular files under ``root`` as (relative POSIX path, absolute path, stat), sorted, validated.

    Plain strings and ``os`` calls rather than pathlib: this runs for every file on every snapshot.
    """
    try:
        root_stat = os.stat(root)
    except FileNotFoundError:
        raise SnapshotError(f"source {root} does not exist") from None
    except OSError as error:
        raise SnapshotError(f"cannot read {root}: {error.strerror}") from None
    if S_ISREG(root_stat.st_mode):
        return [(root.name, str(root), FileStat.of(root_stat))]
    if not S_ISDIR(root_stat.st_mode):
        raise SnapshotError(f"source {root} is not a regular file or directory")
    files: list[tuple[str, str, FileStat]] = []
    pending = [(str(root), "")]
    while pending:
        directory, rel_prefix = pending.pop()
        try:
            handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise SnapshotError(f"cannot read directory {directory}: {error.strerror}") from None
        try:
            _scan_directory(handle, directory, rel_prefix, files, pending)
        finally:
            os.close(handle)
    if not files:
        raise SnapshotError(f"source {root} has no files; nothing to snapshot")
    files.sort()  # by relative path: it comes first, and no two files share one
    return files


def _scan_directory(
    handle: int, directory: str, rel_prefix: str, files: list[tuple[str, str, FileStat]], pending: list[tuple[str, str]]
) -> None:
    """Add the regular files of one open directory to ``files``, and its folders to ``pending``.

    Names are stat'ed relative to the open directory (``fstatat``, as ``find`` does), so the kernel
    resolves one path step per file rather than the whole path.
    """
    try:
        names = os.listdir(handle)
    except OSError as error:
        raise SnapshotError(f"cannot read directory {directory}: {error.strerror}") from None
    prefix = directory if directory.endswith("/") else directory + "/"
    for name in names:
        try:
            result = os.stat(name, dir_fd=handle)  # a symlink to a file is taken as that file
        except OSError as error:
            raise SnapshotError(f"cannot read {prefix}{name}: {error.strerror}") from None
        if S_ISREG(result.st_mode):
            files.append((rel_prefix + name, prefix + name, FileStat(result.st_size, result.st_mtime_ns, result.st_ino)))
        elif not S_ISDIR(result.st_mode):
            raise SnapshotError(f"{prefix}{name} is not a regular file")
        elif S_ISLNK(os.lstat(name, dir_fd=handle).st_mode):
            raise SnapshotError(f"{prefix}{name} is a symlinked directory; not supported")
        else:
            pending.append((prefix + name, f"{rel_prefix}{name}/"))
