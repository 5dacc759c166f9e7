"""MlflowHook: an Airflow ``mlflow`` connection turned into a configured MLflow client."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, cached_property, wraps
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseHook
from airflow.sdk.configuration import conf

from airflow_mlops.config import EMBEDDED_MLFLOW_UI_URL, embedded_artifact_root
from airflow_mlops.hooks.base import optional_connection

if TYPE_CHECKING:
    from mlflow import MlflowClient

_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")

# MLflow's records go through Python logging at their own level into Airflow's task log: MLflow's own
# stderr handler (its default) makes the task log show each INFO line as an ERROR. Read when mlflow is
# first imported, which no DAG file or operator module does; an explicit setting is left as it is.
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")


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
    (any MLflow store URI, overriding host/port). Credentials go to MLflow's requests to the tracking
    server only (see :mod:`airflow_mlops.tracking.auth`), never to another host, the environment or
    logs: during each call of ``get_conn``'s client, and during a ``tracking_session`` block (which
    serves MLflow's fluent API too).

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
            ui_url = conf.get("airflow_mlops", "mlflow_ui_url", fallback=EMBEDDED_MLFLOW_UI_URL).rstrip("/")
            return TrackingSettings(uri, uri, ui_url or None, embedded_artifact_root())
        extra = conn.extra_dejson
        header = authorization_header(conn.login, conn.password)
        if extra.get("tracking_uri"):
            tracking_uri, uri_header = _without_credentials(extra["tracking_uri"])
            header = header or uri_header
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
            header,
        )

    @contextmanager
    def tracking_session(self) -> Iterator[MlflowClient]:
        """Point MLflow (client and fluent API) at this hook's server, with its credentials, for a block.

        Afterwards MLflow's tracking and registry URIs and the process environment are as they were.
        """
        from airflow_mlops.tracking.auth import credentials_scope

        settings = self.settings
        with _mlflow_uris(settings.tracking_uri, settings.registry_uri), credentials_scope(
            settings.auth_header, settings.tracking_uri
        ):
            yield self.get_conn()

    def get_conn(self) -> MlflowClient:
        """An MlflowClient for this connection's server, sending its credentials on each of its calls.

        Each public method of the client runs in the connection's credentials scope (see
        :mod:`airflow_mlops.tracking.auth`), artifact transfers of the call included; between calls
        the credentials are nowhere. MLflow's fluent API (``mlflow.log_metric``) needs ``tracking_session``.
        """
        settings = self.settings
        return _credentialed_client_class()(settings.tracking_uri, settings.registry_uri, settings.auth_header)

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

    def model_version_url(self, name: str, version: str | int) -> str | None:
        """The MLflow UI page of a registered model's version."""
        ui = self.settings.ui_url
        return f"{ui}/#/models/{quote(name, safe='')}/versions/{version}" if ui else None


@cache
def _credentialed_client_class() -> type[MlflowClient]:
    """``MlflowClient`` whose public methods each run in the credentials scope of the client's server.

    The credentials scope is process-wide (MLflow sends requests from its own worker threads too),
    so a call's uploads and downloads carry the header, to the tracking server's origin only. Built
    on first use, so importing the hook does not import MLflow.
    """
    from mlflow import MlflowClient

    from airflow_mlops.tracking.auth import credentials_scope

    class CredentialedMlflowClient(MlflowClient):
        def __init__(self, tracking_uri: str, registry_uri: str, auth_header: str | None) -> None:
            self._auth_header = auth_header
            super().__init__(tracking_uri, registry_uri)

        def __repr__(self) -> str:  # never the header
            return f"CredentialedMlflowClient(tracking_uri={self.tracking_uri!r})"

    def scoped(method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        def call(self: CredentialedMlflowClient, *args: Any, **kwargs: Any) -> Any:
            with credentials_scope(self._auth_header, self.tracking_uri):
                return method(self, *args, **kwargs)

        return call

    for name, member in vars(MlflowClient).items():
        if inspect.isfunction(member) and not name.startswith("_"):
            setattr(CredentialedMlflowClient, name, scoped(member))
    return CredentialedMlflowClient


@contextmanager
def _mlflow_uris(tracking_uri: str, registry_uri: str) -> Iterator[None]:
    """MLflow's global tracking and registry URIs for a block, put back exactly after it; never exported.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` also write MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI
    into the environment for subprocesses (mlflow/tracking/_tracking_service/utils.py and
    _model_registry/utils.py): a password in a URI would reach every child process, and "not set"
    cannot be restored through them (the getters return a resolved default, which would be exported).
    The module globals those setters assign win over the environment in ``get_tracking_uri`` and
    ``get_registry_uri``, so only they are set here, resetting MLflow's tracer provider on a change as
    ``set_tracking_uri`` does. The two variables are put back too, should code in the block call the setters.
    """
    from mlflow.tracing.provider import reset as reset_tracer_provider
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    def assign(tracking_value: str | None, registry_value: str | None) -> None:
        changed = tracking._tracking_uri != tracking_value
        tracking._tracking_uri, registry._registry_uri = tracking_value, registry_value
        if changed:
            reset_tracer_provider()

    previous = tracking._tracking_uri, registry._registry_uri
    environment = {name: os.environ.get(name) for name in _URI_VARIABLES}
    assign(tracking_uri, registry_uri)
    try:
        yield
    finally:
        assign(*previous)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _without_credentials(uri: str) -> tuple[str, str | None]:
    """An http(s) URI without its ``user:password@`` part, and that part as an Authorization header.

    So the password is sent as a header to its server only, and never shows in links, in MLflow's
    "View run at" lines or in tags; other store URIs (a database URL) are returned as they are.
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    from airflow_mlops.tracking.auth import authorization_header

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri, None
    host = parts.netloc.rpartition("@")[2]
    header = authorization_header(unquote(parts.username or ""), unquote(parts.password or ""))
    return urlunsplit(parts._replace(netloc=host)), header
