"""Reproduce core (no Airflow import): re-create a training run, a tuning trial or an ETL snapshot from its record.

Before anything runs, the input snapshots are verified (every stored object re-hashed) and the
recorded code digests are compared with the files present; the result is compared with the record,
value by value, in a :class:`~airflow_mlops.reproduce.report.ReproductionReport`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from airflow_mlops.errors import MlopsError, SnapshotError
from airflow_mlops.reproduce.checks import CodeDriftError, OpenStore
from airflow_mlops.reproduce.report import ReproductionReport, Row
from airflow_mlops.reproduce.runs import REPORT_ARTIFACT
from airflow_mlops.snapshots import parse_snapshot_ref
from airflow_mlops.tracking.tags import PARENT_RUN_TAG, STUDY_TAG, TRIAL_NUMBER_TAG

__all__ = ["REPORT_ARTIFACT", "CodeDriftError", "ReproductionReport", "Row", "reproduce"]

_RUN_ID = re.compile(r"[0-9a-f]{32}")


def _find_run(client: Any, run_id: str) -> Any | None:
    """The MLflow run ``run_id``, or None if the server has no such run."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def reproduce(
    ref: str,
    *,
    client: Any,
    open_store: OpenStore,
    default_store: str | None = None,
    tolerance: float = 0.0,
    allow_code_drift: bool = False,
    spark_runner: Callable[[], Any] | None = None,
    identity: dict[str, Any] | None = None,
) -> ReproductionReport:
    """Re-create what ``ref`` names from its record and compare the outcome with it.

    ``ref`` is an MLflow run id (a run of MlflowTrainOperator, or a trial run of a study), or a snapshot
    derived by an ETL job: ``<store>#<id>``, or an id or unique prefix in ``default_store``. Runs are
    logged through MLflow's fluent API, which must point at ``client``'s server; ``open_store(uri)``
    opens the stores the records name; ``spark_runner()`` gives where Spark runs (snapshots only);
    ``identity`` (the Airflow task instance doing it) is recorded on what is made. Metrics match within
    ``tolerance`` (absolute). Raises :class:`~airflow_mlops.errors.MlopsError` when it refuses: damaged
    input data, changed code without ``allow_code_drift``, code that no longer imports, a bad ``ref``.
    """
    from airflow_mlops.reproduce.runs import reproduce_trial, reproduce_training_run
    from airflow_mlops.reproduce.snapshots import reproduce_snapshot

    if not tolerance >= 0:
        raise MlopsError(f"tolerance must be a number >= 0, got {tolerance}")
    ref = ref.strip()
    run = _find_run(client, ref) if _RUN_ID.fullmatch(ref) else None
    options = {"open_store": open_store, "allow_code_drift": allow_code_drift, "identity": dict(identity or {})}
    if run is not None:
        tags = run.data.tags
        if PARENT_RUN_TAG in tags and TRIAL_NUMBER_TAG in tags:
            return reproduce_trial(client, run, tolerance=tolerance, **options)
        if STUDY_TAG in tags:
            raise MlopsError(f"run {ref} is a tuning study; reproduce one of its trial runs, or the training run it fed")
        return reproduce_training_run(client, run, tolerance=tolerance, **options)
    try:
        store_uri, snapshot_id = parse_snapshot_ref(ref, default_store)
        store = open_store(store_uri)
        store.resolve(snapshot_id)
    except SnapshotError as error:
        raise MlopsError(f"{ref!r} is neither an MLflow run nor a snapshot: {error}") from None
    if spark_runner is None:
        raise MlopsError(f"snapshot {ref} is reproduced with Spark: give a spark_runner")
    return reproduce_snapshot(store, snapshot_id, spark_runner(), **options)
