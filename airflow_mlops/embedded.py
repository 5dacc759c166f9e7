"""The embedded SQLite stores (MLflow tracking, Optuna studies): created once, whole, under a lock.

MLflow and Optuna create or migrate their schema when a store is first opened, and neither expects
another process to do the same at the same moment: several Airflow tasks starting together on a
fresh AIRFLOW_HOME ran MLflow's migrations on one file at once and could leave it unopenable. Here
the first process to take an inter-process lock builds the database in a file beside the final one
and renames it into place; the others wait for the lock and find it complete. A process killed
while building leaves only its staging file (no lock survives a dead process), which the next
builder removes. Opening a store that is already current takes the lock only for a schema check.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path

from airflow_mlops.config import embedded_artifact_root, embedded_optuna_db, embedded_tracking_db
from airflow_mlops.utils.file_lock import exclusive_file_lock

_SQLITE_SIDE_FILES = ("", "-journal", "-wal", "-shm")


def embedded_tracking_store() -> str:
    """The embedded MLflow store's URI (``sqlite:///$AIRFLOW_HOME/airflow_mlops/mlflow.db``), ready to open."""
    path = embedded_tracking_db()
    ensure_sqlite_database(path, _mlflow_schema_is_current, _build_mlflow_store)
    return _sqlite_url(path)


def embedded_optuna_storage() -> str:
    """The embedded Optuna storage's URL (``sqlite:///$AIRFLOW_HOME/airflow_mlops/optuna.db``), ready to open."""
    path = embedded_optuna_db()
    ensure_sqlite_database(path, _optuna_schema_is_current, _build_optuna_storage)
    return _sqlite_url(path)


def ensure_sqlite_database(path: Path, is_current: Callable[[str], bool], build: Callable[[str], None]) -> None:
    """Make ``path`` a database that ``is_current`` accepts, building it aside if it is not.

    ``build(url)`` creates (or, given a copy of an older database, upgrades) the schema at ``url``.
    The result replaces ``path`` in one rename, so no process ever opens a half-built store.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_file_lock(path.with_name(path.name + ".lock")):
        if path.exists() and is_current(_sqlite_url(path)):
            return
        _remove_staging_files(path)  # left by a builder that was killed: nobody else builds now
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.building")
        try:
            if path.exists():
                _copy_database(path, staging)
            build(_sqlite_url(staging))
            with sqlite3.connect(staging) as connection:  # readers never block the writer, and vice versa
                connection.execute("PRAGMA journal_mode=WAL")
            os.replace(staging, path)
        finally:
            _remove_staging_files(path)


def _remove_staging_files(path: Path) -> None:
    for staging in path.parent.glob(f".{path.name}.*.building*"):
        staging.unlink(missing_ok=True)


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite database (SQLite's backup API, WAL content included)."""
    with sqlite3.connect(source) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy)
    origin.close()
    copy.close()


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _dispose(engine: object) -> None:
    engine.dispose()  # close every pooled connection before the file is renamed


@cache
def _mlflow_head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _mlflow_schema_is_current(url: str) -> bool:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        try:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:  # no alembic_version table: not an MLflow store yet
            return False
    connection.close()
    return row is not None and row[0] == _mlflow_head_revision()


def _build_mlflow_store(url: str) -> None:
    """MLflow's own store set-up: tables and migrations (or an upgrade), and the default experiment."""
    from mlflow.store.db.utils import _all_tables_exist, _upgrade_db
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = SqlAlchemyStore._get_or_create_engine(url)
    try:
        if _all_tables_exist(engine):
            _upgrade_db(engine)
        SqlAlchemyStore(url, embedded_artifact_root())  # creates a missing schema and the default experiment
    finally:
        _dispose(SqlAlchemyStore._engine_map.pop(url, engine))


def _optuna_schema_is_current(url: str) -> bool:
    storage = _optuna_storage(url)
    try:
        return storage.get_current_version() == storage.get_head_version()
    finally:
        _dispose(storage.engine)


def _build_optuna_storage(url: str) -> None:
    """Optuna's own storage set-up: tables and version row, upgraded when they are older."""
    storage = _optuna_storage(url)
    try:
        if storage.get_current_version() != storage.get_head_version():
            storage.upgrade()
    finally:
        _dispose(storage.engine)


def _optuna_storage(url: str):  # noqa: ANN202 - optuna is imported lazily
    from optuna.storages import RDBStorage

    return RDBStorage(url, skip_compatibility_check=True)
