"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from airflow_mlops import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-mlops",
        "name": "Airflow MLOps",
        "description": "Reproducible ML retraining: data snapshots, Spark ETL, MLflow tracking, "
        "Optuna tuning, model registry promotion and lineage.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Data snapshots", "tags": ["software"]},
        ],
        "operators": [
            {"integration-name": "Data snapshots", "python-modules": ["airflow_mlops.operators.snapshot"]},
        ],
        "hooks": [
            {"integration-name": "Data snapshots", "python-modules": ["airflow_mlops.hooks.snapshot_store"]},
        ],
    }
