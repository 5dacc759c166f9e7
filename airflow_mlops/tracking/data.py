"""Loading a restored snapshot as a table, and checking it is fit to train on, before any run starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.formats import DataFormatError, data_files

READERS = {"csv": "read_csv", "parquet": "read_parquet", "json": "read_json"}


class TrainingDataError(MlopsError):
    """The input data cannot be trained on as asked."""


def load_table(path: str | Path) -> Any:
    """A pandas DataFrame from a CSV, Parquet or JSON file, or a directory of such files of one format.

    Directory parts are read in name order (Spark's ``part-*`` files), skipping ``_SUCCESS`` and dot files.
    """
    import pandas as pd

    try:
        files, data_format = data_files(path)
    except DataFormatError as error:
        raise TrainingDataError(str(error)) from None
    reader = getattr(pd, READERS[data_format])
    options = {"lines": True} if files[0].suffix.lower() == ".jsonl" else {}
    frames = [reader(p, **options) for p in files]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def features_and_target(frame: Any, target: str, features: list[str] | None, numeric: bool) -> tuple[Any, Any]:
    """Split a table into features X and target y, refusing what training would choke on.

    ``numeric`` asks that every feature be a number (a bare estimator; a Pipeline may encode).
    """
    if target not in frame.columns:
        raise TrainingDataError(f"target column {target!r} not in the data; columns: {', '.join(map(str, frame.columns))}")
    missing = [column for column in (features or []) if column not in frame.columns]
    if missing:
        raise TrainingDataError(f"feature columns {missing} not in the data")
    y = frame[target]
    if y.isna().any():
        raise TrainingDataError(f"target column {target!r} has {int(y.isna().sum())} missing (NaN) values; drop or fill them first")
    X = frame[features] if features else frame.drop(columns=[target])
    if X.shape[1] == 0:
        raise TrainingDataError("no feature columns left besides the target")
    if numeric:
        text_columns = [str(c) for c in X.columns if not (X[c].dtype.kind in "biuf")]
        if text_columns:
            raise TrainingDataError(
                f"non-numeric feature columns {text_columns}: pass features= to pick numeric ones, "
                "or an sklearn Pipeline that encodes them"
            )
    return X, y
