"""Predict staging: folders a killed batch prediction left behind, found by a day without change, and removed."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

#: Age after which a predict-staging folder belongs to a prediction that was killed.
STAGING_MAX_AGE_SECONDS = 24 * 3600


def stale_staging(root: str | os.PathLike, *, max_age_seconds: float = STAGING_MAX_AGE_SECONDS, now: float | None = None) -> list[Path]:
    """Folders under ``root`` in which nothing changed for ``max_age_seconds``: left by killed batch predictions."""
    root = Path(root)
    if not root.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - max_age_seconds
    return sorted(folder for folder in root.iterdir() if folder.is_dir() and _newest_mtime(folder) < cutoff)


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
    return newest


def remove_stale_staging(root: str | os.PathLike, *, max_age_seconds: float = STAGING_MAX_AGE_SECONDS,
                         dry_run: bool = False) -> list[Path]:
    """Remove (unless ``dry_run``) and return the stale folders under ``root``."""
    stale = stale_staging(root, max_age_seconds=max_age_seconds)
    if not dry_run:
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
    return stale
