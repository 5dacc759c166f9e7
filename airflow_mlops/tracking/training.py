"""Tracked training: fit a model on a data snapshot and record everything needed to trace and re-run it.

``prepare`` loads and checks the data before any MLflow run exists (bad input loses nothing);
``tracked_training`` applies the retry rules (one finished run per task instance), then trains and
logs params, the input snapshot as an MLflow dataset, metrics (``mlflow.models.evaluate`` on a
held-out split), the model with signature and input example, the code version and the environment.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.tracking.data import TrainingDataError, features_and_target, load_table
from airflow_mlops.tracking.environment import (
    CodeVersion,
    environment_tags,
    installed_requirements,
    pinned,
)
from airflow_mlops.tracking.runs import (
    ERROR_TAG,
    SNAPSHOT_TAG,
    fail_abandoned_runs,
    identity_tags,
    previous_attempts,
)
from airflow_mlops.utils.imports import import_object

MODEL_URI_TAG = "airflow_mlops.model_uri"
MODEL_NAME = "model"


class TrainingError(MlopsError):
    """Training itself failed (the user's function or the estimator raised)."""


@dataclass
class TrainingRequest:
    """Everything one training needs, in plain values."""

    data_path: Path
    snapshot_id: str
    snapshot_uri: str
    target: str | None
    hyperparams: dict[str, Any] = field(default_factory=dict)
    features: list[str] | None = None
    estimator: Any = None  # an sklearn estimator or Pipeline, or a dotted class path
    train_fn: Callable[..., Any] | None = None  # (train_frame, hyperparams) -> model | (model, metrics)
    seed: int = 42
    test_size: float = 0.2
    identity: dict[str, Any] = field(default_factory=dict)
    code: CodeVersion = field(default_factory=CodeVersion)
    run_name: str | None = None


@dataclass
class PreparedData:
    frame: Any
    X_train: Any = None
    X_test: Any = None
    y_train: Any = None
    y_test: Any = None
    estimator: Any = None
    model_type: str | None = None  # "classifier" / "regressor" for built-in evaluation


@dataclass
class TrainingResult:
    run_id: str
    experiment_id: str
    model_uri: str | None
    metrics: dict[str, float]
    reused: bool = False

    def to_xcom(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "model_uri": self.model_uri, "metrics": self.metrics}


def build_estimator(estimator: Any, hyperparams: Mapping[str, Any], seed: int) -> Any:
    """A fresh sklearn estimator with ``hyperparams`` set and every unset ``random_state`` seeded."""
    from sklearn.base import clone

    try:
        if isinstance(estimator, str):
            model = import_object(estimator)(**hyperparams)
        else:
            model = clone(estimator).set_params(**hyperparams)
    except (TypeError, ValueError) as error:
        raise TrainingError(f"hyperparams {dict(hyperparams)} do not fit estimator {estimator}: {error}") from None
    seeds = {
        name: seed
        for name, value in model.get_params(deep=True).items()
        if (name == "random_state" or name.endswith("__random_state")) and value is None and name not in hyperparams
    }
    return model.set_params(**seeds)


def _model_type(model: Any) -> str | None:
    from sklearn.base import is_classifier, is_regressor

    return "classifier" if is_classifier(model) else "regressor" if is_regressor(model) else None


def prepare(request: TrainingRequest) -> PreparedData:
    """Load the data, check it against the request and split it; raises before any run starts."""
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline

    if not 0 < request.test_size < 1:
        raise MlopsError(f"test_size must be between 0 and 1, got {request.test_size}")
    frame = load_table(request.data_path)
    prepared = PreparedData(frame=frame)
    if request.estimator is not None:
        prepared.estimator = build_estimator(request.estimator, request.hyperparams, request.seed)
        prepared.model_type = _model_type(prepared.estimator)
    if request.target is None:
        if request.estimator is not None:
            raise TrainingDataError("an estimator needs a target column")
        return prepared
    numeric = prepared.estimator is not None and not isinstance(prepared.estimator, Pipeline)
    X, y = features_and_target(frame, request.target, request.features, numeric=numeric)
    stratify = y if prepared.model_type == "classifier" and y.value_counts().min() >= 2 else None
    prepared.X_train, prepared.X_test, prepared.y_train, prepared.y_test = train_test_split(
        X, y, test_size=request.test_size, random_state=request.seed, stratify=stratify
    )
    return prepared


def _fit(request: TrainingRequest, prepared: PreparedData) -> tuple[Any, dict[str, float]]:
    if request.train_fn is None:
        return prepared.estimator.fit(prepared.X_train, prepared.y_train), {}
    train_frame = prepared.frame if request.target is None else prepared.X_train.assign(**{request.target: prepared.y_train})
    returned = request.train_fn(train_frame, dict(request.hyperparams))
    model, metrics = returned if isinstance(returned, tuple) else (returned, {})
    if prepared.model_type is None and request.target is not None:
        prepared.model_type = _model_type(model) if _is_sklearn(model) else None
    return model, dict(metrics or {})


def _is_sklearn(model: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:
        return False
    return isinstance(model, BaseEstimator)


def _log_model(model: Any, prepared: PreparedData) -> str:
    """Log the model with the flavor it needs; returns its model URI."""
    import mlflow

    if _is_sklearn(model):
        from mlflow.models import infer_signature

        import skops.io

        example = prepared.X_train.head(5) if prepared.X_train is not None else None
        signature = infer_signature(example, model.predict(example)) if example is not None else None
        info = mlflow.sklearn.log_model(
            model, name=MODEL_NAME, signature=signature, input_example=example,
            # skops, not pickle: safe to load. We built this model, so the types it holds are trusted.
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
            pip_requirements=pinned("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops"),
        )
        return info.model_uri
    if type(model).__module__.startswith("pyspark.ml"):
        # mlflow.spark has not moved to name= yet (MLflow 3.17)
        info = mlflow.spark.log_model(model, artifact_path=MODEL_NAME, pip_requirements=pinned("mlflow", "pyspark"))
        return info.model_uri
    raise TrainingError(f"cannot log a {type(model).__name__}: return an sklearn estimator or a Spark ML model")


def _log_residuals(model: Any, prepared: PreparedData) -> None:
    """Residuals plot for regressors (MLflow's default evaluator draws none): vs prediction, and their spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    predicted = model.predict(prepared.X_test)
    residuals = prepared.y_test.to_numpy() - predicted
    figure, (scatter, histogram) = plt.subplots(1, 2, figsize=(10, 4))
    scatter.scatter(predicted, residuals, s=8, alpha=0.6)
    scatter.axhline(0, color="grey", linewidth=1)
    scatter.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="Residuals vs predicted")
    histogram.hist(residuals, bins=30)
    histogram.set(xlabel="residual", ylabel="count", title="Residual distribution")
    mlflow.log_figure(figure, "residuals.png")
    plt.close(figure)


def _evaluate(model: Any, model_uri: str, request: TrainingRequest, prepared: PreparedData) -> dict[str, float]:
    import mlflow

    if prepared.model_type is None or prepared.X_test is None:
        return {}
    if prepared.model_type == "regressor":
        _log_residuals(model, prepared)
    result = mlflow.models.evaluate(
        model=model_uri,
        data=prepared.X_test.assign(**{request.target: prepared.y_test}),
        targets=request.target,
        model_type=prepared.model_type,
        evaluators=["default"],
        evaluator_config={"default": {"log_model_explainability": False}},
    )
    return {name: float(value) for name, value in result.metrics.items()}


def _training_params(request: TrainingRequest, prepared: PreparedData) -> dict[str, Any]:
    params = {**request.hyperparams, "seed": request.seed}
    if request.target is not None:
        params.update(target=request.target, test_size=request.test_size)
    if prepared.estimator is not None:
        params["estimator"] = type(prepared.estimator).__name__
    if request.train_fn is not None:
        params["train_fn"] = f"{request.train_fn.__module__}.{request.train_fn.__qualname__}"
    return params


def provenance_tags(request: TrainingRequest) -> dict[str, str]:
    """Tags naming where a run comes from: the Airflow task instance, the snapshot, environment, code."""
    return {
        **identity_tags(request.identity),
        SNAPSHOT_TAG: request.snapshot_id,
        "airflow_mlops.snapshot_uri": request.snapshot_uri,
        **environment_tags(),
        **request.code.tags,
    }


def log_inputs(request: TrainingRequest, frame: Any) -> None:
    """On the active run: the input snapshot as an MLflow dataset, the installed packages, the code."""
    import mlflow

    dataset = mlflow.data.from_pandas(
        frame, source=str(request.data_path), targets=request.target,
        name=f"snapshot:{request.snapshot_id}", digest=request.snapshot_id[:32],
    )
    mlflow.log_input(dataset, context="training")
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging)
        (root / "environment").mkdir()
        (root / "environment" / "requirements.txt").write_text(installed_requirements())
        for name, source in request.code.sources.items():
            (root / "code" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "code" / name).write_bytes(source.read_bytes())
        mlflow.log_artifacts(staging)


def tracked_training(
    client: Any,
    experiment_id: str,
    request: TrainingRequest,
    prepared: PreparedData,
    on_run_started: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train and log one run for the task instance in ``request.identity``, honouring retries.

    An earlier attempt's FINISHED run is returned as is; RUNNING runs of dead attempts are marked
    FAILED first. A failure inside the run ends it FAILED with the message in ``airflow_mlops.error``.
    """
    import mlflow
    import numpy as np

    if request.estimator is None and request.train_fn is None:
        raise MlopsError("give an estimator or a train_fn")
    if request.identity:
        earlier = previous_attempts(client, experiment_id, request.identity)
        if earlier.finished_run is not None:
            run = earlier.finished_run
            return TrainingResult(
                run.info.run_id, experiment_id, run.data.tags.get(MODEL_URI_TAG), dict(run.data.metrics), reused=True
            )
        fail_abandoned_runs(client, earlier.abandoned_run_ids, request.identity.get("try_number"))

    random.seed(request.seed)
    np.random.seed(request.seed)
    with mlflow.start_run(experiment_id=experiment_id, run_name=request.run_name, tags=provenance_tags(request)) as run:
        run_id = run.info.run_id
        if on_run_started is not None:
            on_run_started(run_id)
        try:
            mlflow.log_params(_training_params(request, prepared))
            log_inputs(request, prepared.frame)
            model, extra_metrics = _fit(request, prepared)
            model_uri = _log_model(model, prepared)
            mlflow.set_tag(MODEL_URI_TAG, model_uri)
            metrics = _evaluate(model, model_uri, request, prepared)
            if extra_metrics:
                mlflow.log_metrics(extra_metrics)
                metrics.update({k: float(v) for k, v in extra_metrics.items()})
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            mlflow.set_tag(ERROR_TAG, message[:5000])
            if isinstance(error, MlopsError):
                raise
            raise TrainingError(f"training failed in run {run_id}: {message}") from error
    return TrainingResult(run_id, experiment_id, model_uri, metrics)
