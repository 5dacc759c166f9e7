"""Flagship example: the daily retraining pipeline, one data version per run.

generate (stand-in for your ingestion) -> snapshot the raw data (the data version)
-> train a fraud classifier on that snapshot as one MLflow run that traces back to it.
Trigger from the UI with params, backfill with ``airflow backfill create``; tasks retry safely.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_mlops.config import mlops_home
from airflow_mlops.operators import DataSnapshotOperator, MLflowTrainOperator

RAW_DATA = str(mlops_home() / "data" / "raw" / "{{ ds }}")
NUMERIC_FEATURES = ["step", "amount", "oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest"]

with DAG(
    dag_id="mlops_retrain",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "rows": Param(20_000, type="integer", minimum=100, maximum=50_000_000, description="transactions to generate"),
        "seed": Param(7, type="integer", minimum=0, description="generator seed"),
        "hyperparams": Param(
            {"n_estimators": 100, "max_depth": 8, "class_weight": "balanced"},
            type="object",
            description="RandomForestClassifier hyperparameters",
        ),
    },
    tags=["airflow-mlops", "example"],
) as dag:

    @task
    def generate_transactions(target: str, params: dict | None = None) -> str:
        """Stand-in for ingestion: today's PaySim-style transactions."""
        from airflow_mlops.datasets.paysim import write_paysim_csv

        return str(write_paysim_csv(target, rows=params["rows"], seed=params["seed"]))

    generated = generate_transactions(RAW_DATA)

    snapshot_raw = DataSnapshotOperator(task_id="snapshot_raw", source=RAW_DATA)

    train = MLflowTrainOperator(
        task_id="train_fraud_model",
        input_snapshot=snapshot_raw.output,
        target="isFraud",
        features=NUMERIC_FEATURES,
        estimator="sklearn.ensemble.RandomForestClassifier",
        hyperparams="{{ params.hyperparams | tojson }}",
        experiment_name="fraud_detection",
    )

    generated >> snapshot_raw
