"""Score a restored data snapshot with a resolved model and record the predictions as a derived snapshot.

Pandas scores in this process (``mlflow.pyfunc.load_model(...).predict``); Spark scores through
``mlflow.pyfunc.spark_udf`` (``env_manager="local"``: executors use this Python environment). Both
write the key columns and the prediction column(s) as one Parquet file, rows sorted by the key
columns, re-encoded by one pyarrow writer without writer-specific metadata, so the same rows give
the same snapshot id on either path (for key columns that identify rows, and an input whose column
types pandas and Spark read alike, such as Parquet). The output is staged in a private folder and
recorded only when complete: a failure records nothing, and the staging folder goes in every case.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_mlops.etl.spark import EtlInput, describe_tables, read_input, write_table
from airflow_mlops.formats import data_files
from airflow_mlops.predict.model import PredictError, ResolvedModel
from airflow_mlops.predict.signature import check_columns, column_kind, spark_kind
from airflow_mlops.snapshots import SnapshotRecord, SnapshotStore
from airflow_mlops.tracking.quiet import skops_io

OUTPUT_FILE = "part-00000.parquet"


@dataclass(frozen=True)
class PredictInput:
    """The snapshot to score: its restored local files, id and URI, and its format (default from extensions)."""

    path: Path
    snapshot_id: str
    uri: str
    data_format: str | None = None

    def size_bytes(self) -> int:
        """Total size of its data files, which decides pandas or Spark."""
        files, _ = data_files(self.path, self.data_format)
        return sum(file.stat().st_size for file in files)


def batch_predict(
    store: SnapshotStore,
    source: PredictInput,
    model: ResolvedModel,
    *,
    key_columns: Sequence[str],
    prediction_column: str = "prediction",
    staging_root: str | os.PathLike,
    spark_session: Callable[[], AbstractContextManager[Any]] | None = None,
    airflow: Mapping[str, Any] | None = None,
) -> tuple[SnapshotRecord, int]:
    """Score ``source`` with ``model`` (in Spark when ``spark_session`` is given) into a snapshot in ``store``.

    The record's ``parents`` are the input snapshot; its ``extra`` names the model (name, version,
    run, URI, the alias it was resolved from), the key and prediction columns, the engine and the
    output table. Returns the record and the number of rows scored.
    """
    keys = list(key_columns)
    if not keys or len(set(keys)) != len(keys) or prediction_column in keys:
        raise PredictError(f"key_columns must be distinct column names other than {prediction_column!r}, got {keys}")
    import mlflow

    signature = mlflow.models.get_model_info(model.model_uri).signature
    staging = Path(staging_root) / uuid.uuid4().hex
    staging.mkdir(parents=True)
    output = staging / "output"
    output.mkdir()
    try:
        if spark_session is None:
            engine = {"engine": "pandas"}
            _score_pandas(source, model, signature, keys, prediction_column, output / OUTPUT_FILE)
        else:
            with spark_session() as spark:
                engine = {"engine": "spark", "master": spark.sparkContext.master}
                _score_spark(spark, source, model, signature, keys, prediction_column, staging / "spark", output)
        tables = describe_tables(output)
        record = store.snapshot(
            output,
            airflow=airflow,
            parents=[source.snapshot_id],
            source_label=f"predict:{model.model_uri}",
            cache_stats=False,
            extra={
                "model": model.describe(),
                "input": {"snapshot_id": source.snapshot_id, "uri": source.uri},
                "key_columns": keys,
                "prediction": engine,
                "tables": tables,
            },
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record, sum(table["rows"] for table in tables.values())


def _score_pandas(source: PredictInput, model: ResolvedModel, signature: Any, keys: list[str],
                  prediction_column: str, path: Path) -> None:
    """Load the whole input, check it, predict in this process, write the sorted result."""
    import mlflow
    import pandas as pd

    from airflow_mlops.tracking.data import load_table

    skops_io()  # an sklearn model's loader imports skops; imported first here, quietly
    frame = load_table(source.path)
    inputs = check_columns(signature, {str(name): column_kind(dtype) for name, dtype in frame.dtypes.items()}, keys)
    predictions = mlflow.pyfunc.load_model(model.model_uri).predict(frame[inputs])
    if isinstance(predictions, pd.DataFrame):
        scored = predictions.reset_index(drop=True)
    elif getattr(predictions, "ndim", 1) == 2:
        scored = pd.DataFrame(predictions).add_prefix(f"{prediction_column}_")
    else:
        scored = pd.DataFrame({prediction_column: pd.Series(predictions).reset_index(drop=True)})
    result = pd.concat([frame[keys].reset_index(drop=True), scored], axis=1)
    result = result.sort_values(keys, kind="mergesort", na_position="first", ignore_index=True)
    _write_canonical(_arrow_table(result), path)


def _score_spark(spark: Any, source: PredictInput, model: ResolvedModel, signature: Any, keys: list[str],
                 prediction_column: str, spark_output: Path, output: Path) -> None:
    """Read the input with Spark, check its schema, score through a pandas UDF, write the sorted result."""
    import mlflow
    import pyarrow.parquet as pq
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    from pyspark.sql import functions
    from pyspark.sql.types import StructType

    from airflow_mlops.etl.spark import _first_line

    try:
        frame = read_input(spark, EtlInput("input", source.path, source.snapshot_id, source.uri, source.data_format))
        inputs = check_columns(signature, {field.name: spark_kind(field.dataType) for field in frame.schema.fields}, keys)
        udf = mlflow.pyfunc.spark_udf(spark, model.model_uri, env_manager="local",
                                      result_type=_spark_result_type(signature))
        scored = frame.select(*keys, udf(functions.struct(*inputs)).alias(prediction_column))
        if isinstance(scored.schema[prediction_column].dataType, StructType):
            scored = scored.select(*keys, f"{prediction_column}.*")
        write_table(scored, spark_output, 1, keys)
    except (PySparkException, Py4JJavaError) as error:
        raise PredictError(f"Spark failed: {_first_line(error)}") from error
    (part,) = sorted(spark_output.glob("part-*.parquet"))
    _write_canonical(_arrow_table(pq.read_table(part)), output / OUTPUT_FILE)


def _spark_result_type(signature: Any) -> str | None:
    """A scalar Spark type for a model whose output is a 1-D tensor (what ``infer_signature`` gives ``predict``).

    ``spark_udf`` would make it an array per row; None lets it infer from a column-based output.
    """
    from mlflow.types.schema import TensorSpec

    outputs = signature.outputs.inputs if signature.outputs is not None else []
    if len(outputs) != 1 or not isinstance(outputs[0], TensorSpec) or len(outputs[0].shape) != 1:
        return None
    scalar = {"b": "boolean", "O": "string", "U": "string"}
    dtype = outputs[0].type
    sized = {("i", 4): "integer", ("i", 8): "long", ("f", 4): "float", ("f", 8): "double"}
    return sized.get((dtype.kind, dtype.itemsize)) or scalar.get(dtype.kind)


def _arrow_table(data: Any) -> Any:
    """An Arrow table of ``data`` (pandas or Arrow) in the types both writers agree on, in one chunk per column.

    One chunk: the Parquet writer falls back from dictionary encoding at a point that depends on
    the batches it is fed, so a table read back from Spark's file (chunked by its pages) would encode
    differently from the same rows out of pandas, once a column has more distinct values than a
    dictionary page holds.
    """
    import pyarrow as pa

    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    narrowed = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}
    schema = pa.schema([field.with_type(narrowed.get(field.type, field.type)) for field in table.schema])
    return table.cast(schema).replace_schema_metadata(None).combine_chunks()


def _write_canonical(table: Any, path: Path) -> None:
    """One deterministic Parquet encoding for both engines."""
    import pyarrow.parquet as pq

    pq.write_table(table, path, compression="snappy")
