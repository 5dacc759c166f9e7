"""The DAG tests/test_openlineage.py runs with ``airflow dags test``: each model operator once, on a small CSV.

snapshot the rows -> tune -> train (LogisticRegression) -> register (champion gate) -> score the rows.
SparkETLOperator is left out: a Spark start-up would double the test's time.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_mlops.operators import (
    BatchPredictOperator,
    DataSnapshotOperator,
    MlflowTrainOperator,
    OptunaTuneOperator,
    RegisterModelOperator,
)

with DAG(dag_id="openlineage_pipeline", schedule=None, start_date=datetime(2026, 1, 1),
         params={"source": Param("", type="string", description="folder of the rows CSV")}):
    rows = DataSnapshotOperator(task_id="snapshot_rows", source="{{ params.source }}")
    model = {"input_snapshot": rows.output, "target": "label", "features": [f"f{i}" for i in range(5)],
             "estimator": "sklearn.linear_model.LogisticRegression", "experiment_name": "openlineage"}
    tune = OptunaTuneOperator(task_id="tune", search_space={"C": {"type": "float", "low": 0.01, "high": 10, "log": True}},
                              n_trials=2, cv=2, **model)
    train = MlflowTrainOperator(task_id="train", hyperparams=tune.output["best_params"], **model)
    register = RegisterModelOperator(task_id="register", model_name="openlineage_model", training=train.output)
    score = BatchPredictOperator(task_id="score", model="models:/openlineage_model@champion",
                                 input_snapshot=rows.output, key_columns=["id"])
    register >> score
