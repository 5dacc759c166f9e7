"""Where a batch prediction scores: pandas for an input that fits a worker, Spark for a larger one or when asked."""

from __future__ import annotations

from airflow_mlops.predict.batch import PredictInput

#: Input size (its data files) from which scoring moves from pandas to Spark.
DEFAULT_SPARK_THRESHOLD_BYTES = 512 * 1024 * 1024


def scores_in_spark(source: PredictInput, *, spark_requested: bool,
                    threshold_bytes: int = DEFAULT_SPARK_THRESHOLD_BYTES) -> bool:
    """Whether ``source`` is scored in Spark: a Spark connection was given, or its data is above ``threshold_bytes``."""
    return spark_requested or source.size_bytes() > threshold_bytes
