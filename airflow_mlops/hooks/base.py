"""The one rule every airflow-mlops hook applies to its connection id."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException


def optional_connection(hook: BaseHook, conn_id: str | None) -> Any | None:
    """The connection ``conn_id``, or ``None`` where the hook's embedded default applies.

    That is when no id is given, or the id is the hook's ``default_conn_name`` and no such connection
    is configured. Any other unknown id raises: a typo must not silently run on the default.
    """
    if not conn_id:
        return None
    try:
        return hook.get_connection(conn_id)
    except AirflowNotFoundException:
        if conn_id == hook.default_conn_name:
            return None
        raise
