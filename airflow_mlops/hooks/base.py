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


#: SQLAlchemy driver of a postgres connection's URL: psycopg2, which the ``postgres`` extra declares.
POSTGRES_DRIVER = "postgresql+psycopg2"


def database_url(conn: Any) -> Any:
    """The SQLAlchemy URL of a database connection: its extra ``url``, else the one its provider's hook builds.

    For a ``postgres`` connection that is ``PostgresHook.sqlalchemy_url`` (the ``postgres`` extra),
    with its ``sqlalchemy_query`` extra, and psycopg2 (the driver that extra declares) unless its
    ``sqlalchemy_scheme`` extra names another; a type whose hook builds no URL needs the extra ``url``.
    """
    from sqlalchemy.engine import make_url

    extra = conn.extra_dejson
    if extra.get("url"):
        return make_url(extra["url"])
    hook_params = {"sqlalchemy_scheme": extra.get("sqlalchemy_scheme") or POSTGRES_DRIVER} if conn.conn_type == "postgres" else {}
    try:
        return conn.get_hook(hook_params=hook_params).sqlalchemy_url
    except (AirflowException, AttributeError, NotImplementedError) as error:
        raise MlopsError(
            f"connection {conn.conn_id}: no SQLAlchemy URL for type {conn.conn_type!r} ({error}); give it an extra 'url'"
        ) from None


def connection_database_url(conn_id: str | None) -> str | None:
    """``database_url`` of the connection ``conn_id`` as text with its password, for SQLAlchemy; None without an id."""
    if not conn_id:
        return None
    return database_url(BaseHook.get_connection(conn_id)).render_as_string(hide_password=False)
