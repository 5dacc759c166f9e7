"""One task instance, one finished MLflow run: identity tags and what a retry does with earlier runs.

A task instance is (dag_id, run_id, task_id, map_index); each try of it is one attempt. Runs are
tagged with the identity, so a retry finds the runs of earlier attempts by searching tags: that also
finds a run whose attempt died right after creating it, before it could record the run id anywhere.
Runs are also tagged with a fingerprint of their inputs, so only a run made from the same inputs is
reused; one made from other inputs is tagged as superseded by the new run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.tracking.paging import all_pages
from airflow_mlops.tracking.tags import AIRFLOW_TAG_PREFIX, ERROR_TAG, FINGERPRINT_TAG, PARENT_RUN_TAG, SUPERSEDED_TAG

_INSTANCE_KEYS = ("dag_id", "run_id", "task_id", "map_index")


def identity_tags(identity: Mapping[str, Any]) -> dict[str, str]:
    """``airflow.dag_id``, ``airflow.run_id``, ... for every identity field that has a value."""
    return {f"{AIRFLOW_TAG_PREFIX}{key}": str(value) for key, value in identity.items() if value is not None}


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def airflow_tags_filter(identity: Mapping[str, Any], keys: Iterable[str]) -> str:
    """MLflow search filter matching runs whose ``airflow.<key>`` tags equal ``identity``'s values."""
    return " and ".join(f"tags.`{AIRFLOW_TAG_PREFIX}{key}` = {_quote(str(identity[key]))}" for key in keys)


def task_instance_filter(identity: Mapping[str, Any]) -> str:
    """MLflow search filter matching every attempt's run of this task instance."""
    return airflow_tags_filter(identity, _INSTANCE_KEYS)


def fingerprint(definition: Mapping[str, Any]) -> str:
    """A digest of what determines a run's result (snapshot id, estimator, params, split, code digests)."""
    return digest_bytes(json.dumps(definition, sort_keys=True, default=str).encode())[:32]


@dataclass
class EarlierAttempts:
    """The top-level runs earlier attempts of a task instance left behind, newest first.

    Only runs with the current ``fingerprint`` may be reused or resumed: a task cleared after its
    upstream made new data (or after the DAG changed the training) must train again, not return the
    old model.
    """

    runs: list[Any]
    fingerprint: str

    def _current(self, run: Any) -> bool:
        return run.data.tags.get(FINGERPRINT_TAG) == self.fingerprint and SUPERSEDED_TAG not in run.data.tags

    @property
    def reusable_run(self) -> Any | None:
        """The newest FINISHED run made from the same inputs: a retry returns it without training."""
        return next((r for r in self.runs if r.info.status == "FINISHED" and self._current(r)), None)

    @property
    def resumable_run(self) -> Any | None:
        """The newest unfinished run made from the same inputs (a study to continue)."""
        return next((r for r in self.runs if r.info.status != "FINISHED" and self._current(r)), None)

    @property
    def outdated_run_ids(self) -> list[str]:
        """FINISHED runs made from other inputs, not yet marked superseded."""
        return [r.info.run_id for r in self.runs if r.info.status == "FINISHED"
                and SUPERSEDED_TAG not in r.data.tags and not self._current(r)]

    @property
    def abandoned_run_ids(self) -> list[str]:
        """Runs still RUNNING although their attempt is over."""
        return [r.info.run_id for r in self.runs if r.info.status in ("RUNNING", "SCHEDULED")]


def previous_attempts(client: Any, experiment_id: str, identity: Mapping[str, Any], current: str) -> EarlierAttempts:
    """The top-level runs earlier attempts of this task instance left in ``experiment_id``."""
    runs = all_pages(  # every page: a study's trial runs carry the same tags and can be thousands
        client.search_runs, [experiment_id], filter_string=task_instance_filter(identity),
        order_by=["attributes.start_time DESC"],
    )
    runs = [run for run in runs if PARENT_RUN_TAG not in run.data.tags]
    return EarlierAttempts(runs, current)


def supersede(client: Any, run_ids: list[str], new_run_id: str) -> None:
    """Say on each earlier run of the task instance that ``new_run_id``, made from other inputs, replaces it."""
    for run_id in run_ids:
        client.set_tag(run_id, SUPERSEDED_TAG, new_run_id)


def fail_abandoned_runs(client: Any, run_ids: list[str], try_number: Any) -> None:
    """Mark runs of crashed attempts FAILED, saying why, so none stays RUNNING forever."""
    for run_id in run_ids:
        client.set_tag(run_id, ERROR_TAG, f"abandoned: its task attempt died; superseded by try {try_number}")
        client.set_terminated(run_id, status="FAILED")


@contextmanager
def failure_recorded() -> Iterator[None]:
    """Inside an active MLflow run: an exception is tagged ``airflow_mlops.error`` on it, then propagates.

    Leaving ``mlflow.start_run``'s block on that exception ends the run FAILED, so no run stays RUNNING.
    """
    import mlflow

    try:
        yield
    except Exception as error:
        mlflow.set_tag(ERROR_TAG, f"{type(error).__name__}: {error}"[:5000])
        raise


def get_or_create_experiment(client: Any, name: str, artifact_root: str | None) -> str:
    """The experiment's id, creating it (with artifacts under ``artifact_root`` if given) if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another task created it concurrently
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
