"""The rules every airflow-mlops hook applies to its connections: optional defaults, database URLs."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException

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


def database_url(conn: Any) -> Any:
    """The SQLAlchemy URL of a database connection: its extra ``url``, else the one its provider's hook builds.

    For a ``postgres`` connection that is ``PostgresHook.sqlalchemy_url`` (the ``postgres`` extra),
    with its driver, ``sqlalchemy_scheme`` and ``sqlalchemy_query`` extras; a type whose hook builds
    no URL needs the extra ``url``.
    """
    from sqlalchemy.engine import make_url

    if conn.extra_dejson.get("url"):
        return make_url(conn.extra_dejson["url"])
    try:
        return conn.get_hook().sqlalchemy_url
    except (AirflowException, AttributeError, NotImplementedError) as error:
        raise MlopsError(
            f"connection {conn.conn_id}: no SQLAlchemy URL for type {conn.conn_type!r} ({error}); give it an extra 'url'"
        ) from None


def connection_database_url(conn_id: str | None) -> str | None:
    """``database_url`` of the connection ``conn_id`` as text with its password, for SQLAlchemy; None without an id."""
    if not conn_id:
        return None
    return database_url(BaseHook.get_connection(conn_id)).render_as_string(hide_password=False)
