"""Logging a trained model to the active MLflow run with the flavor it needs, pinned and signed."""

from __future__ import annotations

from typing import Any

from airflow_mlops.tracking.data import PreparedData
from airflow_mlops.tracking.environment import pinned
from airflow_mlops.tracking.estimators import EstimatorError, is_sklearn
from airflow_mlops.tracking.quiet import integer_schema_hint_hidden, skops_io

MODEL_NAME = "model"


def log_model(model: Any, prepared: PreparedData) -> str:
    """Log ``model`` (sklearn via skops, Spark ML via ``mlflow.spark``); returns its model URI."""
    import mlflow

    if is_sklearn(model):
        from mlflow.models import infer_signature

        sio = skops_io()
        example = prepared.X_train.head(5) if prepared.X_train is not None else None
        with integer_schema_hint_hidden():  # the signature records the training dtypes, integers included
            signature = infer_signature(example, model.predict(example)) if example is not None else None
            info = mlflow.sklearn.log_model(
                model, name=MODEL_NAME, signature=signature, input_example=example,
                # skops, not pickle: safe to load. We built this model, so the types it holds are trusted.
                skops_trusted_types=sio.get_untrusted_types(data=sio.dumps(model)),
                pip_requirements=pinned("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops"),
            )
        return info.model_uri
    if type(model).__module__.startswith("pyspark.ml"):
        # mlflow.spark has not moved to name= yet (MLflow 3.17)
        info = mlflow.spark.log_model(model, artifact_path=MODEL_NAME, pip_requirements=pinned("mlflow", "pyspark"))
        return info.model_uri
    raise EstimatorError(f"cannot log a {type(model).__name__}: return an sklearn estimator or a Spark ML model")
