"""Extra links from a Spark task instance to its application's web UIs."""

from __future__ import annotations

from airflow_mlops.links.base import XComURLLink


class SparkUILink(XComURLLink):
    """"Spark driver UI (while running)": the driver's web UI, which stops with the application."""

    name = "Spark driver UI (while running)"


class SparkApplicationLink(XComURLLink):
    """"Spark application": the application's page on its standalone master's web UI, which outlives it."""

    name = "Spark application"
