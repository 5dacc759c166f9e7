"""Training functions the tests hand to MlflowTrainOperator, as users would from their own modules."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sklearn.linear_model import LogisticRegression


def _marker(name: str) -> Path:
    return Path(os.environ["TRAIN_MARKER_DIR"]) / name


def counting_train(train_frame, params):
    """Trains a logistic regression and counts its calls in TRAIN_MARKER_DIR/calls."""
    from sklearn.linear_model import LogisticRegression

    with open(_marker("calls"), "a") as calls:
        calls.write("call\n")
    model = LogisticRegression(max_iter=500, C=params.get("C", 1.0))
    model.fit(train_frame.drop(columns=["label"]), train_frame["label"])
    return model, {"train_rows": float(len(train_frame))}


def train_until_killed(train_frame, params):
    """Signals that training started, then blocks (the test kills the process meanwhile)."""
    _marker("started").write_text(str(os.getpid()))
    time.sleep(120)
    return counting_train(train_frame, params)


def failing_train(train_frame, params):
    raise ValueError("learning rate 10.0 diverged at epoch 3")


def spark_pipeline(train_frame, params):
    """A Spark ML pipeline (assembler + logistic regression) on the active Spark session."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    features = [column for column in train_frame.columns if column != "label"]
    stages = [
        VectorAssembler(inputCols=features, outputCol="features"),
        LogisticRegression(labelCol="label", maxIter=params.get("max_iter", 20)),
    ]
    model = Pipeline(stages=stages).fit(spark.createDataFrame(train_frame))
    return model, {"train_rows": float(len(train_frame))}


def quadratic_objective(trial, data):
    """(x - 2)^2, sleeping TRIAL_SLEEP seconds and counting trials in TRAIN_MARKER_DIR/trials."""
    x = trial.suggest_float("x", -10.0, 10.0)
    time.sleep(float(os.environ.get("TRIAL_SLEEP", "0")))
    with open(_marker("trials"), "a") as trials:
        trials.write(f"{trial.number}\n")
    return (x - 2.0) ** 2


_trials_in_this_process = 0


def shared_study_objective(trial, data):
    """``quadratic_objective`` for workers sharing a study, paced by the test: each process's first trial
    says TRAIN_MARKER_DIR/ready-<pid> and waits for TRAIN_MARKER_DIR/go, so the workers run together;
    with KILL_IN_TRIAL=k, the process's k-th trial writes TRAIN_MARKER_DIR/blocked (pid, trial number)
    and waits to be killed."""
    global _trials_in_this_process
    _trials_in_this_process += 1
    if _trials_in_this_process == 1:
        _marker(f"ready-{os.getpid()}").touch()
        while not _marker("go").exists():
            time.sleep(0.05)
    if str(_trials_in_this_process) == os.environ.get("KILL_IN_TRIAL"):
        staging = _marker("blocked.tmp")
        staging.write_text(json.dumps({"pid": os.getpid(), "trial": trial.number}))
        staging.rename(_marker("blocked"))
        time.sleep(600)
        raise RuntimeError("the test was to kill this process")
    return quadratic_objective(trial, data)


def negative_x_fails(trial, data):
    x = trial.suggest_float("x", -10.0, 10.0)
    if x < 0:
        raise ValueError(f"x={x:.3f} is out of the model's domain")
    return x


def always_fails(trial, data):
    trial.suggest_int("layers", 1, 3)
    raise RuntimeError("CUDA out of memory")


def reporting_objective(trial, data):
    """Reports a falling loss per step, so a pruner can stop poor trials early."""
    import optuna

    x = trial.suggest_float("x", -10.0, 10.0)
    for step in range(5):
        trial.report((x - 2.0) ** 2 + 5 - step, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return (x - 2.0) ** 2


def fails_while_broken(trial, data):
    """``quadratic_objective`` that fails every trial while OBJECTIVE_BROKEN is set (a GPU that is down)."""
    if os.environ.get("OBJECTIVE_BROKEN"):
        trial.suggest_float("x", -10.0, 10.0)
        raise RuntimeError("CUDA out of memory")
    return quadratic_objective(trial, data)


class RecordingLogisticRegression(LogisticRegression):
    """A logistic regression that appends the index of every row it fits on or scores to TRAIN_MARKER_DIR/rows."""

    def _record(self, X):
        with open(_marker("rows"), "a") as rows:
            rows.write(" ".join(map(str, X.index)) + "\n")

    def fit(self, X, y, **kwargs):
        self._record(X)
        return super().fit(X, y, **kwargs)

    def predict(self, X):
        self._record(X)
        return super().predict(X)

    def predict_proba(self, X):
        self._record(X)
        return super().predict_proba(X)
