-- Airflow, MLflow and Optuna each keep an alembic_version table: one database each.
CREATE DATABASE mlflow;
CREATE DATABASE optuna;
