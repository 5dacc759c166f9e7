"""Extra link from a Spark task instance to its application's web UI."""

from __future__ import annotations

from airflow_mlops.links.base import XComURLLink


class SparkUILink(XComURLLink):
    """"Spark UI": the driver's web UI of the task's Spark application (live while the task runs)."""

    name = "Spark UI"
    key = "spark_ui_url"
