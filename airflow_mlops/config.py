"""Where airflow-mlops keeps its state when the user does not say: under AIRFLOW_HOME.

Plain environment lookups only, so core modules and the CLI can use them without importing Airflow.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow_mlops.errors import MlopsError

#: The MLflow UI of the embedded store, unless ``[airflow_mlops] mlflow_ui_url`` says otherwise.
EMBEDDED_MLFLOW_UI_URL = "http://127.0.0.1:5000"
#: Default size budget of the snapshots restored under AIRFLOW_HOME for tasks to read.
RESTORED_BUDGET_BYTES = 20 * 10**9


def airflow_home() -> Path:
    """AIRFLOW_HOME as Airflow resolves it (the variable, else ``~/airflow``)."""
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow").expanduser()


def mlops_home() -> Path:
    """Root of airflow-mlops' own state: ``$AIRFLOW_HOME/airflow_mlops``."""
    return airflow_home() / "airflow_mlops"


def default_snapshot_store() -> str:
    """The snapshot store used when none is given: ``$AIRFLOW_MLOPS_STORE``, else under AIRFLOW_HOME."""
    return os.environ.get("AIRFLOW_MLOPS_STORE") or str(mlops_home() / "snapshots")


def embedded_tracking_db() -> Path:
    """The SQLite file of the MLflow store used when no ``mlflow`` connection is configured."""
    return mlops_home() / "mlflow.db"


def embedded_tracking_uri() -> str:
    """MLflow tracking store used when no ``mlflow`` connection is configured: SQLite under AIRFLOW_HOME."""
    return f"sqlite:///{embedded_tracking_db()}"


def embedded_optuna_db() -> Path:
    """The SQLite file of the Optuna storage used when no ``optuna`` connection is configured."""
    return mlops_home() / "optuna.db"


def embedded_artifact_root() -> str:
    """Where the embedded MLflow store keeps artifacts (one folder per experiment)."""
    return (mlops_home() / "mlartifacts").as_uri()


def restored_budget_bytes() -> int:
    """Size budget of the restored snapshots under AIRFLOW_HOME: ``$AIRFLOW_MLOPS_RESTORED_GB``, else 20 GB."""
    value = os.environ.get("AIRFLOW_MLOPS_RESTORED_GB", "").strip()
    if not value:
        return RESTORED_BUDGET_BYTES
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = -1.0
    if not 0 <= gigabytes < float("inf"):
        raise MlopsError(f"AIRFLOW_MLOPS_RESTORED_GB={value!r} is not a number of gigabytes")
    return int(gigabytes * 10**9)
