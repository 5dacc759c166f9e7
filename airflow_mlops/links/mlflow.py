"""Extra links from a task instance to what it produced in MLflow."""

from __future__ import annotations

from airflow_mlops.links.base import XComURLLink


class MlflowRunLink(XComURLLink):
    """"MLflow run": opens the run the task instance logged in the MLflow UI."""

    name = "MLflow run"
