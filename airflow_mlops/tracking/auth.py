"""Credentials for one MLflow server, scoped to a block of code, sent to that server only.

MLflow reads credentials from MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, which every library in the
process (and every subprocess) would see, and sends them to every host it talks to: the tracking
server, a separate model registry, an artifact server. Instead, ``AuthorizationAuthProvider`` is an
MLflow request-auth plugin (entry point ``mlflow.request_auth_provider``, chosen by naming it in
MLFLOW_TRACKING_AUTH while ``credentials_scope`` is active). MLflow hands the auth object it returns
to ``requests`` for each call (``http_request`` in mlflow/utils/rest_utils.py), which lets it see the
URL: the ``Authorization`` header goes only to the scheme, host and port the credentials belong to.
MLflow's request-header plugins, by contrast, are never told the URL.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from requests import PreparedRequest
from requests.auth import AuthBase, HTTPBasicAuth
from requests.utils import get_auth_from_url, get_netrc_auth

PROVIDER_NAME = "airflow_mlops"
_DEFAULT_PORTS = {"http": 80, "https": 443}

_lock = threading.Lock()
_active: tuple[tuple[str, str, int | None], str] | None = None  # (origin, header) of the current scope


def authorization_header(username: str | None, password: str | None) -> str | None:
    """Basic auth for a login and password; a bearer token for a password alone; else nothing."""
    if username and password:
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    if password:
        return f"Bearer {password}"
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of a URL, the port made explicit: what a browser calls its origin."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", parts.port or _DEFAULT_PORTS.get(scheme)


@contextmanager
def credentials_scope(header: str | None, server_url: str) -> Iterator[None]:
    """Send ``header`` as ``Authorization`` on MLflow's HTTP requests to ``server_url``'s origin, in this block only.

    Process-wide rather than per thread, because MLflow uploads artifacts and logs batches from its
    own worker threads; an Airflow task process talks to one tracking server at a time. The
    environment gets only the plugin's name, never a secret, and is put back as it was.
    """
    global _active
    if header is None:
        yield
        return
    with _lock:
        previous, _active = _active, (_origin(server_url), header)
        previous_name = os.environ.get("MLFLOW_TRACKING_AUTH")
        os.environ["MLFLOW_TRACKING_AUTH"] = PROVIDER_NAME
    try:
        yield
    finally:
        with _lock:
            _active = previous
            if previous_name is None:
                os.environ.pop("MLFLOW_TRACKING_AUTH", None)
            else:
                os.environ["MLFLOW_TRACKING_AUTH"] = previous_name


class ScopedAuthorization(AuthBase):
    """``requests`` auth: the active scope's header for its server; elsewhere what requests does without auth."""

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        active = _active
        if active is not None and _origin(request.url) == active[0]:
            request.headers["Authorization"] = active[1]
            return request
        # Passing any auth object turns off requests' own fallbacks, so apply them here for other
        # hosts (a registry with credentials in its URI or in ~/.netrc keeps them).
        fallback = get_auth_from_url(request.url)
        fallback = fallback if any(fallback) else get_netrc_auth(request.url)
        return HTTPBasicAuth(*fallback)(request) if fallback else request


class AuthorizationAuthProvider:
    """MLflow ``RequestAuthProvider`` plugin (selected by MLFLOW_TRACKING_AUTH): ``ScopedAuthorization``."""

    def get_name(self) -> str:
        return PROVIDER_NAME

    def get_auth(self) -> ScopedAuthorization:
        return ScopedAuthorization()
