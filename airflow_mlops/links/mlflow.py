"""Extra links from a task instance to what it produced in MLflow."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom


class MlflowRunLink(BaseOperatorLink):
    """"MLflow run": opens the run the task instance logged in the MLflow UI."""

    name = "MLflow run"
    key: ClassVar[str] = "mlflow_run_url"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return XCom.get_value(key=self.key, ti_key=ti_key) or ""

    @classmethod
    def persist(cls, context: Any, url: str | None) -> None:
        """Store the URL for the link (as soon as the run exists, so a running task links too)."""
        if url:
            context["ti"].xcom_push(key=cls.key, value=url)
