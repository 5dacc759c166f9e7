"""Loading a restored snapshot as a table, checking it is fit to train on, and splitting it, before any run starts.

The split is the one rule both training and tuning follow: the held-out test part (``test_size``,
seeded) is scored only by the final training run; tuning sees the training part alone.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_mlops.errors import InputError
from airflow_mlops.formats import DataFormatError, data_files
from airflow_mlops.tracking.estimators import build_estimator, model_type
from airflow_mlops.tracking.request import TrainingRequest

READERS = {"csv": "read_csv", "parquet": "read_parquet", "json": "read_json"}


class TrainingDataError(InputError):
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


@dataclass
class PreparedData:
    """The loaded table and its seeded train/test split (``X_test`` is None where tuning must not look)."""

    frame: Any
    X_train: Any = None
    X_test: Any = None
    y_train: Any = None
    y_test: Any = None
    estimator: Any = None
    model_type: str | None = None  # "classifier" / "regressor" for built-in evaluation

    def training_part(self) -> PreparedData:
        """The same data without the held-out test part: what tuning may see."""
        frame = self.frame.loc[self.X_train.index] if self.X_train is not None else self.frame
        return PreparedData(frame, self.X_train, None, self.y_train, None, self.estimator, self.model_type)


def check_split_size(y: Any, target: str, test_size: float, kind: str | None) -> None:
    """Refuse, naming what is needed, a table too small to split into a training and a test part
    (for a classifier: both holding every class), before scikit-learn fails deep in a split."""
    rows = len(y)
    test_rows = math.ceil(rows * test_size)
    classes = int(y.nunique()) if kind == "classifier" else 1
    if kind == "classifier" and classes < 2:
        raise TrainingDataError(f"target {target!r} has a single class in the {rows} rows of input_snapshot; "
                                "a classifier needs at least 2")
    needed = max(math.ceil(classes / test_size), math.ceil(classes / (1 - test_size)), 2)
    if rows < needed or test_rows < classes or rows - test_rows < classes:
        raise TrainingDataError(
            f"input_snapshot has {rows} rows: too few for test_size={test_size:g}"
            + (f" with {classes} classes of {target!r}" if classes > 1 else "")
            + f" (it needs at least {needed} rows, so that each part holds {'every class' if classes > 1 else 'a row'})"
        )


def prepare(request: TrainingRequest) -> PreparedData:
    """Load the data, check it against the request and split it; raises before any run starts."""
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline

    if not 0 < request.test_size < 1:
        raise InputError(f"test_size must be between 0 and 1, got {request.test_size}")
    frame = load_table(request.data_path)
    prepared = PreparedData(frame=frame)
    if request.estimator is not None:
        prepared.estimator = build_estimator(request.estimator, request.hyperparams, request.seed)
        prepared.model_type = model_type(prepared.estimator)
    if request.target is None:
        if request.estimator is not None:
            raise TrainingDataError("an estimator needs a target column")
        return prepared
    numeric = prepared.estimator is not None and not isinstance(prepared.estimator, Pipeline)
    X, y = features_and_target(frame, request.target, request.features, numeric=numeric)
    check_split_size(y, request.target, request.test_size, prepared.model_type)
    stratify = y if prepared.model_type == "classifier" and y.value_counts().min() >= 2 else None
    prepared.X_train, prepared.X_test, prepared.y_train, prepared.y_test = train_test_split(
        X, y, test_size=request.test_size, random_state=request.seed, stratify=stratify
    )
    return prepared
