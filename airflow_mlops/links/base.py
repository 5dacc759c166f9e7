"""Extra links whose URL the task stores in XCom while it runs (the URL is only known at run time)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom


class XComURLLink(BaseOperatorLink):
    """A link to the URL the task instance pushed under the link's ``xcom_key``; empty until it has.

    The key is Airflow's own (``_link_<ClassName>``), the one the UI and the REST API read, so the
    link works while the task is still running, not only once the task runner stores it at the end.
    """

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return XCom.get_value(key=self.xcom_key, ti_key=ti_key) or ""

    @classmethod
    def persist(cls, context: Any, url: str | None) -> None:
        """Store the URL for the link, as soon as it is known."""
        if url:
            context["ti"].xcom_push(key=cls().xcom_key, value=url)
