"""Fraud detection: daily retraining, one data version per run, and retraining when new data lands.

`fraud_detection` (daily, the flagship): generate the day's PaySim-style transactions (stand-in for
your ingestion) -> snapshot them (the data version) -> aggregate them per customer with Spark into a
features snapshot whose record names the raw one -> tune a fraud classifier on the features with
several tuning tasks sharing one Optuna study (spread over the workers; each trial a nested MLflow
run) -> train the best as one MLflow run that traces back to both snapshots -> register it and let
the gate decide on PR-AUC, champion and challenger scored on the same held-out rows -> score the
day's customers with the champion into a predictions snapshot that names the model version.

`fraud_transactions_landed` (triggered through the REST API by whatever lands files, with the
`path`) snapshots them; `fraud_detection_on_new_data` is scheduled on that snapshot's Asset and
retrains on each new data version: data-driven retraining instead of a clock.

Spark (features and scoring) runs on the `spark_default` connection's cluster, or `local[*]` where there is none; MLflow and
Optuna on `mlflow_default` and `optuna_default`, or the embedded SQLite stores under AIRFLOW_HOME.
Trigger from the UI with params, backfill with `airflow backfill create`; every task retries safely.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, Param, task

from airflow_mlops.config import mlops_home
from airflow_mlops.datasets import DATA_DATE_TEMPLATE, dated_seed
from airflow_mlops.etl.fraud import FEATURE_COLUMNS, KEY, LABEL
from airflow_mlops.operators import (
    BatchPredictOperator,
    CheckConfOperator,
    DataSnapshotOperator,
    MlflowTrainOperator,
    OptunaTuneOperator,
    RegisterModelOperator,
    SparkETLOperator,
)

RAW_DATA = str(mlops_home() / "data" / "raw" / DATA_DATE_TEMPLATE)
LANDED_TRANSACTIONS = Asset(name="fraud_transactions_landed", uri="x-airflow-mlops-snapshot://fraud_transactions_landed/snapshot")
SEARCH_SPACE = {
    "n_estimators": {"type": "int", "low": 20, "high": 150},
    "max_depth": {"type": "int", "low": 3, "high": 12},
    "class_weight": {"type": "categorical", "choices": ["balanced", None]},
}
RETRAINING_PARAMS = {
    "n_trials": Param(8, type="integer", minimum=1, maximum=500, description="tuning trials, in all"),
    "tuning_workers": Param(2, type="integer", minimum=1, maximum=16, description="tuning tasks sharing the study"),
    "gate_metric": Param("precision_recall_auc", enum=["precision_recall_auc", "roc_auc", "f1_score"],
                         description="metric the new model must improve to become champion"),
    "min_improvement": Param(0.0, type="number", minimum=0, description="by how much (0: strictly better)"),
}
COMMON = {
    "start_date": datetime(2026, 1, 1),
    # A retry comes after the tuner's grace period (90 s): a killed worker's trial is stale by then,
    # though a retry also fails its own attempt's dead trials at once.
    "default_args": {"retries": 2, "retry_delay": timedelta(minutes=2)},
    "tags": ["airflow-mlops", "example", "fraud"],
}


@task
def tuning_slots(params: dict | None = None) -> list[int]:
    """One entry per tuning task to map (each runs its trials one at a time: ``n_jobs`` 1)."""
    return [1] * params["tuning_workers"]


@task
def best_hyperparams(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The shared study's best parameters, from the mapped tuning tasks' results (ROC AUC: maximize)."""
    from airflow_mlops.tuning import best_of

    return best_of(list(results), "maximize")["best_params"]


def retrain_and_score(raw_snapshot: Any) -> None:
    """Features -> shared-study tuning -> training -> registration behind the gate -> scoring, in the current DAG."""
    customer_features = SparkETLOperator(
        task_id="customer_features",
        inputs={"transactions": raw_snapshot},
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
    # One tuning task per worker slot (``tuning_workers``), all in one Optuna study on the study database:
    # together they make n_trials complete trials, each reporting the whole study's best at its end.
    tune = OptunaTuneOperator.partial(
        task_id="tune_fraud_model", study_name="fraud_detection.{{ run_id }}", search_space=SEARCH_SPACE,
        n_trials="{{ params.n_trials }}", metric="roc_auc", **model,
    ).expand(n_jobs=tuning_slots())
    train = MlflowTrainOperator(task_id="train_fraud_model", hyperparams=best_hyperparams(tune.output), **model)

    # The champion only moves when the new model beats it on the new model's held-out rows, by PR-AUC
    # (fraud is rare) without losing more than 0.01 ROC AUC; a worse one is kept as "challenger".
    register = RegisterModelOperator(
        task_id="register_fraud_model", model_name="fraud_detection", training=train.output,
        metric="{{ params.gate_metric }}", min_improvement="{{ params.min_improvement }}",
        guard_metrics={"roc_auc": 0.01},
    )
    score_customers = BatchPredictOperator(
        task_id="score_customers", model="models:/fraud_detection@champion",
        input_snapshot=customer_features.output, key_columns=[KEY], spark_conn_id="spark_default",
    )
    register >> score_customers


with DAG(
    dag_id="fraud_detection",
    schedule="@daily",
    # No catchup: a new deployment retrains on today's data, not on every day since start_date; past
    # dates are for an explicit `airflow backfill create` (each date then makes its own data version).
    catchup=False,
    max_active_runs=1,  # a day's model is gated against the previous day's champion, so days go in order
    params={
        "rows": Param(20_000, type="integer", minimum=1_000, maximum=50_000_000,
                      description="transactions to generate (from 1,000: 50 customers, enough for the test split and 5-fold tuning)"),
        "seed": Param(7, type="integer", minimum=0, description="generator seed, mixed with the data date"),
        **RETRAINING_PARAMS,
    },
    doc_md=__doc__,
    **COMMON,
):

    @task
    def generate_transactions(target: str, data_date: str, params: dict | None = None) -> str:
        """Stand-in for ingestion: the day's PaySim-style transactions (each date its own data)."""
        from airflow_mlops.datasets.paysim import write_paysim_csv

        seed = dated_seed(params["seed"], data_date)
        return str(write_paysim_csv(target, rows=params["rows"], seed=seed))

    snapshot_raw = DataSnapshotOperator(task_id="snapshot_raw", source=RAW_DATA)
    CheckConfOperator(task_id="check_conf") >> generate_transactions(RAW_DATA, DATA_DATE_TEMPLATE) >> snapshot_raw
    retrain_and_score(snapshot_raw.output)


with DAG(
    dag_id="fraud_transactions_landed",
    schedule=None,  # triggered with the landed path: POST /api/v2/dags/fraud_transactions_landed/dagRuns
    catchup=False,
    params={"path": Param(type="string", minLength=1, description="file or folder of landed transactions (CSV)")},
    doc_md=__doc__,
    **COMMON,
):
    DataSnapshotOperator(task_id="snapshot", source="{{ params.path }}", asset=LANDED_TRANSACTIONS)


with DAG(
    dag_id="fraud_detection_on_new_data",
    schedule=LANDED_TRANSACTIONS,  # one run per new data version (events arriving together share a run)
    catchup=False,
    max_active_runs=1,
    params=RETRAINING_PARAMS,
    doc_md=__doc__,
    **COMMON,
):
    # The newest snapshot among the events that triggered this run (its URI names store and id).
    retrain_and_score("{{ (triggering_asset_events.values() | first | last).extra.uri }}")
