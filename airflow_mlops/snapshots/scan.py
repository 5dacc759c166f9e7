"""Walking a source tree: its regular files with their stats, validated (no special files, no symlinked folders)."""

from __future__ import annotations

import os
import stat as stat_module
from pathlib import Path

from airflow_mlops.errors import SnapshotError
from airflow_mlops.snapshots.statcache import FileStat


def scan_tree(root: Path) -> list[tuple[str, str, FileStat]]:
    """The regular files under ``root`` as (relative POSIX path, absolute path, stat), sorted, validated.

    Plain strings and ``os.scandir`` rather than pathlib: this runs for every file on every snapshot.
    """
    try:
        root_stat = os.stat(root)
    except FileNotFoundError:
        raise SnapshotError(f"source {root} does not exist") from None
    except OSError as error:
        raise SnapshotError(f"cannot read {root}: {error.strerror}") from None
    if stat_module.S_ISREG(root_stat.st_mode):
        return [(root.name, str(root), FileStat.of(root_stat))]
    if not stat_module.S_ISDIR(root_stat.st_mode):
        raise SnapshotError(f"source {root} is not a regular file or directory")
    files = []
    pending = [(str(root), "")]
    while pending:
        directory, rel_prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as error:
            raise SnapshotError(f"cannot read directory {directory}: {error.strerror}") from None
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, f"{rel_prefix}{entry.name}/"))
                continue
            try:
                result = entry.stat()
            except OSError as error:
                raise SnapshotError(f"cannot read {entry.path}: {error.strerror}") from None
            if stat_module.S_ISDIR(result.st_mode):
                raise SnapshotError(f"{entry.path} is a symlinked directory; not supported")
            if not stat_module.S_ISREG(result.st_mode):
                raise SnapshotError(f"{entry.path} is not a regular file")
            files.append((f"{rel_prefix}{entry.name}", entry.path, FileStat.of(result)))
    if not files:
        raise SnapshotError(f"source {root} has no files; nothing to snapshot")
    files.sort(key=lambda item: item[0])
    return files
