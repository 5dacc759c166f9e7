"""The gate's evaluation rows: the challenger's held-out test split, rebuilt from its training run's record.

The run records its input snapshot (``airflow_mlops.snapshot_uri``/``snapshot_id`` tags) and the split
(params ``target``, ``seed``, ``test_size``, ``split_stratified``, ``features``); restoring the snapshot
and calling :func:`~airflow_mlops.tracking.data.prepare` with them gives the very rows the run was
evaluated on, with all columns, so a champion fit on other features is scored on the same rows. Both challenger and champion are scored there, with the metrics of
:func:`~airflow_mlops.tracking.metrics.score`, so the two numbers compare.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.tracking.quiet import skops_io
from airflow_mlops.tracking.tags import SNAPSHOT_TAG, SNAPSHOT_URI_TAG


@dataclass
class EvaluationRows:
    """Held-out rows and where they come from (recorded on the version as the gate's evaluation data)."""

    X: Any  # every column but the target: each model picks the ones it was fit on
    y: Any
    snapshot_id: str
    seed: int
    test_size: float
    features: list[str] | None = None  # the challenger run's features, for models that do not name theirs

    def for_model(self, model: Any) -> Any:
        """The rows with the columns ``model`` was fit on (sklearn's ``feature_names_in_``), else the run's features."""
        named = getattr(model, "feature_names_in_", None)
        columns = list(named if named is not None else self.features or self.X.columns)
        missing = [column for column in columns if column not in self.X.columns]
        if missing:
            raise MlopsError(f"the evaluation rows (snapshot {self.snapshot_id}) lack columns {missing} the model needs")
        return self.X[columns]

    def describe(self) -> dict[str, Any]:
        return {"snapshot_id": self.snapshot_id, "split": "test", "seed": self.seed,
                "test_size": self.test_size, "rows": int(len(self.y))}


def held_out_rows(client: Any, run_id: str, restore: Callable[[str], Path]) -> EvaluationRows:
    """The test split of run ``run_id``; ``restore(snapshot_uri)`` gives the snapshot's local directory."""
    from airflow_mlops.tracking.data import prepare
    from airflow_mlops.tracking.request import TrainingRequest

    run = client.get_run(run_id)
    params, tags = run.data.params, run.data.tags
    snapshot_uri = tags.get(SNAPSHOT_URI_TAG)
    if not snapshot_uri or "target" not in params:
        raise MlopsError(f"run {run_id} has no input snapshot or target recorded; it was not a supervised MlflowTrainOperator run")
    estimator = None
    if params.get("split_stratified") == "True":  # a classifier Pipeline makes prepare stratify, as training did
        from sklearn.dummy import DummyClassifier
        from sklearn.pipeline import Pipeline

        estimator = Pipeline([("split_only", DummyClassifier())])
    request = TrainingRequest(
        data_path=restore(snapshot_uri), snapshot_id=tags.get(SNAPSHOT_TAG, ""), snapshot_uri=snapshot_uri,
        target=params["target"], estimator=estimator, seed=int(params["seed"]), test_size=float(params["test_size"]),
    )
    prepared = prepare(request)  # all columns: the row split does not depend on which ones are features
    features = json.loads(params["features"]) if "features" in params else None
    return EvaluationRows(prepared.X_test, prepared.y_test, request.snapshot_id, request.seed, request.test_size, features)


def load_model(model_uri: str) -> tuple[Any, str]:
    """(fitted sklearn model, ``classifier``/``regressor``) of a registered or logged model."""
    import mlflow

    from airflow_mlops.tracking.estimators import model_type

    skops_io()  # MLflow's loader imports skops; imported first here, quietly
    try:
        model = mlflow.sklearn.load_model(model_uri)
    except Exception as error:  # noqa: BLE001 - any flavor problem means the gate cannot score it
        raise MlopsError(f"cannot load {model_uri} as a scikit-learn model for the gate: {error}") from None
    kind = model_type(model)
    if kind is None:
        raise MlopsError(f"{model_uri} is neither a classifier nor a regressor; the gate cannot score it")
    return model, kind


def score_all(model: Any, kind: str, rows: EvaluationRows, metrics: list[str]) -> dict[str, float]:
    """Each metric of a loaded model on ``rows``, as :func:`~airflow_mlops.tracking.metrics.score` defines it."""
    from airflow_mlops.tracking.metrics import score

    X = rows.for_model(model)
    return {metric: score(model, X, rows.y, metric, kind) for metric in metrics}
