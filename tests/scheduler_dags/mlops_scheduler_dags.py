"""DAGs the scheduler tests run: each is triggered (or backfilled) through the REST API and checked
in MLflow, Optuna and the snapshot store afterwards."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_mlops.operators import (
    BatchPredictOperator,
    DataSnapshotOperator,
    MlflowTrainOperator,
    OptunaTuneOperator,
    RegisterModelOperator,
)
from tests.scheduler_tasks import killed_on_first_try_inside

ESTIMATOR = "sklearn.linear_model.LogisticRegression"
FEATURES = [f"f{i}" for i in range(5)]  # not the row id
SPACE = {"C": {"type": "float", "low": 0.001, "high": 100, "log": True}}


@task
def generate(dag_run=None, logical_date=None) -> str:
    """This run's data: seeded by its logical date (a backfill makes one data set per date)."""
    from airflow_mlops.config import mlops_home
    from tests.scheduler_tasks import write_classification_data

    seed_text = logical_date.isoformat() if logical_date else dag_run.run_id
    return write_classification_data(str(mlops_home() / "data" / dag_run.dag_id / dag_run.run_id), seed_text, key="row_id")


def snapshot_of_generated_data():
    return DataSnapshotOperator(task_id="snapshot", source=generate())


with DAG(
    dag_id="first_use", schedule=None, start_date=datetime(2026, 1, 1),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=5)},
    params={"n_trials": Param(3, type="integer", minimum=1)},
):
    data = snapshot_of_generated_data()
    for name in ("a", "b"):
        common = {"input_snapshot": data.output, "target": "label", "estimator": ESTIMATOR, "features": FEATURES}
        MlflowTrainOperator(task_id=f"train_{name}", **common)
        OptunaTuneOperator(task_id=f"tune_{name}", search_space=SPACE, n_trials="{{ params.n_trials }}",
                                   heartbeat_interval=5, grace_period=15, **common)

with DAG(
    dag_id="train_killed", schedule=None, start_date=datetime(2026, 1, 1),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=2)},
):
    data = snapshot_of_generated_data()
    MlflowTrainOperator(task_id="train", input_snapshot=data.output, target="label", features=FEATURES,
                        train_fn="tests.scheduler_tasks:train_killed_on_first_try")

with DAG(
    dag_id="tune_killed", schedule=None, start_date=datetime(2026, 1, 1),
    # the retry comes long before the grace period: the killed trial must not stay RUNNING all the same
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    data = snapshot_of_generated_data()
    OptunaTuneOperator(task_id="tune", input_snapshot=data.output, target="label", features=FEATURES, n_trials=6,
                       objective="tests.scheduler_tasks:objective_killed_after_three_trials",
                       metric="accuracy", direction="maximize", heartbeat_interval=10, grace_period=120)

with DAG(
    dag_id="backfilled", schedule="@daily", start_date=datetime(2026, 1, 1), end_date=datetime(2026, 1, 31),
    catchup=False, max_active_runs=3,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=5)},
):
    # Each date: train, register behind the gate (killed on try 1 after the version exists, before the
    # aliases move), and score with the champion (killed on try 1 in the middle of writing the output).
    data = snapshot_of_generated_data()
    train = MlflowTrainOperator(task_id="train", input_snapshot=data.output, target="label", estimator=ESTIMATOR,
                                features=FEATURES)
    register = RegisterModelOperator(
        task_id="register", model_name="backfilled", training=train.output,
        pre_execute=killed_on_first_try_inside("airflow_mlops.registry.promotion:_move_aliases"),
    )
    predict = BatchPredictOperator(
        task_id="predict", model="models:/backfilled@champion", input_snapshot=data.output, key_columns=["row_id"],
        pre_execute=killed_on_first_try_inside("airflow_mlops.predict.batch:_write_canonical", truncate_output=True),
    )
    register >> predict
