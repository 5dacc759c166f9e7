"""Which data files a path holds and in which format: one rule for pandas (training) and Spark (ETL)."""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.errors import InputError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json", ".jsonl": "json"}


class DataFormatError(InputError):
    """A path holds no data files, or files of several or unknown formats."""


def data_files(path: str | Path, data_format: str | None = None) -> tuple[list[Path], str]:
    """The data files at ``path`` (a file, or a directory read recursively in name order) and their format.

    Skips ``_SUCCESS``, ``.crc`` and other ``_``/``.`` files, as Spark writes them. The format is
    ``data_format`` when given, else the one extension every file shares.
    """
    root = Path(path)
    if not root.exists():
        raise DataFormatError(f"{root} does not exist")
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))
    )
    if not files:
        raise DataFormatError(f"no data files in {root}")
    if data_format is not None:
        if data_format not in set(FORMATS.values()):
            raise DataFormatError(f"format {data_format!r} is not one of {', '.join(sorted(set(FORMATS.values())))}")
        return files, data_format
    formats = {FORMATS.get(p.suffix.lower()) for p in files}
    if len(formats) != 1 or None in formats:
        suffixes = sorted({p.suffix.lower() for p in files})
        raise DataFormatError(f"{root}: expected files of one format ({', '.join(sorted(FORMATS))}), found {suffixes}")
    return files, formats.pop()
