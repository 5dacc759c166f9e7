"""Spark transformations for the operator tests."""

from __future__ import annotations

import os
from pathlib import Path


def endless_aggregation(spark, inputs):
    """A job that would run for hours; says it started in TRAIN_MARKER_DIR/started."""
    Path(os.environ["TRAIN_MARKER_DIR"], "started").touch()
    return spark.range(0, 10**13, numPartitions=4).selectExpr("id % 7 AS k").groupBy("k").count()
