"""MlflowHook: an Airflow ``mlflow`` connection turned into a configured MLflow client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_mlops.config import embedded_artifact_root
from airflow_mlops.hooks.base import optional_connection

if TYPE_CHECKING:
    from mlflow import MlflowClient

EMBEDDED_UI_URL = "http://127.0.0.1:5000"


@dataclass(frozen=True)
class TrackingSettings:
    tracking_uri: str
    registry_uri: str
    ui_url: str | None
    artifact_root: str | None  # set for the embedded store only; a server decides its own
    auth_header: str | None = None

    def __repr__(self) -> str:  # never show credentials, even in a debugger or a traceback
        return f"TrackingSettings(tracking_uri={self.tracking_uri!r}, registry_uri={self.registry_uri!r})"


class MlflowHook(BaseHook):
    """Talks to an MLflow tracking server (and model registry) described by an Airflow connection.

    Connection ``mlflow``: host, port and schema (``http``/``https``) of the tracking server; login
    and password for basic auth, or a password alone as a bearer token; extras ``registry_uri``
    (a separate registry), ``ui_url`` (base URL for links, when it differs) and ``tracking_uri``
    (any MLflow store URI, overriding host/port). Credentials go to MLflow's requests for this hook's
    session only (see :mod:`airflow_mlops.tracking.auth`), never to the environment or logs.

    With no connection ``mlflow_default`` configured it uses the embedded store: SQLite at
    ``$AIRFLOW_HOME/airflow_mlops/mlflow.db`` with artifacts in ``$AIRFLOW_HOME/airflow_mlops/mlartifacts``.

    :param mlflow_conn_id: the Airflow connection id.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str | None = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {"login": "Username", "password": "Password or token", "schema": "Scheme (http or https)"},
            "placeholders": {
                "host": "mlflow.example.com",
                "port": "5000",
                "schema": "https",
                "extra": '{"registry_uri": "", "ui_url": ""}',
            },
        }

    @cached_property
    def settings(self) -> TrackingSettings:
        from airflow_mlops.tracking.auth import authorization_header

        conn = optional_connection(self, self.mlflow_conn_id)
        if conn is None:
            from airflow_mlops.embedded import embedded_tracking_store

            uri = embedded_tracking_store()
            return TrackingSettings(uri, uri, EMBEDDED_UI_URL, embedded_artifact_root())
        extra = conn.extra_dejson
        if extra.get("tracking_uri"):
            tracking_uri = extra["tracking_uri"]
        else:
            scheme = conn.schema or "http"
            host = (conn.host or "").removeprefix("http://").removeprefix("https://").rstrip("/")
            tracking_uri = f"{scheme}://{host}:{conn.port}" if conn.port else f"{scheme}://{host}"
        ui_url = extra.get("ui_url") or (tracking_uri if tracking_uri.startswith("http") else None)
        return TrackingSettings(
            tracking_uri,
            extra.get("registry_uri") or tracking_uri,
            ui_url.rstrip("/") if ui_url else None,
            None,
            authorization_header(conn.login, conn.password),
        )

    @contextmanager
    def tracking_session(self) -> Iterator[MlflowClient]:
        """Point MLflow (client and fluent API) at this hook's server, with its credentials, for a block."""
        import mlflow

        from airflow_mlops.tracking.auth import credentials_scope

        settings = self.settings
        previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(settings.registry_uri)
        try:
            with credentials_scope(settings.auth_header):
                yield mlflow.MlflowClient(settings.tracking_uri, settings.registry_uri)
        finally:
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])

    def get_conn(self) -> MlflowClient:
        """An MlflowClient for this server. Use ``tracking_session`` where the server needs credentials."""
        import mlflow

        return mlflow.MlflowClient(self.settings.tracking_uri, self.settings.registry_uri)

    def test_connection(self) -> tuple[bool, str]:
        try:
            with self.tracking_session() as client:
                client.search_experiments(max_results=1)
        except Exception as error:  # noqa: BLE001 - the UI shows the message
            return False, str(error)
        return True, f"Connected to MLflow at {self.settings.tracking_uri}"

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        """The MLflow UI page of a run."""
        ui = self.settings.ui_url
        return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}" if ui else None
