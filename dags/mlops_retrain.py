"""Flagship example: the daily retraining pipeline, one data version per run.

generate (stand-in for your ingestion) -> snapshot the raw transactions (the data version)
-> aggregate them per customer with Spark into a features snapshot whose record names the raw one
-> tune a fraud classifier on the features (resumable Optuna study, a nested MLflow run per trial)
-> train it with the best hyperparameters as one MLflow run that traces back to both snapshots
-> register it and let the gate decide on PR-AUC, champion and challenger scored on the same held-out rows
-> score the day's customers with the champion into a predictions snapshot that names the model version.
Spark runs on the ``spark_default`` connection's cluster, or ``local[*]`` where there is none.
Trigger from the UI with params, backfill with ``airflow backfill create``; tasks retry safely.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_mlops.config import mlops_home
from airflow_mlops.etl.fraud import FEATURE_COLUMNS, KEY, LABEL
from airflow_mlops.operators import (
    BatchPredictOperator,
    DataSnapshotOperator,
    MLflowTrainOperator,
    OptunaTuneOperator,
    RegisterModelOperator,
    SparkETLOperator,
)

# The day's data: the run's logical date, or the day it ran for runs that have none (API or Asset triggers).
DATA_DATE = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
RAW_DATA = str(mlops_home() / "data" / "raw" / DATA_DATE)
SEARCH_SPACE = {
    "n_estimators": {"type": "int", "low": 20, "high": 150},
    "max_depth": {"type": "int", "low": 3, "high": 12},
    "class_weight": {"type": "categorical", "choices": ["balanced", None]},
}

with DAG(
    dag_id="mlops_retrain",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    # A retry fails the trials its killed attempt left RUNNING at once, whatever the delay.
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "rows": Param(20_000, type="integer", minimum=100, maximum=50_000_000, description="transactions to generate"),
        "seed": Param(7, type="integer", minimum=0, description="generator seed, mixed with the data date"),
        "n_trials": Param(8, type="integer", minimum=1, maximum=500, description="tuning trials"),
        "gate_metric": Param("precision_recall_auc", enum=["precision_recall_auc", "roc_auc", "f1_score"],
                             description="metric the new model must improve to become champion"),
        "min_improvement": Param(0.0, type="number", minimum=0, description="by how much (0: strictly better)"),
    },
    tags=["airflow-mlops", "example"],
) as dag:

    @task
    def generate_transactions(target: str, data_date: str, params: dict | None = None) -> str:
        """Stand-in for ingestion: the day's PaySim-style transactions (each date its own data)."""
        from datetime import date

        from airflow_mlops.datasets.paysim import write_paysim_csv

        seed = params["seed"] * 1_000_003 + date.fromisoformat(data_date).toordinal()
        return str(write_paysim_csv(target, rows=params["rows"], seed=seed))

    generated = generate_transactions(RAW_DATA, DATA_DATE)

    snapshot_raw = DataSnapshotOperator(task_id="snapshot_raw", source=RAW_DATA)

    customer_features = SparkETLOperator(
        task_id="customer_features",
        inputs={"transactions": snapshot_raw.output},
        transform="airflow_mlops.etl.fraud:customer_features",
        conf={"spark.sql.shuffle.partitions": "8"},
    )

    # Tuning and training see the same data, features and estimator, so their metrics compare.
    model = {
        "input_snapshot": customer_features.output,
        "target": LABEL,
        "features": FEATURE_COLUMNS,
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "experiment_name": "fraud_detection",
    }
    tune = OptunaTuneOperator(
        task_id="tune_fraud_model", search_space=SEARCH_SPACE, n_trials="{{ params.n_trials }}", metric="roc_auc", **model
    )
    train = MLflowTrainOperator(task_id="train_fraud_model", hyperparams=tune.output["best_params"], **model)

    # The champion only moves when the new model beats it on the new model's held-out rows, by PR-AUC
    # (fraud is rare) without losing more than 0.01 ROC AUC; a worse one is kept as "challenger".
    register = RegisterModelOperator(
        task_id="register_fraud_model", model_name="fraud_detection", training=train.output,
        metric="{{ params.gate_metric }}", min_improvement="{{ params.min_improvement }}",
        guard_metrics={"roc_auc": 0.01},
    )
    score_customers = BatchPredictOperator(
        task_id="score_customers", model="models:/fraud_detection@champion",
        input_snapshot=customer_features.output, key_columns=[KEY],
    )
    register >> score_customers

    generated >> snapshot_raw
