"""The rules every airflow-mlops hook applies to its connections: optional defaults, database URLs."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_mlops.errors import MlopsError


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


_DRIVERS = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2", "mysql": "mysql+pymysql"}


def database_url(conn: Any, conn_id: str) -> Any:
    """The SQLAlchemy URL of a database connection: its extra ``url``, else built from a postgres or mysql connection."""
    from sqlalchemy.engine import URL, make_url

    if conn.extra_dejson.get("url"):
        return make_url(conn.extra_dejson["url"])
    driver = _DRIVERS.get(conn.conn_type)
    if driver is None:
        raise MlopsError(f"connection {conn_id}: type {conn.conn_type!r} is not a database type; give it an extra 'url'")
    return URL.create(driver, username=conn.login or None, password=conn.password or None,
                      host=conn.host or None, port=conn.port, database=conn.schema or None)
