"""Spark transformations for the operator tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

from airflow_mlops.etl.fraud import customer_features

#: Spark's job description of ``endless_aggregation``, to find its job in the driver's REST API.
ENDLESS_JOB = "endless aggregation"


def endless_aggregation(spark, inputs):
    """A job that would run for hours, described as ENDLESS_JOB in Spark's job list."""
    spark.sparkContext.setJobDescription(ENDLESS_JOB)
    return spark.range(0, 10**13, numPartitions=4).selectExpr("id % 7 AS k").groupBy("k").count()


def report_conf(spark, report: str) -> None:
    """Write to ``report`` whether the job has each property of EXPECTED_SPARK_CONF (JSON): booleans, never values."""
    conf = spark.sparkContext.getConf()
    expected = json.loads(os.environ["EXPECTED_SPARK_CONF"])
    Path(report).write_text(json.dumps({key: conf.get(key, None) == value for key, value in expected.items()}))


def features_reporting_conf(spark, inputs, report):
    """``customer_features``, after reporting which expected Spark properties the session got."""
    report_conf(spark, report)
    return customer_features(spark, inputs)
