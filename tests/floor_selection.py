"""The ``floor`` marker on the fast tests that need no service, so `make test-floor` runs them against the
lowest versions pyproject.toml allows (a pytest plugin, loaded through ``addopts`` in pyproject.toml).

A test in one of FLOOR_MODULES gets the marker unless it carries a service marker or uses a fixture that
starts or needs a service (or a whole pipeline run, which is not fast). Tests elsewhere can be marked
``@pytest.mark.floor`` directly.
"""

from __future__ import annotations

import pytest

FLOOR_MODULES = {
    "test_packaging.py",
    "test_snapshot_store.py",
    "test_training.py",
    "test_tuning.py",
    "test_registry.py",
    "test_openlineage.py",
}
SERVICE_MARKERS = {"postgres", "s3", "scheduler", "packaging"}
SERVICE_FIXTURES = {
    "moto_s3", "s3_store", "postgres_databases", "postgres_url", "optuna_postgres", "mlflow_server", "mlflow_conn",
    "spark", "spark_cluster", "cluster", "pipeline", "migrated_home",
}

#: Tests of those modules that check the locked environment itself, not the code's floors.
LOCK_ONLY = {
    "test_training.py::test_a_run_records_data_code_params_environment_and_airflow_context",  # scikit-learn==<lock>
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name not in FLOOR_MODULES or item.get_closest_marker("floor"):
            continue
        if f"{item.path.name}::{item.name}" in LOCK_ONLY:
            continue
        if SERVICE_MARKERS & {mark.name for mark in item.iter_markers()}:
            continue
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            continue
        item.add_marker(pytest.mark.floor)
