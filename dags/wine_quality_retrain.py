"""Wine quality, daily: the classic MLflow ElasticNet tutorial as a scheduled, traceable retraining.

generate the day's wines (stand-in for ingestion; UCI red-wine columns, each date its own data)
-> snapshot them (the data version)
-> tune ``sklearn.linear_model.ElasticNet``'s ``alpha`` and ``l1_ratio`` with Optuna, cross-validated
on the training part only (a nested MLflow run per trial)
-> train with the best ones as one MLflow run that traces back to the snapshot
-> register ``wine_quality`` and let the gate decide (default: lower RMSE than the champion's, both
scored on the new model's held-out rows)
-> score the day's wines with ``models:/wine_quality@champion`` into a predictions snapshot that names
the model version.

**Params** (the trigger form): search ranges for ``alpha`` (log scale, above 0) and ``l1_ratio``
(0 to 1), trials, rows, seed, the gate metric and the improvement it needs. A value of the wrong
type or out of its bounds is refused before a run is created; an inverted range (low above high)
fails the tuning task's search-space check before any trial.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_mlops.config import mlops_home
from airflow_mlops.datasets import DATA_DATE_TEMPLATE, dated_seed
from airflow_mlops.datasets.wine import FEATURE_COLUMNS, KEY, TARGET
from airflow_mlops.operators import (
    BatchPredictOperator,
    CheckConfOperator,
    DataSnapshotOperator,
    MlflowTrainOperator,
    OptunaTuneOperator,
    RegisterModelOperator,
)
from airflow_mlops.tracking.metrics import REGRESSOR_METRICS

RAW_DATA = str(mlops_home() / "data" / "wine_quality" / DATA_DATE_TEMPLATE)

# The search space as JSON text built from the params when the task runs (search_space is templated);
# the operator checks it whole (numbers, low <= high, alpha > 0 on a log scale) before any trial.
SEARCH_SPACE = (
    '{"alpha": {"type": "float", "log": true,'
    ' "low": {{ params.alpha_low | tojson }}, "high": {{ params.alpha_high | tojson }} },'
    ' "l1_ratio": {"type": "float",'
    ' "low": {{ params.l1_ratio_low | tojson }}, "high": {{ params.l1_ratio_high | tojson }} } }'
)

# Seconds after which a silent trial belongs to a dead worker, for Optuna (the tuner's default).
TUNER_GRACE_PERIOD_SECONDS = 90

with DAG(
    dag_id="wine_quality_retrain",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    # No catchup: every run generates, tunes and trains on its own day, so unpausing after a pause
    # would otherwise queue one full retraining per missed day and walk the champion through stale
    # days. Past dates are run on purpose with ``airflow backfill create``.
    catchup=False,
    # One run at a time: each run's gate compares against the champion the previous run left, so
    # the champion moves in date order.
    max_active_runs=1,
    # Retries are safe (training and tuning pick up what an earlier attempt finished). The delay is
    # longer than the tuner's grace period, so when a retry starts, every trial of a killed attempt
    # is already stale for Optuna as well (the retry also fails its own leftovers at once).
    default_args={"retries": 2, "retry_delay": timedelta(seconds=TUNER_GRACE_PERIOD_SECONDS + 30)},
    params={
        "rows": Param(1_599, type="integer", minimum=50, maximum=10_000_000,
                      description="wines to generate (the UCI red wine table has 1,599)"),
        "seed": Param(7, type="integer", minimum=0, description="generator seed, mixed with the data date"),
        "n_trials": Param(20, type="integer", minimum=1, maximum=500, description="tuning trials"),
        "alpha_low": Param(1e-4, type="number", exclusiveMinimum=0,
                           description="ElasticNet alpha: lowest value searched (log scale, above 0)"),
        "alpha_high": Param(1.0, type="number", exclusiveMinimum=0,
                            description="ElasticNet alpha: highest value searched (not below alpha_low)"),
        "l1_ratio_low": Param(0.0, type="number", minimum=0, maximum=1,
                              description="ElasticNet l1_ratio: lowest value searched (0: ridge)"),
        "l1_ratio_high": Param(1.0, type="number", minimum=0, maximum=1,
                               description="ElasticNet l1_ratio: highest value searched (1: lasso)"),
        "gate_metric": Param("root_mean_squared_error", enum=list(REGRESSOR_METRICS),
                             description="metric tuned, and the one the new model must improve to become champion "
                                         "(its direction: lower errors, higher r2_score)"),
        "min_improvement": Param(0.0, type="number", minimum=0,
                                 description="by how much the new model must beat the champion (0: strictly better)"),
    },
    tags=["airflow-mlops", "example", "regression"],
    doc_md=__doc__,
) as dag:

    @task
    def generate_wines(target: str, data_date: str, params: dict | None = None) -> str:
        """Stand-in for ingestion: the day's wines (each date its own data)."""
        from airflow_mlops.datasets.wine import write_wine_quality_csv

        seed = dated_seed(params["seed"], data_date)
        return str(write_wine_quality_csv(target, rows=params["rows"], seed=seed))

    generated = CheckConfOperator(task_id="check_conf") >> generate_wines(RAW_DATA, DATA_DATE_TEMPLATE)

    snapshot_wines = DataSnapshotOperator(task_id="snapshot_wines", source=RAW_DATA)

    # Tuning and training see the same data, features and estimator, so their metrics compare; the
    # key column is not a feature. Trials cross-validate on the training part: the test split that
    # the training run (and the gate) scores on never reaches the tuner.
    model = {
        "input_snapshot": snapshot_wines.output,
        "target": TARGET,
        "features": FEATURE_COLUMNS,
        "estimator": "sklearn.linear_model.ElasticNet",
        "experiment_name": "wine_quality",
    }
    tune = OptunaTuneOperator(
        task_id="tune_elasticnet", search_space=SEARCH_SPACE, n_trials="{{ params.n_trials }}",
        metric="{{ params.gate_metric }}", grace_period=TUNER_GRACE_PERIOD_SECONDS, **model,
    )
    train = MlflowTrainOperator(task_id="train_elasticnet", hyperparams=tune.output["best_params"], **model)

    register = RegisterModelOperator(
        task_id="register_wine_quality", model_name="wine_quality", training=train.output,
        metric="{{ params.gate_metric }}", min_improvement="{{ params.min_improvement }}",
    )
    score_wines = BatchPredictOperator(
        task_id="score_wines", model="models:/wine_quality@champion",
        input_snapshot=snapshot_wines.output, key_columns=[KEY], prediction_column="predicted_quality",
    )
    register >> score_wines

    generated >> snapshot_wines
