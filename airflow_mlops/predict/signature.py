"""Checking an input's columns against a model signature before anything is scored or written.

MLflow's own enforcement stops at the first bad column; this names every missing or mistyped
column in one message, with the conversions MLflow accepts (int -> long/double, float -> double).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_mlops.predict.model import PredictError

# numpy dtype kinds (plus "decimal" and "string") each MLflow column type accepts
_ACCEPTS = {
    "boolean": {"b"},
    "integer": {"i", "u"},
    "long": {"i", "u"},
    "float": {"f"},
    "double": {"f", "i", "u", "decimal"},
    "string": {"O", "string"},
    "binary": {"O", "S", "string"},
    "datetime": {"M", "O"},
}


def column_kind(dtype: Any) -> tuple[str, int]:
    """(kind, item size) of a pandas or numpy dtype: numpy's kind letter, or ``string`` for pandas strings."""
    import pandas as pd

    if isinstance(dtype, pd.StringDtype):
        return "string", 0
    return dtype.kind, getattr(dtype, "itemsize", 0)


def spark_kind(data_type: Any) -> tuple[str, int]:
    """(kind, item size) of a Spark SQL type, as :func:`column_kind` gives for the pandas column Spark hands a UDF."""
    from pyspark.sql import types

    simple = {
        types.BooleanType: ("b", 1), types.ByteType: ("i", 1), types.ShortType: ("i", 2),
        types.IntegerType: ("i", 4), types.LongType: ("i", 8), types.FloatType: ("f", 4),
        types.DoubleType: ("f", 8), types.DecimalType: ("decimal", 16), types.StringType: ("string", 0),
        types.BinaryType: ("S", 0), types.TimestampType: ("M", 8), types.TimestampNTZType: ("M", 8),
        types.DateType: ("O", 0),
    }
    return simple.get(type(data_type), (data_type.simpleString(), 0))


def _accepts(expected: str, kind: str, size: int) -> bool:
    if kind not in _ACCEPTS.get(expected, set()):
        return False
    if expected == "integer" and kind in "iu":
        return size <= 4 and not (kind == "u" and size == 4)
    if expected == "float":
        return size <= 4
    return True


def check_columns(signature: Any, columns: Mapping[str, tuple[str, int]], key_columns: Iterable[str] = ()) -> list[str]:
    """The model's input column names, after checking ``columns`` ({name: (kind, size)}) carry them all.

    Raises one :class:`PredictError` naming every missing key or input column and every column
    whose type the model does not accept. Only column-based signatures are supported.
    """
    from mlflow.types.schema import ColSpec

    if signature is None or signature.inputs is None:
        raise PredictError("the model has no input signature; log it with one (mlflow.models.infer_signature) "
                           "so batch prediction can check its input")
    specs = signature.inputs.inputs
    if not all(isinstance(spec, ColSpec) and spec.name for spec in specs):
        raise PredictError("the model's signature is not a list of named columns; batch prediction scores tables")
    missing = [name for name in key_columns if name not in columns]
    mistyped = []
    for spec in specs:
        if spec.name not in columns:
            if spec.required:
                missing.append(spec.name)
            continue
        expected = getattr(spec.type, "name", str(spec.type))
        kind, size = columns[spec.name]
        if not _accepts(expected, kind, size):
            mistyped.append(f"{spec.name} (model expects {expected}, input has {_describe(kind, size)})")
    problems = []
    if missing:
        problems.append(f"missing columns {', '.join(dict.fromkeys(missing))}")
    if mistyped:
        problems.append(f"mistyped columns {', '.join(mistyped)}")
    if problems:
        raise PredictError(f"the input does not match the model signature: {'; '.join(problems)}")
    return [spec.name for spec in specs if spec.name in columns]


def _describe(kind: str, size: int) -> str:
    names = {"b": "boolean", "i": "int", "u": "uint", "f": "float", "O": "object", "S": "bytes", "M": "datetime"}
    return f"{names[kind]}{size * 8}" if kind in "iuf" and size else names.get(kind, kind)
