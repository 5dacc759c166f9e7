"""Spark ETL from data snapshots to a new snapshot whose record names its inputs and code.

``derive_snapshot`` is the spine: inputs are resolved first, the output is written into a private
staging directory, made byte-for-byte reproducible (fixed partitioning, sorted rows, part files
named by index and re-encoded by one deterministic Parquet writer), then recorded as a snapshot whose ``parents`` are the input snapshot ids. A failure
anywhere records nothing and removes the staging directory.

The same rows in give the same snapshot id out on ``local[*]`` and on a cluster, as long as the
transformation itself is deterministic (exact arithmetic: sum money as DECIMAL, not DOUBLE, since
floating-point sums depend on the order partitions are merged in).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.formats import data_files
from airflow_mlops.snapshots import SnapshotRecord, SnapshotStore, is_snapshot_id
from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.utils.imports import source_file

#: Name of the one table a transformation returning a single DataFrame writes (at the snapshot root).
SINGLE_TABLE = ""
_PART_FILE = re.compile(r"^part-(\d+)-.*\.parquet$")


class EtlError(MlopsError):
    """An ETL input, transformation or output is not usable; nothing was recorded."""


@dataclass(frozen=True)
class EtlInput:
    """One named input: a local path, and the snapshot it was restored from (None for a plain path)."""

    name: str
    path: Path
    snapshot_id: str | None = None
    uri: str | None = None
    data_format: str | None = None

    def describe(self) -> dict[str, Any]:
        described = {"path": str(self.path)} if self.snapshot_id is None else {"snapshot_id": self.snapshot_id, "uri": self.uri}
        return {**described, "format": self.data_format} if self.data_format else described


def input_path(name: str, value: Any) -> Path | None:
    """The local path an ETL input names, or None when it names a snapshot; an error when it is neither or both.

    A snapshot is a snapshot-producing task's result (a dict), a URI ``<store>#<id>`` or a bare id (hex,
    six characters or more); a path is a ``Path`` or text naming an existing file or folder. Text
    that reads both ways (a folder ``deadbeef`` in the working directory, a file ``a#b``) is refused
    rather than guessed: ``./deadbeef`` or ``<store>#deadbeef`` says which is meant.
    """
    if isinstance(value, Path):
        return _existing(name, value)
    if isinstance(value, dict):
        return None
    text = str(value)
    as_snapshot = "#" in text or is_snapshot_id(text)
    path = Path(text).expanduser()
    if not path.exists():
        if as_snapshot:
            return None
        raise EtlError(f"inputs[{name!r}]: {text} is neither an existing path nor a snapshot id or URI")
    if as_snapshot:
        which = ("a pathlib.Path for the path" if "#" in text
                 else f"'./{text}' for the path or '<store>#{text}' for the snapshot")
        raise EtlError(f"inputs[{name!r}]: {text!r} names both the existing path {path.absolute()} and a snapshot "
                       f"{'URI' if '#' in text else 'id'}; give {which}")
    return path.absolute()


def _existing(name: str, path: Path) -> Path:
    path = path.expanduser()
    if not path.exists():
        raise EtlError(f"inputs[{name!r}]: {path} is not an existing path")
    return path.absolute()


def code_identity(code: Callable[..., Any] | str | os.PathLike) -> dict[str, str]:
    """What produced an output: a callable's dotted name and module file, or an application file; with a digest."""
    if callable(code):
        name, source = f"{code.__module__}:{code.__qualname__}", source_file(code)
    else:
        name = source = str(code)
    identity = {"transform": name}
    if source and Path(source).is_file():
        identity.update(code_file=source, code_digest=digest_bytes(Path(source).read_bytes()))
    return identity


def read_input(spark: Any, item: EtlInput) -> Any:
    """A DataFrame of one input's files (CSV with header and inferred types, Parquet, JSON lines)."""
    files, data_format = data_files(item.path, item.data_format)
    reader = spark.read.format(data_format)
    if data_format == "csv":
        reader = reader.options(header=True, inferSchema=True)
    return reader.load([file.as_uri() for file in files])


def write_table(frame: Any, path: Path, partitions: int, sort_by: list[str] | None) -> None:
    """Write ``frame`` as Parquet in a reproducible layout: ``partitions`` hash partitions, rows sorted.

    Hash partitioning on the sort columns puts each row in the same file on any cluster; sorting
    within files (by every column of a sortable type unless ``sort_by``) fixes the order of rows.
    A table with no sortable column is written as one file in the order Spark produces.
    """
    from pyspark.sql.types import ArrayType, MapType, StructType

    columns = sort_by or [
        field.name for field in frame.schema.fields if not isinstance(field.dataType, (ArrayType, MapType, StructType))
    ]
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise EtlError(f"sort_by columns {missing} are not in the output; columns: {', '.join(frame.columns)}")
    ordered = frame.repartition(partitions, *columns).sortWithinPartitions(*columns) if columns else frame.coalesce(1)
    ordered.write.mode("error").parquet(path.as_uri())


def spark_transform(
    spark: Any,
    inputs: list[EtlInput],
    transform: Callable[..., Any],
    *,
    partitions: int = 1,
    sort_by: list[str] | None = None,
    transform_kwargs: Mapping[str, Any] | None = None,
) -> Callable[[Path], None]:
    """A writer for :func:`derive_snapshot`: read the inputs, check none is empty, apply ``transform``.

    ``transform(spark, inputs, **transform_kwargs)`` gets ``{name: DataFrame}`` and returns a
    DataFrame (one table at the snapshot root) or ``{name: DataFrame}`` (one folder per table).
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    def write(output: Path) -> None:
        try:
            frames = {item.name: read_input(spark, item) for item in inputs}
            for item in inputs:
                if frames[item.name].isEmpty():
                    raise EtlError(f"input {item.name!r} ({item.path}) has no rows; nothing to transform")
            result = transform(spark, frames, **dict(transform_kwargs or {}))
            tables = result if isinstance(result, Mapping) else {SINGLE_TABLE: result}
            for name, frame in tables.items():
                if not hasattr(frame, "schema") or not hasattr(frame, "write"):
                    raise EtlError(f"transform returned {type(frame).__name__} for table {name!r}; return a Spark DataFrame")
                write_table(frame, output / name if name else output, partitions, sort_by)
        except (PySparkException, Py4JJavaError) as error:
            raise EtlError(f"Spark failed: {_first_line(error)}") from error

    return write


def _first_line(error: BaseException) -> str:
    """The message of a Spark error without its stack trace (a Java error's own message, not py4j's)."""
    java_exception = getattr(error, "java_exception", None)
    text = (java_exception.toString() if java_exception is not None else str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def canonicalize_output(output: Path) -> None:
    """Make Spark's Parquet output reproducible byte for byte, so equal rows give an equal snapshot id.

    Drops Spark's bookkeeping files (``_SUCCESS``, ``.crc``), names part files by index only
    (``part-00003-<random uuid>-c000.snappy.parquet`` becomes ``part-00003.parquet``), and re-encodes
    each with pyarrow: parquet-mr lists a column's encodings from a Java hash set, in an order that
    changes from one JVM to the next, so Spark's own files differ between runs for the same rows.
    """
    import pyarrow.parquet as pq

    for path in sorted(p for p in output.rglob("*") if p.is_file()):
        if path.name.startswith(("_", ".")):
            path.unlink()
            continue
        if path.suffix != ".parquet":
            continue
        match = _PART_FILE.match(path.name)
        target = path.with_name(f"part-{match.group(1)}.parquet") if match else path
        temp = path.with_name(f".{target.name}.part")
        pq.write_table(pq.read_table(path), temp, compression="snappy")
        os.replace(temp, target)
        if target != path:
            path.unlink()


def describe_tables(output: Path) -> dict[str, dict[str, Any]]:
    """Rows, files and column types of each Parquet table under ``output``, read from file footers."""
    import pyarrow.parquet as pq

    tables: dict[str, dict[str, Any]] = {}
    for path in sorted(output.rglob("*.parquet")):
        name = path.parent.relative_to(output).as_posix()
        metadata = pq.read_metadata(path)
        table = tables.setdefault(name if name != "." else SINGLE_TABLE, {"rows": 0, "files": 0})
        table["rows"] += metadata.num_rows
        table["files"] += 1
        table["schema"] = {field.name: str(field.type) for field in metadata.schema.to_arrow_schema()}
    if not tables:
        raise EtlError("the transformation wrote no Parquet files")
    return tables


def derive_snapshot(
    store: SnapshotStore,
    inputs: list[EtlInput],
    write: Callable[[Path], None],
    *,
    staging_root: str | os.PathLike,
    code: Mapping[str, str],
    airflow: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[SnapshotRecord, dict[str, dict[str, Any]]]:
    """Run ``write(output_dir)`` and record its Parquet output as a snapshot derived from ``inputs``.

    The record's ``parents`` are the input snapshot ids; its ``extra`` names every input, the code
    (``code_identity``) and each table's rows and schema. Returns the record and the tables.
    """
    names = [item.name for item in inputs]
    if not inputs or len(set(names)) != len(names):
        raise EtlError(f"give one or more inputs with distinct names, got {names}")
    staging = Path(staging_root) / uuid.uuid4().hex
    staging.parent.mkdir(parents=True, exist_ok=True)
    output = staging / "output"
    try:
        write(output)
        canonicalize_output(output)
        tables = describe_tables(output)
        record = store.snapshot(
            output,
            airflow=airflow,
            parents=sorted({item.snapshot_id for item in inputs if item.snapshot_id}),
            source_label=f"spark:{code.get('transform', 'transform')}",
            cache_stats=False,
            extra={
                **dict(extra or {}),
                "inputs": {item.name: item.describe() for item in inputs},
                "code": dict(code),
                "tables": tables,
            },
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record, tables
