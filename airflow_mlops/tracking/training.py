"""Tracked training: fit a model on a data snapshot and record everything needed to trace and re-run it.

``prepare`` (in :mod:`~airflow_mlops.tracking.data`) loads, checks and splits the data before any
MLflow run exists (bad input loses nothing); ``tracked_training`` applies the retry rules (one
finished run per task instance and inputs), then trains and logs params, the input snapshot as an
MLflow dataset, the model, metrics on the held-out split, the code version and the environment.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_mlops.errors import InputError, MlopsError
from airflow_mlops.tracking.data import PreparedData
from airflow_mlops.tracking.environment import environment_tags, installed_requirements
from airflow_mlops.tracking.estimators import TrainingError, is_sklearn, model_type
from airflow_mlops.tracking.evaluation import evaluate
from airflow_mlops.tracking.model_logging import log_model
from airflow_mlops.tracking.quiet import integer_schema_hint_hidden, skops_io
from airflow_mlops.tracking.request import TrainingRequest, qualified_name
from airflow_mlops.tracking.runs import fail_abandoned_runs, failure_recorded, identity_tags, previous_attempts, supersede
from airflow_mlops.tracking.tags import (
    FINGERPRINT_TAG,
    MODEL_URI_TAG,
    RUN_NOTE_TAG,
    SNAPSHOT_TAG,
    SNAPSHOT_URI_TAG,
    TASK_INSTANCE_URL_TAG,
)
from airflow_mlops.utils.airflow_context import made_by_note

#: What a run's fingerprint digests, as JSON: enough to re-create the run (``airflow-mlops reproduce``).
DEFINITION_ARTIFACT = "definition/request.json"
#: The estimator instance a run was given (not a class path), unfitted, in skops format.
ESTIMATOR_ARTIFACT = "definition/estimator.skops"


@dataclass
class TrainingResult:
    run_id: str
    experiment_id: str
    model_uri: str | None
    metrics: dict[str, float]
    reused: bool = False

    def to_xcom(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "model_uri": self.model_uri, "metrics": self.metrics}


def _fit(request: TrainingRequest, prepared: PreparedData) -> tuple[Any, dict[str, float]]:
    if request.train_fn is None:
        return prepared.estimator.fit(prepared.X_train, prepared.y_train), {}
    train_frame = prepared.frame if request.target is None else prepared.X_train.assign(**{request.target: prepared.y_train})
    returned = request.train_fn(train_frame, dict(request.hyperparams))
    model, metrics = returned if isinstance(returned, tuple) else (returned, {})
    if prepared.model_type is None and request.target is not None:
        prepared.model_type = model_type(model) if is_sklearn(model) else None
    return model, dict(metrics or {})


def _training_params(request: TrainingRequest, prepared: PreparedData) -> dict[str, Any]:
    params = {**request.hyperparams, "seed": request.seed}
    if request.target is not None:
        # what rebuilding the held-out split needs (the registry's gate scores models on it)
        stratified = prepared.model_type == "classifier" and bool(prepared.frame[request.target].value_counts().min() >= 2)
        params.update(target=request.target, test_size=request.test_size, split_stratified=stratified)
        if request.features:
            params["features"] = json.dumps(list(request.features))
    if prepared.estimator is not None:
        params["estimator"] = type(prepared.estimator).__name__
    if request.train_fn is not None:
        params["train_fn"] = qualified_name(request.train_fn)
    return params


def provenance_tags(request: TrainingRequest) -> dict[str, str]:
    """Tags naming where a run comes from: the Airflow task instance, the snapshot, environment, code."""
    note = made_by_note(request.identity, request.task_instance_url)
    return {
        **identity_tags(request.identity),
        **({TASK_INSTANCE_URL_TAG: request.task_instance_url, RUN_NOTE_TAG: note} if note else {}),
        SNAPSHOT_TAG: request.snapshot_id,
        SNAPSHOT_URI_TAG: request.snapshot_uri,
        **environment_tags(),
        **request.code.tags,
    }


#: How each database MLflow's server runs on words a duplicate key.
_DUPLICATE_KEY = ("duplicate key value", "UNIQUE constraint failed", "Duplicate entry")


def log_input_once_raced(dataset: Any) -> None:
    """``mlflow.log_input`` on the active run, once more if it lost a race to create the same dataset.

    MLflow's store gets or creates a dataset row without a lock, so two runs logging one snapshot at
    the same moment (the tasks of a shared study) can collide on its key; the second call finds the row.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.log_input(dataset, context="training")
    except MlflowException as error:
        if not any(words in str(error) for words in _DUPLICATE_KEY):
            raise
        mlflow.log_input(dataset, context="training")


def log_inputs(request: TrainingRequest, frame: Any, definition: dict[str, Any]) -> None:
    """On the active run: the input snapshot as an MLflow dataset, the installed packages, the code, and
    ``definition`` (what the run's fingerprint digests) with the estimator if it is an instance, to re-create the run."""
    import mlflow
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    # The restored snapshot is a local folder: named as a "local" source, not left for MLflow to guess
    # between its two local source types (which warns on every run).
    source = get_dataset_source_from_json(json.dumps({"uri": str(request.data_path)}), source_type="local")
    with integer_schema_hint_hidden():
        dataset = mlflow.data.from_pandas(
            frame, source=source, targets=request.target,
            name=f"snapshot:{request.snapshot_id}", digest=request.snapshot_id[:32],
        )
        log_input_once_raced(dataset)  # where the dataset's schema is inferred
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging)
        (root / "environment").mkdir()
        (root / "environment" / "requirements.txt").write_text(installed_requirements())
        for name, source in request.code.sources.items():
            (root / "code" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "code" / name).write_bytes(source.read_bytes())
        (root / DEFINITION_ARTIFACT).parent.mkdir()
        (root / DEFINITION_ARTIFACT).write_text(json.dumps(definition, sort_keys=True, indent=2, default=str))
        if request.estimator is not None and not isinstance(request.estimator, str):
            skops_io().dump(request.estimator, root / ESTIMATOR_ARTIFACT)
        mlflow.log_artifacts(staging)


def tracked_training(
    client: Any,
    experiment_id: str,
    request: TrainingRequest,
    prepared: PreparedData,
    on_run_started: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train and log one run for the task instance in ``request.identity``, honouring retries.

    An earlier attempt's FINISHED run made from the same inputs (fingerprint) is returned as is; one
    made from other inputs (the task was cleared after new data arrived) is tagged superseded by the
    new run. RUNNING runs of dead attempts are marked FAILED first. A failure inside the run ends it
    FAILED with the message in ``airflow_mlops.error``.
    """
    import mlflow
    import numpy as np

    if request.estimator is None and request.train_fn is None:
        raise InputError("give an estimator or a train_fn")
    current = request.fingerprint()
    outdated: list[str] = []
    if request.identity:
        earlier = previous_attempts(client, experiment_id, request.identity, current)
        if (run := earlier.reusable_run) is not None:
            return TrainingResult(
                run.info.run_id, experiment_id, run.data.tags.get(MODEL_URI_TAG), dict(run.data.metrics), reused=True
            )
        fail_abandoned_runs(client, earlier.abandoned_run_ids, request.identity.get("try_number"))
        outdated = earlier.outdated_run_ids

    random.seed(request.seed)
    np.random.seed(request.seed)
    tags = {**provenance_tags(request), FINGERPRINT_TAG: current}
    with mlflow.start_run(experiment_id=experiment_id, run_name=request.run_name, tags=tags) as run:
        run_id = run.info.run_id
        if on_run_started is not None:
            on_run_started(run_id)
        supersede(client, outdated, run_id)
        try:
            with failure_recorded():
                mlflow.log_params(_training_params(request, prepared))
                log_inputs(request, prepared.frame, request.run_definition())
                model, extra_metrics = _fit(request, prepared)
                model_uri = log_model(model, prepared)
                mlflow.set_tag(MODEL_URI_TAG, model_uri)
                metrics = evaluate(model, model_uri, request.target, prepared) if request.target else {}
                if extra_metrics:
                    mlflow.log_metrics(extra_metrics)
                    metrics.update({k: float(v) for k, v in extra_metrics.items()})
        except MlopsError:
            raise
        except Exception as error:
            raise TrainingError(f"training failed in run {run_id}: {type(error).__name__}: {error}") from error
    return TrainingResult(run_id, experiment_id, model_uri, metrics)
