"""Extra link from a task instance to the model version it registered."""

from __future__ import annotations

from airflow_mlops.links.base import XComURLLink


class MlflowModelVersionLink(XComURLLink):
    """"MLflow model version": opens the registered model version in the MLflow UI."""

    name = "MLflow model version"
