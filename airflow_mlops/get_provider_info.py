"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from airflow_mlops import __version__
from airflow_mlops.config import EMBEDDED_MLFLOW_UI_URL


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-mlops",
        "name": "Airflow MLOps",
        "description": "Reproducible ML retraining: data snapshots, Spark ETL, MLflow tracking, "
        "Optuna tuning, model registry promotion and lineage.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Data snapshots", "tags": ["software"]},
            {"integration-name": "Spark ETL", "external-doc-url": "https://spark.apache.org/docs/latest/api/python/", "tags": ["software"]},
            {"integration-name": "MLflow", "external-doc-url": "https://mlflow.org/docs/latest/", "tags": ["software"]},
            {"integration-name": "Optuna", "external-doc-url": "https://optuna.readthedocs.io/", "tags": ["software"]},
        ],
        "operators": [
            {"integration-name": "Data snapshots", "python-modules": ["airflow_mlops.operators.snapshot", "airflow_mlops.operators.retention",
                                                                   "airflow_mlops.operators.conf"]},
            {"integration-name": "Spark ETL", "python-modules": ["airflow_mlops.operators.spark_etl"]},
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.operators.training", "airflow_mlops.operators.predict", "airflow_mlops.operators.registry"]},
            {"integration-name": "Optuna", "python-modules": ["airflow_mlops.operators.tuning"]},
        ],
        "hooks": [
            {"integration-name": "Data snapshots", "python-modules": ["airflow_mlops.hooks.snapshot_store"]},
            {"integration-name": "Spark ETL", "python-modules": ["airflow_mlops.hooks.spark"]},
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.hooks.mlflow"]},
            {"integration-name": "Optuna", "python-modules": ["airflow_mlops.hooks.optuna"]},
        ],
        "connection-types": [
            {"hook-class-name": "airflow_mlops.hooks.mlflow.MlflowHook", "connection-type": "mlflow"},
        ],
        "config": {
            "airflow_mlops": {
                "description": "airflow-mlops settings that no connection carries.",
                "options": {
                    "mlflow_ui_url": {
                        "description": "Base URL of the MLflow UI over the embedded store (no ``mlflow_default`` "
                        "connection), for the MLflow extra links and log lines; a connection's links use its "
                        "server (or its ``ui_url`` extra). ``make up`` sets it to the port it starts the UI on.\n",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "http://127.0.0.1:5002",
                        "default": EMBEDDED_MLFLOW_UI_URL,
                    },
                },
            },
        },
        "extra-links": [
            "airflow_mlops.links.mlflow.MlflowRunLink",
            "airflow_mlops.links.registry.MlflowModelVersionLink",
            "airflow_mlops.links.spark.SparkUILink",
            "airflow_mlops.links.spark.SparkApplicationLink",
        ],
    }
