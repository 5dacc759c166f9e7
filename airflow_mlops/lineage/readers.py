"""Reading lineage nodes from their records: snapshot records in the store, MLflow runs, model versions
with their gate verdict, aliases and promotion history; and the lookups a walk's downstream steps make.

Each record is read at most once per reader (cached), so a walk that meets a node again costs nothing.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from airflow_mlops.errors import SnapshotError
from airflow_mlops.lineage.datasets import model_dataset, snapshot_dataset
from airflow_mlops.lineage.model import MODEL_VERSION, RUN, SNAPSHOT, Node
from airflow_mlops.registry.history import history
from airflow_mlops.snapshots import SnapshotStore
from airflow_mlops.tracking.paging import all_pages
from airflow_mlops.tracking.tags import (
    AIRFLOW_TAG_PREFIX,
    CHALLENGER_SCORE_TAG,
    CHAMPION_SCORE_TAG,
    CHAMPION_VERSION_TAG,
    DECISION_TAG,
    ERROR_TAG,
    MODEL_URI_TAG,
    PARENT_RUN_TAG,
    REASON_TAG,
    RULE_TAG,
    SNAPSHOT_TAG,
    SNAPSHOT_URI_TAG,
    STUDY_TAG,
    SUPERSEDED_TAG,
    TRIAL_NUMBER_TAG,
)



class NodeReader:
    """Reads the snapshots of one store and the runs and model versions of one MLflow server as nodes.

    ``registry_uri`` names the registry in model datasets (default: the client's tracking URI).
    """

    def __init__(self, store: SnapshotStore, client: Any, registry_uri: str | None = None) -> None:
        self.store = store
        self.client = client
        self.registry_uri = registry_uri or client.tracking_uri
        self._nodes: dict[str, Node] = {}
        self._runs: dict[str, Any] = {}
        self._versions: dict[tuple[str, str], Any] = {}
        self._models: dict[str, tuple[dict[str, str], list[dict[str, Any]]]] = {}
        self._experiment_ids: list[str] | None = None

    def node(self, node_id: str) -> Node:
        """The node ``node_id`` (``snapshot:ID``, ``run:ID``, ``model_version:NAME/N``), read once per reader."""
        if node_id not in self._nodes:
            kind, _, key = node_id.partition(":")
            load = {SNAPSHOT: self._snapshot_node, RUN: self._run_node, MODEL_VERSION: self._version_node}[kind]
            self._nodes[node_id] = load(node_id, key)
        return self._nodes[node_id]

    def _snapshot_node(self, node_id: str, snapshot_id: str) -> Node:
        try:
            records = self.store.records(snapshot_id)
        except SnapshotError:
            records = []
        if not records:
            return Node(node_id, SNAPSHOT, {"snapshot_id": snapshot_id, "missing": True, "time": None})
        newest = records[0]
        parents = list(dict.fromkeys(parent for record in records for parent in record.parents))
        model = newest.extra.get("model")
        return Node(node_id, SNAPSHOT, {
            "snapshot_id": snapshot_id,
            "role": "predictions" if model else "derived" if parents else "raw",
            "source": newest.source,
            "uri": newest.uri,
            "files": newest.files,
            "bytes": newest.bytes,
            "time": newest.created,
            "airflow": newest.airflow,
            "parents": parents,
            "model": model,
            "dataset": snapshot_dataset(newest).to_dict(),
            "earlier_records": [{"time": r.created, "source": r.source, "airflow": r.airflow} for r in records[1:]],
        })

    def run(self, run_id: str) -> Any | None:
        """The MLflow run (cached), or None when there is none."""
        if run_id not in self._runs:
            from mlflow.exceptions import MlflowException

            try:
                self._runs[run_id] = self.client.get_run(run_id)
            except MlflowException as error:
                if not _not_found(error):
                    raise
                self._runs[run_id] = None
        return self._runs[run_id]

    def _run_node(self, node_id: str, run_id: str) -> Node:
        run = self.run(run_id)
        if run is None:
            return Node(node_id, RUN, {"run_id": run_id, "missing": True, "time": None})
        tags, metrics = run.data.tags, run.data.metrics
        kind = "trial" if PARENT_RUN_TAG in tags else "tuning" if STUDY_TAG in tags else "training"
        study = None
        if kind == "tuning":
            study = {"name": tags[STUDY_TAG], "n_complete_trials": metrics.get("n_complete_trials"),
                     "best": {name[len("best_"):]: value for name, value in metrics.items() if name.startswith("best_")}}
        elif kind == "trial":
            study = {"name": tags[STUDY_TAG], "trial_number": tags.get(TRIAL_NUMBER_TAG)}
        return Node(node_id, RUN, {
            "run_id": run_id,
            "type": kind,
            "name": run.info.run_name,
            "experiment_id": run.info.experiment_id,
            "status": run.info.status,
            "time": _iso(run.info.start_time),
            "end_time": _iso(run.info.end_time),
            "airflow": _airflow_from_tags(tags),
            "snapshot_id": tags.get(SNAPSHOT_TAG),
            "snapshot_uri": tags.get(SNAPSHOT_URI_TAG),
            "parent_run_id": tags.get(PARENT_RUN_TAG),
            "model_uri": tags.get(MODEL_URI_TAG),
            "study": study,
            "superseded_by": tags.get(SUPERSEDED_TAG),
            "error": tags.get(ERROR_TAG),
        })

    def runs_reading(self, snapshot_id: str) -> list[Any]:
        """Runs tagged with ``snapshot_id`` as their input, in every experiment: one search (per page)."""
        if self._experiment_ids is None:
            self._experiment_ids = [e.experiment_id for e in all_pages(self.client.search_experiments)]
        if not self._experiment_ids:
            return []
        runs = all_pages(self.client.search_runs, self._experiment_ids,
                           filter_string=f"tags.`{SNAPSHOT_TAG}` = '{snapshot_id}'")
        for run in runs:
            self._runs[run.info.run_id] = run
        return runs

    def versions_of(self, run_id: str) -> list[Any]:
        """Model versions registered from ``run_id``'s model, in every registered model: one search."""
        versions = all_pages(self.client.search_model_versions, f"run_id = '{run_id}'")
        for version in versions:
            self._versions[(version.name, str(version.version))] = version
        return versions

    def _version_node(self, node_id: str, key: str) -> Node:
        name, _, number = key.rpartition("/")
        version = self._versions.get((name, number))
        if version is None:
            from mlflow.exceptions import MlflowException

            try:
                version = self.client.get_model_version(name, number)
            except MlflowException as error:
                if not _not_found(error):
                    raise
                return Node(node_id, MODEL_VERSION, {"name": name, "version": number, "missing": True, "time": None})
        aliases, entries = self._registered_model(name)
        tags = version.tags
        gate = None
        if DECISION_TAG in tags:
            rule = tags.get(RULE_TAG)
            gate = {"decision": tags[DECISION_TAG], "reason": tags.get(REASON_TAG),
                    "metric": _json(rule).get("metric") if rule else None,
                    "challenger_score": _float(tags.get(CHALLENGER_SCORE_TAG)),
                    "champion_score": _float(tags.get(CHAMPION_SCORE_TAG)),
                    "champion_version": tags.get(CHAMPION_VERSION_TAG) or None}
        return Node(node_id, MODEL_VERSION, {
            "name": name,
            "version": number,
            "run_id": version.run_id,
            "snapshot_id": tags.get(SNAPSHOT_TAG),
            "source": version.source,
            "status": version.status,
            "time": _iso(version.creation_timestamp),
            "aliases": sorted(alias for alias, target in aliases.items() if str(target) == number),
            "airflow": _airflow_from_tags(tags),
            "gate": gate,
            "history": [entry for entry in entries if number in (entry.get("from_version"), entry.get("to_version"))],
            "dataset": model_dataset(self.registry_uri, name, number).to_dict(),
        })

    def _registered_model(self, name: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """(alias -> version, promotion history) of a registered model, read once per walker."""
        if name not in self._models:
            self._models[name] = (dict(self.client.get_registered_model(name).aliases), history(self.client, name))
        return self._models[name]


def _iso(millis: int | None) -> str | None:
    return datetime.fromtimestamp(millis / 1000, timezone.utc).isoformat(timespec="seconds") if millis else None


def _airflow_from_tags(tags: dict[str, str]) -> dict[str, Any]:
    """The task instance an MLflow entity names in its ``airflow.*`` tags, numbers as numbers."""
    fields: dict[str, Any] = {key[len(AIRFLOW_TAG_PREFIX):]: value
                              for key, value in tags.items() if key.startswith(AIRFLOW_TAG_PREFIX)}
    for key in ("map_index", "try_number"):
        if str(fields.get(key, "")).lstrip("-").isdigit():
            fields[key] = int(fields[key])
    return fields


def _not_found(error: Exception) -> bool:
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
