"""Registering a training run's model as a version of a registered model, exactly once per run.

A retry, or a second task registering the same run, finds the version an earlier call created
(searched by name and run id, matched on the model's source or id) instead of making another one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_mlops.errors import InputError
from airflow_mlops.tracking.runs import identity_tags
from airflow_mlops.tracking.tags import MODEL_URI_TAG, SNAPSHOT_TAG, TASK_INSTANCE_URL_TAG, TRAINING_RUN_TAG
from airflow_mlops.utils.airflow_context import made_by_note


def training_reference(training: Mapping[str, Any] | str) -> tuple[str, str | None]:
    """(run id, model URI or None) from an MlflowTrainOperator result or a bare run id."""
    if isinstance(training, str):
        return training, None
    if not isinstance(training, Mapping) or not training.get("run_id"):
        raise InputError("training must be a run id or an MlflowTrainOperator result with a 'run_id'")
    return str(training["run_id"]), training.get("model_uri")


def _model_id(model_uri: str) -> str | None:
    """``m-…`` from a logged model's URI ``models:/m-…``; None for other URIs."""
    rest = model_uri.removeprefix("models:/")
    return rest if rest != model_uri and rest.startswith("m-") and "/" not in rest else None


def ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def find_version(client: Any, name: str, run_id: str, model_uri: str) -> Any | None:
    """The version of ``name`` already made from this run's model, if any (the oldest, should there be two)."""
    model_id = _model_id(model_uri)
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    matching = [v for v in versions if v.source == model_uri or (model_id and getattr(v, "model_id", None) == model_id)]
    return min(matching, key=lambda v: int(v.version)) if matching else None


def register(
    client: Any,
    name: str,
    training: Mapping[str, Any] | str,
    *,
    identity: Mapping[str, Any] | None = None,
    description: str | None = None,
    task_instance_url: str | None = None,
) -> tuple[Any, bool]:
    """(model version, created) for the training run's model under ``name``; created only if none exists.

    Tags link the version to the training run, its input snapshot and the Airflow task instance
    (``identity``) that registered it; the default description links that task instance's page.
    """
    run_id, model_uri = training_reference(training)
    run = client.get_run(run_id)
    model_uri = model_uri or run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise InputError(f"run {run_id} logged no model (no {MODEL_URI_TAG} tag); register the run of a training task")
    ensure_registered_model(client, name)
    existing = find_version(client, name, run_id, model_uri)
    if existing is not None:
        return existing, False
    snapshot_id = run.data.tags.get(SNAPSHOT_TAG)
    tags = {TRAINING_RUN_TAG: run_id, **identity_tags(identity or {})}
    if snapshot_id:
        tags[SNAPSHOT_TAG] = snapshot_id
    if task_instance_url:
        tags[TASK_INSTANCE_URL_TAG] = task_instance_url
    made_by = made_by_note(dict(identity or {}), task_instance_url)
    text = description or (f"Model of MLflow run {run_id}" + (f", trained on snapshot {snapshot_id}." if snapshot_id else ".")
                           + (f" {made_by}" if made_by else ""))
    version = client.create_model_version(
        name, source=model_uri, run_id=run_id, tags=tags, description=text, model_id=_model_id(model_uri)
    )
    return version, True
