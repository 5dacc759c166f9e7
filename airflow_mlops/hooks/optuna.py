"""OptunaStorageHook: an Airflow database connection turned into an Optuna RDB storage with heartbeats."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseHook

from airflow_mlops.hooks.base import database_url, optional_connection


class OptunaStorageHook(BaseHook):
    """Optuna study storage from an Airflow connection: PostgreSQL (or MySQL) in production.

    A ``postgres`` connection (host, port, login, password, schema = database) or any connection
    whose extra ``url`` is an SQLAlchemy URL. With no ``optuna_default`` connection configured, the
    embedded SQLite database ``$AIRFLOW_HOME/airflow_mlops/optuna.db``. The storage runs heartbeats,
    so trials of a killed worker are failed and re-queued (``RetryHeartbeatStaleTrialCallback``).

    :param optuna_conn_id: the Airflow connection id.
    """

    conn_name_attr = "optuna_conn_id"
    default_conn_name = "optuna_default"
    hook_name = "Optuna storage"

    def __init__(self, optuna_conn_id: str | None = default_conn_name) -> None:
        super().__init__()
        self.optuna_conn_id = optuna_conn_id

    def _url(self) -> Any:
        from sqlalchemy.engine import make_url

        conn = optional_connection(self, self.optuna_conn_id)
        if conn is None:
            from airflow_mlops.embedded import embedded_optuna_storage

            return make_url(embedded_optuna_storage())
        return database_url(conn)

    def describe(self) -> str:
        """The storage URL without its password (for tags and logs)."""
        from sqlalchemy.engine import URL

        url = self._url()  # URL.set(password=None) would keep the password: build one without it
        without_password = URL.create(url.drivername, username=url.username, host=url.host, port=url.port,
                                      database=url.database, query=url.query)
        return without_password.render_as_string(hide_password=False)

    def get_storage(self, heartbeat_interval: int = 60, grace_period: int = 120, max_retry: int = 3) -> Any:
        """An ``optuna.storages.RDBStorage`` whose stale trials are failed and re-queued."""
        from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

        return RDBStorage(
            self._url().render_as_string(hide_password=False),
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
        )

    def get_conn(self) -> Any:
        return self.get_storage()


@contextmanager
def optuna_in_task_log() -> Iterator[None]:
    """Optuna inside a task: its records go through Python logging at their own level into the task log
    (its default stderr handler makes each ``Trial ... finished`` line an ERROR there), and no
    ``ExperimentalWarning`` for the experimental features used on purpose here (trial heartbeats, the
    stale-trial retry callback, the matplotlib summary plots)."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield
