"""OpenLineage facets for snapshots, model versions and the runs that use them (openlineage-python, no Airflow).

A dataset's identity comes from :mod:`airflow_mlops.lineage.datasets`; here it gets its version facet
(the snapshot id, or the model version) and, for a tabular snapshot, its schema: the Arrow column
types of each table, as a derived snapshot's record holds them (``extra["tables"]``) and as read
from the first file of each table otherwise, so every event about one snapshot names the same schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attr
from openlineage.client.facet_v2 import DatasetFacet, RunFacet, dataset_version_dataset, schema_dataset

from airflow_mlops.lineage.datasets import DatasetRef

MAX_SCHEMA_TABLES = 20  # beyond this, a snapshot is a file tree more than a set of tables: no schema facet
RUN_FACET_KEY = "airflowMlops"


@attr.define
class MlopsRunFacet(RunFacet):
    """Ties a task's run to airflow-mlops' own records: the MLflow run it made, the Optuna study, the code.

    ``mlflowRunId``: the run this task recorded (training, or tuning's parent run); ``modelRunId``:
    the training run of the model it registered or scored; ``codeDigests``: BLAKE3 digests of the
    files that ran (``dag_file``, ``train_module``, ``transform``).
    """

    mlflowRunId: str | None = None  # noqa: N815 - OpenLineage facets name fields in camelCase
    mlflowExperimentId: str | None = None  # noqa: N815
    modelRunId: str | None = None  # noqa: N815
    studyName: str | None = None  # noqa: N815
    gitCommit: str | None = None  # noqa: N815
    codeDigests: dict[str, str] | None = None  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return "urn:airflow-mlops:facets:MlopsRunFacet:1-0-0"  # no published JSON schema: a stable name


def dataset_facets(ref: DatasetRef, tables: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, DatasetFacet]:
    """The ``version`` facet of ``ref`` and, when ``tables`` are known, the ``schema`` facet."""
    facets: dict[str, DatasetFacet] = {"version": dataset_version_dataset.DatasetVersionDatasetFacet(ref.version)}
    if tables:
        facets["schema"] = schema_facet(tables)
    return facets


def schema_facet(tables: Mapping[str, Mapping[str, str]]) -> schema_dataset.SchemaDatasetFacet:
    """Columns of a single table (``""``) as fields; several tables as one struct field each."""
    Field = schema_dataset.SchemaDatasetFacetFields

    def columns(table: Mapping[str, str]) -> list[Any]:
        return [Field(name=name, type=kind) for name, kind in table.items()]

    if set(tables) == {""}:
        return schema_dataset.SchemaDatasetFacet(fields=columns(tables[""]))
    return schema_dataset.SchemaDatasetFacet(
        fields=[Field(name=name, type="struct", fields=columns(table)) for name, table in sorted(tables.items())]
    )


def snapshot_tables(record: Any, path: str | Path | None) -> dict[str, dict[str, str]] | None:
    """The tables of a snapshot: as its record holds them (derived snapshots), else read from its files at ``path``."""
    recorded = (record.extra or {}).get("tables")
    if recorded:
        return {name: dict(table.get("schema") or {}) for name, table in recorded.items()}
    return table_schemas(path) if path is not None else None


def table_schemas(path: str | Path) -> dict[str, dict[str, str]] | None:
    """Arrow column types of each table of the CSV or Parquet files at ``path``, cheaply.

    A table is a folder, as Spark writes them (``""`` for files directly under ``path``, or ``path``
    itself), typed from its first file: a Parquet footer, or the first block of a CSV (1 MB, the
    types Arrow infers from it). None for other formats, mixed ones, or more than MAX_SCHEMA_TABLES.
    """
    from airflow_mlops.formats import DataFormatError, data_files

    try:
        files, data_format = data_files(path)
    except DataFormatError:
        return None
    if data_format not in ("csv", "parquet"):
        return None
    root = Path(path)
    first: dict[str, Path] = {}
    for file in files:
        folder = file.parent.relative_to(root).as_posix() if file != root else "."
        first.setdefault("" if folder == "." else folder, file)
    if len(first) > MAX_SCHEMA_TABLES:
        return None
    try:
        return {table: _file_schema(file, data_format) for table, file in first.items()}
    except (OSError, ValueError):  # not readable as its extension says (pyarrow's errors): no schema facet
        return None


def _file_schema(path: Path, data_format: str) -> dict[str, str]:
    if data_format == "parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
    else:
        import pyarrow.csv

        with pyarrow.csv.open_csv(path) as reader:
            schema = reader.schema
    return {field.name: str(field.type) for field in schema}


def producing_record(records: Iterable[Any], identity: Mapping[str, Any]) -> Any:
    """The record that names an input snapshot: the one this DAG run made, else the oldest (its first producer).

    One snapshot id can have several records (the same bytes snapshotted again, or by other tasks);
    the upstream task of the same run is what the reading task consumed, and the first producer is
    a name that later re-snapshots of the same bytes do not change.
    """
    ordered = sorted(records, key=lambda record: record.created)
    same_run = [r for r in ordered if (r.airflow or {}).get("dag_id") == identity.get("dag_id")
                and (r.airflow or {}).get("run_id") == identity.get("run_id")]
    return (same_run or ordered)[0]
