"""The inter-process lock held around a promotion: read champion, score, decide, move aliases, append history.

Two kinds, chosen by where the promoting processes run:

- PostgreSQL advisory lock (``pg_advisory_lock`` on a 64-bit hash of the model name), given the
  SQLAlchemy URL of a PostgreSQL database every worker reaches: works across machines, and the
  server releases it when the holder's connection dies, so a killed worker never leaves it held.
- fcntl file lock under ``$AIRFLOW_HOME/airflow_mlops/locks/`` otherwise: one machine only (a
  LocalExecutor, a test); the kernel releases it when the holding process dies.

MLflow's registry has no compare-and-set on aliases, so without one of these two promotions racing
in a backfill could each read the same champion and the last writer would win, best or not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from airflow_mlops.config import mlops_home
from airflow_mlops.errors import MlopsError
from airflow_mlops.utils.file_lock import exclusive_file_lock


def lock_key(model_name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock``, stable across processes and machines."""
    digest = hashlib.sha256(f"airflow_mlops.registry:{model_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def promotion_lock(model_name: str, lock_url: str | None = None) -> Iterator[None]:
    """Hold the model's promotion lock for a block: advisory lock on ``lock_url``, else a file lock."""
    if lock_url:
        with _postgres_lock(model_name, lock_url):
            yield
    else:
        with _file_lock(model_name):
            yield


@contextmanager
def _postgres_lock(model_name: str, lock_url: str) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    url = make_url(lock_url)
    if url.get_backend_name() != "postgresql":
        raise MlopsError(f"promotion lock needs a PostgreSQL database, got a {url.get_backend_name()} URL")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock_key(model_name)})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(model_name)})
                connection.commit()
    finally:
        engine.dispose()


@contextmanager
def _file_lock(model_name: str) -> Iterator[None]:
    directory = mlops_home() / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"registry-{hashlib.sha256(model_name.encode()).hexdigest()[:24]}.lock"
    with exclusive_file_lock(path):
        yield
