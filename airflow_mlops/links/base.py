"""Extra links whose URL the task stores in XCom while it runs (the URL is only known at run time)."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom


class XComURLLink(BaseOperatorLink):
    """A link to the URL the task instance pushed under ``key``; empty until it has."""

    key: ClassVar[str]

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return XCom.get_value(key=self.key, ti_key=ti_key) or ""

    @classmethod
    def persist(cls, context: Any, url: str | None) -> None:
        """Store the URL for the link, as soon as it is known, so a running task links too."""
        if url:
            context["ti"].xcom_push(key=cls.key, value=url)
