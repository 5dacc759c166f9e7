"""Credentials for one MLflow server, scoped to a block of code, never put in the environment.

MLflow reads credentials from MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, which every library in the
process (and every subprocess) would see. Instead, ``AuthorizationHeaderProvider`` is registered
as an MLflow request-header plugin (entry point ``mlflow.request_header_provider``) and adds the
``Authorization`` header only while ``credentials_scope`` is active.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_active_header: str | None = None


def authorization_header(username: str | None, password: str | None) -> str | None:
    """Basic auth for a login and password; a bearer token for a password alone; else nothing."""
    if username and password:
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    if password:
        return f"Bearer {password}"
    return None


@contextmanager
def credentials_scope(header: str | None) -> Iterator[None]:
    """Send ``header`` as ``Authorization`` on MLflow's HTTP requests inside this block only.

    Process-wide rather than per thread, because MLflow uploads artifacts and logs batches from its
    own worker threads; an Airflow task process talks to one tracking server at a time.
    """
    global _active_header
    with _lock:
        previous, _active_header = _active_header, header
    try:
        yield
    finally:
        with _lock:
            _active_header = previous


class AuthorizationHeaderProvider:
    """MLflow ``RequestHeaderProvider`` plugin: the header of the active credentials scope."""

    def in_context(self) -> bool:
        return _active_header is not None

    def request_headers(self) -> dict[str, str]:
        header = _active_header
        return {"Authorization": header} if header else {}
